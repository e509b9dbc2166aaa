"""A chat-completions judge over HTTP (GPT-4o-mini, the paper's primary judge; Gemini 2.0 Flash, its
secondary, through Google's OpenAI-compatible URL; any OpenAI-compatible endpoint).

The API key comes from an environment variable only, is checked when the judge is made (before any
work) and is redacted from everything written or raised (:mod:`dualloop.redaction`). Requests are
retried with jittered exponential backoff; verdicts are cached (:class:`~dualloop.judges.cache.VerdictCache`).
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import os
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from dualloop.judges.cache import VerdictCache
from dualloop.judges.decisions import JUDGE_PROMPT_VERSION, ShownPair, Verdict
from dualloop.judges.pairwise import PairwiseJudge, judge_messages, parse_verdict
from dualloop.redaction import redact, register_secret_env

__all__ = [
    "GEMINI_OPENAI_BASE_URL",
    "OPENAI_BASE_URL",
    "JudgeAPIError",
    "MissingAPIKeyError",
    "OpenAICompatibleJudge",
    "check_api_key",
    "retry_wait",
]

GEMINI_OPENAI_BASE_URL = "https://generativelanguage.googleapis.com/v1beta/openai"
OPENAI_BASE_URL = "https://api.openai.com/v1"
RETRIED_STATUS = frozenset({408, 409, 425, 429})  # and every 5xx


class MissingAPIKeyError(RuntimeError):
    """The environment variable that should hold a judge's API key is unset or empty."""


class JudgeAPIError(RuntimeError):
    """A judge endpoint failed for good (a non-retryable status, or retries exhausted)."""


def check_api_key(api_key_env: str, model: str, base_url: str) -> str:
    """The key in environment variable ``api_key_env`` (registered as a secret); MissingAPIKeyError without one."""
    register_secret_env(api_key_env)
    key = os.environ.get(api_key_env, "").strip()
    if not key:
        raise MissingAPIKeyError(
            f"environment variable {api_key_env} is not set: export it with the API key for "
            f"{model} at {base_url} before judging (keys are read only from the environment)"
        )
    return key


def retry_wait(attempt: int, base: float, cap: float, retry_after: str | None = None) -> float:
    """Seconds before retry ``attempt`` (0-based): the server's Retry-After (seconds or an HTTP date) when
    given, else ``base * 2**attempt`` with full jitter in its upper half; both capped at ``cap``."""
    if retry_after:
        try:
            seconds = float(retry_after)
        except ValueError:
            try:
                seconds = email.utils.parsedate_to_datetime(retry_after).timestamp() - time.time()
            except (TypeError, ValueError):
                seconds = None
        if seconds is not None:
            return min(cap, max(0.0, seconds))
    return min(cap, base * 2**attempt) * random.uniform(0.5, 1.0)


class _Secret:
    """Holds a key so that no repr, log or traceback of an object shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


class OpenAICompatibleJudge(PairwiseJudge):
    """A chat-completions judge (POST {base_url}/chat/completions), answering "A" or "B".

    cache_path is an append-only JSONL file keyed by a hash of (model, base_url, criterion, prompt, the
    two responses in the order shown, JUDGE_PROMPT_VERSION), locked while a judging writes it: a rerun
    or a second process makes no call for a cached pair, and a killed run keeps every verdict it
    finished. At most max_concurrency requests are in flight. A 408, 409, 425, 429, 5xx, timeout,
    connection error or reset, or malformed body is retried up to max_retries times (:func:`retry_wait`).
    A reply that is not a verdict is asked again parse_retries times, then recorded as "unparseable"
    in the decisions but not cached, so a rerun asks again; ``unparseable`` counts them in the last judging.
    """

    can_tie = False
    sleep = staticmethod(time.sleep)  # the wait between attempts (a test may record it instead)

    def __init__(
        self,
        criterion: str = "general",
        *,
        model: str = "gpt-4o-mini",
        base_url: str = OPENAI_BASE_URL,
        api_key_env: str = "OPENAI_API_KEY",
        cache_path: str | Path | None = None,
        max_concurrency: int = 8,
        max_retries: int = 5,
        parse_retries: int = 1,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        timeout: float = 60.0,
        temperature: float = 0.0,
        max_tokens: int = 5,
        seed: int = 0,
        both_orders: bool = False,
        name: str | None = None,
    ):
        super().__init__(criterion, seed=seed, both_orders=both_orders)
        key = check_api_key(api_key_env, model, base_url)
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency={max_concurrency} must be at least 1")
        if max_retries < 0 or parse_retries < 0:
            raise ValueError(f"max_retries={max_retries} and parse_retries={parse_retries} must not be negative")
        self._api_key = _Secret(key)
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.parse_retries = parse_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.timeout = timeout
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.name = name or model
        self.unparseable = 0
        self._cache = VerdictCache(self.cache_path)

    @classmethod
    def gemini_flash(cls, criterion: str = "general", **kwargs: Any) -> OpenAICompatibleJudge:
        """Gemini 2.0 Flash (DualLoop-DPO's secondary judge) through Google's OpenAI-compatible endpoint."""
        kwargs.setdefault("model", "gemini-2.0-flash")
        kwargs.setdefault("base_url", GEMINI_OPENAI_BASE_URL)
        kwargs.setdefault("api_key_env", "GEMINI_API_KEY")
        return cls(criterion, **kwargs)

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

    def judge_shown(self, pairs: Sequence[ShownPair]) -> list[Verdict]:
        import httpx

        keys = [self.cache_key(s) for s in pairs]
        unparseable: dict[str, str | None] = {}
        with self._cache.writing():
            todo = {key: shown for key, shown in zip(keys, pairs) if key not in self._cache}
            if todo:
                with httpx.Client(timeout=self.timeout) as client, ThreadPoolExecutor(self.max_concurrency) as pool:
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

    def _judge_one(self, client: Any, key: str, shown: ShownPair, unparseable: dict[str, str | None]) -> None:
        body = {
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "messages": judge_messages(shown.item.prompt, shown.first, shown.second, self.criterion),
        }
        reply = None
        for _ in range(self.parse_retries + 1):
            reply = self._complete(client, body)
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

    def _complete(self, client: Any, body: dict) -> str | None:
        """One chat completion with retries; the reply's text (None when its content is null)."""
        import httpx

        url = f"{self.base_url}/chat/completions"
        headers = {"Authorization": f"Bearer {self._api_key.reveal()}"}
        problem = ""
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                response = client.post(url, json=body, headers=headers)
            except (httpx.TimeoutException, httpx.TransportError) as error:
                problem = type(error).__name__
            else:
                if response.status_code == 200:
                    try:
                        return response.json()["choices"][0]["message"]["content"]
                    except (ValueError, KeyError, IndexError, TypeError):
                        problem = f"malformed reply {redact(response.text[:200])!r}"
                elif response.status_code in RETRIED_STATUS or response.status_code >= 500:
                    problem = f"HTTP {response.status_code}"
                    retry_after = response.headers.get("retry-after")
                else:
                    raise JudgeAPIError(
                        f"{self.model} at {url}: HTTP {response.status_code}: {redact(response.text[:300])}"
                    )
            if attempt < self.max_retries:
                self.sleep(retry_wait(attempt, self.backoff_base, self.backoff_max, retry_after))
        raise JudgeAPIError(
            f"{self.model} at {url}: gave up after {self.max_retries + 1} attempts "
            f"(last: {problem}); finished pairs are cached, rerun to continue"
        )
