"""A chat-completions judge over HTTP (GPT-4o-mini, the paper's primary judge; Gemini 2.0 Flash, its
secondary, through Google's OpenAI-compatible URL; any OpenAI-compatible endpoint).

The API key comes from an environment variable only, is checked when the judge is made (before any
work) and is redacted from everything written or raised (:mod:`dualloop.redaction`). Requests go
through :class:`dualloop.chat_client.ChatEndpoint` (retried with jittered exponential backoff);
verdicts are cached (:class:`~dualloop.judges.cache.VerdictCache`); :meth:`OpenAICompatibleJudge.estimate`
foresees the calls a judging will make and their cost (:mod:`dualloop.judges.cost`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from dualloop.chat_client import ChatEndpoint, EndpointError, MissingAPIKeyError, check_api_key, retry_wait
from dualloop.judges.cache import VerdictCache
from dualloop.judges.cost import LIST_PRICE_SOURCE, LIST_PRICES, CostEstimate, estimate_tokens
from dualloop.judges.decisions import JUDGE_PROMPT_VERSION, PairItem, ShownPair, Verdict
from dualloop.judges.endpoints import API_JUDGES, GEMINI_OPENAI_BASE_URL, OPENAI_BASE_URL, EndpointJudge
from dualloop.judges.pairwise import PairwiseJudge, judge_messages, parse_verdict
from dualloop.redaction import redact

__all__ = [
    "GEMINI_OPENAI_BASE_URL",
    "OPENAI_BASE_URL",
    "JudgeAPIError",
    "MissingAPIKeyError",
    "OpenAICompatibleJudge",
    "check_api_key",
    "retry_wait",
]


class JudgeAPIError(EndpointError):
    """A judge endpoint failed for good (a non-retryable status, or retries exhausted)."""


class OpenAICompatibleJudge(PairwiseJudge):
    """A chat-completions judge (POST {base_url}/chat/completions), answering "A" or "B".

    cache_path is an append-only JSONL file keyed by a hash of (model, base_url, criterion, prompt, the
    two responses in the order shown, JUDGE_PROMPT_VERSION), locked while a judging writes it: a rerun
    or a second process makes no call for a cached pair, and a killed run keeps every verdict it
    finished. At most max_concurrency requests are in flight. A 408, 409, 425, 429, 5xx, timeout,
    connection error or reset, or malformed body is retried up to max_retries times (:func:`retry_wait`).
    A reply that is not a verdict is asked again parse_retries times, then recorded as "unparseable"
    in the decisions but not cached, so a rerun asks again; ``unparseable`` counts them in the last judging.
    ``api_key_env`` None sends no key (a self-hosted server without auth). The prices (USD per million
    input / output tokens) default to the model's list price (:data:`~dualloop.judges.cost.LIST_PRICES`),
    else 0.
    """

    can_tie = False
    sleep = staticmethod(time.sleep)  # the wait between attempts (a test may record it instead)

    def __init__(
        self,
        criterion: str = "general",
        *,
        model: str = "gpt-4o-mini",
        base_url: str = OPENAI_BASE_URL,
        api_key_env: str | None = "OPENAI_API_KEY",
        cache_path: str | Path | None = None,
        max_concurrency: int = 8,
        max_retries: int = 5,
        parse_retries: int = 1,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        timeout: float = 60.0,
        deadline: float = 300.0,
        temperature: float = 0.0,
        max_tokens: int = 5,
        seed: int = 0,
        both_orders: bool = False,
        name: str | None = None,
        usd_per_mtok_in: float | None = None,
        usd_per_mtok_out: float | None = None,
    ):
        super().__init__(criterion, seed=seed, both_orders=both_orders)
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency={max_concurrency} must be at least 1")
        if max_retries < 0 or parse_retries < 0:
            raise ValueError(f"max_retries={max_retries} and parse_retries={parse_retries} must not be negative")
        self.endpoint = ChatEndpoint(
            base_url,
            api_key_env,
            what=model,
            max_retries=max_retries,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            timeout=timeout,
            deadline=deadline,
        )
        self.model = model
        self.base_url = self.endpoint.base_url
        self.api_key_env = api_key_env
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.max_concurrency = max_concurrency
        self.parse_retries = parse_retries
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.name = name or model
        listed = usd_per_mtok_in is None and usd_per_mtok_out is None and model in LIST_PRICES
        self.prices = LIST_PRICES[model] if listed else (usd_per_mtok_in or 0.0, usd_per_mtok_out or 0.0)
        self.price_source = LIST_PRICE_SOURCE if listed else "the endpoint's usd_per_mtok_in / usd_per_mtok_out"
        self.unparseable = 0
        self._cache = VerdictCache(self.cache_path)

    @classmethod
    def gemini_flash(cls, criterion: str = "general", **kwargs: Any) -> OpenAICompatibleJudge:
        """Gemini 2.0 Flash (DualLoop-DPO's secondary judge) through Google's OpenAI-compatible endpoint."""
        kwargs.setdefault("model", "gemini-2.0-flash")
        kwargs.setdefault("base_url", GEMINI_OPENAI_BASE_URL)
        kwargs.setdefault("api_key_env", "GEMINI_API_KEY")
        return cls(criterion, **kwargs)

    @classmethod
    def from_endpoint(cls, judge: EndpointJudge, criterion: str = "general", **kwargs: Any) -> OpenAICompatibleJudge:
        """The judge an ``evaluation.judges`` entry describes (:mod:`dualloop.judges.endpoints`), named as it says."""
        if judge not in API_JUDGES.values():  # a preset's prices are its list prices
            kwargs.update(usd_per_mtok_in=judge.usd_per_mtok_in, usd_per_mtok_out=judge.usd_per_mtok_out)
        return cls(
            criterion,
            model=judge.model,
            base_url=judge.base_url,
            api_key_env=judge.api_key_env,
            name=judge.name,
            **{"deadline": judge.deadline_s, **kwargs},
        )

    def __repr__(self) -> str:
        return (
            f"OpenAICompatibleJudge(criterion={self.criterion!r}, model={self.model!r}, "
            f"base_url={self.base_url!r}, api_key_env={self.api_key_env!r}, cache_path={self.cache_path!r})"
        )

    def cache_key(self, shown: ShownPair) -> str:
        """The cache key of a pair as shown."""
        fields = [
            self.model,
            self.base_url,
            self.criterion,
            shown.item.prompt,
            shown.first,
            shown.second,
            JUDGE_PROMPT_VERSION,
        ]
        return hashlib.sha256(json.dumps(fields).encode()).hexdigest()

    def estimate(self, items: Sequence[PairItem]) -> CostEstimate:
        """The calls judging ``items`` will make (pairs not in the verdict cache) and their estimated
        tokens and cost (:mod:`dualloop.judges.cost`); nothing is called."""
        self._cache.reload()
        todo = [shown for shown in self.shown_pairs(items) if self.cache_key(shown) not in self._cache]
        input_tokens = sum(estimate_tokens(self._messages(shown)) for shown in todo)
        return CostEstimate(
            self.name, len(todo), input_tokens, len(todo) * self.max_tokens, *self.prices, self.price_source
        )

    def judge_shown(self, pairs: Sequence[ShownPair]) -> list[Verdict]:
        keys = [self.cache_key(s) for s in pairs]
        unparseable: dict[str, str | None] = {}
        with self._cache.writing():
            todo = {key: shown for key, shown in zip(keys, pairs) if key not in self._cache}
            if todo:
                with self.endpoint.client() as client, ThreadPoolExecutor(self.max_concurrency) as pool:
                    futures = [
                        pool.submit(self._judge_one, client, key, shown, unparseable) for key, shown in todo.items()
                    ]
                    wait(futures)
                for future in futures:
                    future.result()  # raise the first failure, after every other pair finished and was cached
        self.unparseable = sum(key in unparseable for key in keys)
        if self.unparseable:
            print(
                f"dualloop.judges: {self.name}: {self.unparseable} of {len(keys)} verdicts unparseable (not cached: "
                "asked again on a rerun)",
                flush=True,
            )
        return [
            Verdict("unparseable", raw=redact(unparseable[k] or "") or None)
            if k in unparseable
            else Verdict(self._cache[k]["verdict"], raw=self._cache[k]["raw"])
            for k in keys
        ]

    def _messages(self, shown: ShownPair) -> list[dict[str, str]]:
        return judge_messages(shown.item.prompt, shown.first, shown.second, self.criterion)

    def _judge_one(self, client: Any, key: str, shown: ShownPair, unparseable: dict[str, str | None]) -> None:
        body = {
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "messages": self._messages(shown),
        }
        reply = None
        for _ in range(self.parse_retries + 1):
            try:
                reply = self.endpoint.complete(client, body, self.sleep)
            except EndpointError as error:
                raise JudgeAPIError(str(error)) from None
            verdict = parse_verdict(reply)
            if verdict is not None:
                self._cache.store(
                    {
                        "key": key,
                        "verdict": verdict,
                        "raw": reply,
                        "model": self.model,
                        "base_url": self.base_url,
                        "criterion": self.criterion,
                        "judge_prompt_version": JUDGE_PROMPT_VERSION,
                    }
                )
                return
        unparseable[key] = reply
