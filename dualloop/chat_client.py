"""One OpenAI-compatible chat-completions endpoint over HTTP: its key and one request with retries.

Shared by the API judges (:mod:`dualloop.judges.api`) and server generation (:mod:`dualloop.serving`).
The key is read only from the environment variable the caller names (none for a server without
auth), checked when the endpoint is made (before any work), never shown by a repr and redacted from
every error (:mod:`dualloop.redaction`). A request is POST ``{base_url}/chat/completions``; a 408,
409, 425, 429, 5xx, timeout, connection error or reset, or a malformed body is retried up to
``max_retries`` times with jittered exponential backoff or the server's Retry-After (:func:`retry_wait`).
"""

from __future__ import annotations

import email.utils
import os
import random
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dualloop.redaction import redact, register_secret_env

__all__ = [
    "RETRIED_STATUS",
    "ChatEndpoint",
    "EndpointError",
    "MissingAPIKeyError",
    "check_api_key",
    "check_base_url",
    "shown_url",
    "retry_wait",
]

RETRIED_STATUS = frozenset({408, 409, 425, 429})  # and every 5xx


class MissingAPIKeyError(RuntimeError):
    """The environment variable that should hold an endpoint's API key is unset or empty."""


class EndpointError(RuntimeError):
    """An endpoint failed for good (a non-retryable status, or retries exhausted)."""


def check_api_key(api_key_env: str, model: str, base_url: str) -> str:
    """The key in environment variable ``api_key_env`` (registered as a secret); MissingAPIKeyError without one."""
    register_secret_env(api_key_env)
    key = os.environ.get(api_key_env, "").strip()
    if not key:
        raise MissingAPIKeyError(
            f"environment variable {api_key_env} is not set: export it with the API key for "
            f"{model} at {base_url} before anything runs (keys are read only from the environment)"
        )
    return key


def check_base_url(key_path: str, base_url: object) -> None:
    """One ValueError naming ``key_path`` unless ``base_url`` is an http(s) URL with a host and nothing that
    could hold a secret: no ``user:password@`` and no query or fragment (a key comes only from the environment
    variable ``api_key_env`` names). The message shows the URL without those parts (:func:`shown_url`)."""
    if not isinstance(base_url, str):
        raise ValueError(f"{key_path}={base_url!r} is not an http(s) URL such as http://127.0.0.1:8000/v1")
    parts = urlsplit(base_url)
    shown = shown_url(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{key_path}={shown!r} is not an http(s) URL such as http://127.0.0.1:8000/v1")
    if "@" in parts.netloc:
        raise ValueError(
            f"{key_path}={shown!r} holds credentials (user:password@), which are not accepted: "
            "the key comes only from the environment variable api_key_env names"
        )
    if parts.query or parts.fragment or base_url.rstrip().endswith(("?", "#")):
        raise ValueError(
            f"{key_path}={shown!r} has a query or fragment (?…/#…), which is not accepted: give the API root "
            "(e.g. http://127.0.0.1:8000/v1); the key comes only from the environment variable api_key_env names"
        )


def shown_url(base_url: str) -> str:
    """``base_url`` as it may be printed: scheme, host, port and path, without user, password, query or fragment."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    netloc = ("***@" if "@" in parts.netloc else "") + host + port
    return urlunsplit((parts.scheme, netloc, parts.path, "…" if parts.query else "", "…" if parts.fragment else ""))


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


class ChatEndpoint:
    """Where chat completions are requested, with which key, and how failures are retried.

    ``api_key_env`` None: no Authorization header (a vLLM, SGLang or TGI server started without a key).
    ``what`` names the endpoint's model in a missing-key message.
    """

    def __init__(
        self,
        base_url: str,
        api_key_env: str | None,
        *,
        what: str = "the endpoint",
        max_retries: int = 5,
        backoff_base: float = 1.0,
        backoff_max: float = 60.0,
        timeout: float = 60.0,
    ):
        check_base_url("base_url", base_url)
        if max_retries < 0:
            raise ValueError(f"max_retries={max_retries} must not be negative")
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self._api_key = _Secret(check_api_key(api_key_env, what, base_url)) if api_key_env else None
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"ChatEndpoint(base_url={self.base_url!r}, api_key_env={self.api_key_env!r})"

    def client(self) -> Any:
        """An ``httpx.Client`` for this endpoint's requests (close it, e.g. with ``with``)."""
        import httpx

        return httpx.Client(timeout=self.timeout)

    def complete(self, client: Any, body: dict, sleep: Callable[[float], Any] = time.sleep) -> str | None:
        """The reply text of one chat completion (None when its content is null), retried as the
        module docstring says, waiting with ``sleep``; EndpointError when it fails for good."""
        import httpx

        url = f"{self.base_url}/chat/completions"
        headers = {"Authorization": f"Bearer {self._api_key.reveal()}"} if self._api_key else {}
        model = body.get("model")
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
                    raise EndpointError(f"{model} at {url}: HTTP {response.status_code}: {redact(response.text[:300])}")
            if attempt < self.max_retries:
                sleep(retry_wait(attempt, self.backoff_base, self.backoff_max, retry_after))
        raise EndpointError(
            f"{model} at {url}: gave up after {self.max_retries + 1} attempts "
            f"(last: {problem}); finished requests are cached, rerun to continue"
        )
