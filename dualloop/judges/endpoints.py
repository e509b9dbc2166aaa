"""The entries of ``evaluation.judges``: a known judge's name, or a mapping naming any OpenAI-compatible
chat-completions endpoint, validated before any work.

A mapping has the keys ``name`` (its decisions are recorded under it), ``model`` (the ``model`` field
of each request), ``base_url`` (http(s), e.g. ``http://127.0.0.1:8000/v1``) and ``api_key_env`` (the
environment variable holding the key, or null for a server without auth: no Authorization header is
sent), and optionally ``usd_per_mtok_in`` / ``usd_per_mtok_out`` (USD per million tokens, 0 when
absent: free or self-hosted), e.g.::

    judges: [gold, {name: qwen-judge, model: Qwen/Qwen2.5-7B-Instruct, base_url: "http://127.0.0.1:8000/v1",
                    api_key_env: null}]

``api_key_env`` must be given, null included, so a forgotten key is not mistaken for a server
without auth. The key itself is never a parameter value.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from dualloop.chat_client import check_base_url
from dualloop.judges.cost import LIST_PRICES
from dualloop.names import did_you_mean

__all__ = ["API_JUDGES", "ENDPOINT_KEYS", "JUDGES", "EndpointJudge", "judge_entries", "judge_entry"]

OPENAI_BASE_URL = "https://api.openai.com/v1"
GEMINI_OPENAI_BASE_URL = "https://generativelanguage.googleapis.com/v1beta/openai"
JUDGES = ("gold", "gold-loose", "local", "gpt-4o-mini", "gemini-2.0-flash")
ENDPOINT_KEYS = ("name", "model", "base_url", "api_key_env", "usd_per_mtok_in", "usd_per_mtok_out", "deadline_s")
REQUIRED_KEYS = ENDPOINT_KEYS[:4]
# names of decisions the known judges record: a mapping may not take them
_TAKEN_NAMES = (*JUDGES, "gold-checker")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # also the judge cache's file name
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class EndpointJudge:
    """An API judge: where it is, which environment variable holds its key, and its prices."""

    name: str
    model: str
    base_url: str
    api_key_env: str | None
    usd_per_mtok_in: float = 0.0
    usd_per_mtok_out: float = 0.0
    deadline_s: float = 300.0  # the most one request may take, connect to last byte


API_JUDGES = {
    "gpt-4o-mini": EndpointJudge(
        "gpt-4o-mini", "gpt-4o-mini", OPENAI_BASE_URL, "OPENAI_API_KEY", *LIST_PRICES["gpt-4o-mini"]
    ),
    "gemini-2.0-flash": EndpointJudge(
        "gemini-2.0-flash",
        "gemini-2.0-flash",
        GEMINI_OPENAI_BASE_URL,
        "GEMINI_API_KEY",
        *LIST_PRICES["gemini-2.0-flash"],
    ),
}


def judge_entry(entry: Any, path: str) -> str | EndpointJudge:
    """``entry`` of ``evaluation.judges`` at key path ``path``: "gold", "gold-loose" or "local", or the
    EndpointJudge of an API judge's name or of a mapping; a one-line ValueError naming path and value."""
    if isinstance(entry, str):
        if entry not in JUDGES:
            raise ValueError(f"{path}={entry!r} is not one of {', '.join(JUDGES)}{did_you_mean(entry, JUDGES)}")
        return API_JUDGES.get(entry, entry)
    if not isinstance(entry, dict):
        raise ValueError(f"{path}={entry!r} must be a judge's name or a mapping with keys {', '.join(ENDPOINT_KEYS)}")
    for key in entry:
        if key not in ENDPOINT_KEYS:
            hint = did_you_mean(key, ENDPOINT_KEYS) or f"; known keys: {', '.join(ENDPOINT_KEYS)}"
            raise ValueError(f"{path}: unknown key {key!r}{hint}")
    for key in REQUIRED_KEYS:
        if key not in entry:
            raise ValueError(
                f"{path}: missing key {key!r} (a judge mapping needs {', '.join(REQUIRED_KEYS)}; "
                "api_key_env: null for a server without auth)"
            )
    name, model, base_url, api_key_env = (entry[key] for key in REQUIRED_KEYS)
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{path}.name={name!r} must be letters, digits, '.', '_' or '-' (it names files)")
    if name in _TAKEN_NAMES:
        raise ValueError(f"{path}.name={name!r} clashes with a known judge ({', '.join(_TAKEN_NAMES)}): choose another")
    if not isinstance(model, str) or not model:
        raise ValueError(f"{path}.model={model!r} must be the served model's name")
    check_base_url(f"{path}.base_url", base_url)
    if api_key_env is not None and (not isinstance(api_key_env, str) or not _ENV_NAME.fullmatch(api_key_env)):
        raise ValueError(
            f"{path}.api_key_env={api_key_env!r} must name an environment variable (the key is never a "
            "parameter), or be null for a server without auth"
        )
    deadline = entry.get("deadline_s", 300.0)
    if isinstance(deadline, bool) or not isinstance(deadline, (int, float)) or not 0 < deadline < math.inf:
        raise ValueError(f"{path}.deadline_s={deadline!r} must be a number of seconds > 0")
    prices = []
    for key in ENDPOINT_KEYS[4:6]:
        price = entry.get(key, 0.0)
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price) or price < 0:
            raise ValueError(f"{path}.{key}={price!r} must be a number >= 0 (USD per million tokens)")
        prices.append(float(price))
    return EndpointJudge(name, model, base_url, api_key_env, prices[0], prices[1], float(deadline))


def judge_entries(entries: Any, path: str = "evaluation.judges") -> list[str | EndpointJudge]:
    """Every entry of ``evaluation.judges`` (:func:`judge_entry`), no judge named twice."""
    if not isinstance(entries, list):
        raise ValueError(f"{path}={entries!r} must be a list of judges")
    parsed = [judge_entry(entry, f"{path}[{index}]") for index, entry in enumerate(entries)]
    seen: set[str] = set()
    for index, judge in enumerate(parsed):
        name = judge.name if isinstance(judge, EndpointJudge) else judge
        if name in seen:
            raise ValueError(f"{path}[{index}]: judge {name!r} is named twice")
        seen.add(name)
    return parsed
