"""One OpenAI-compatible chat-completions endpoint over HTTP: its key and one request with retries.

Shared by the API judges (:mod:`dualloop.judges.api`) and server generation (:mod:`dualloop.serving`).
The key is read only from the environment variable the caller names (none for a server without
auth), checked when the endpoint is made (before any work), never shown by a repr and redacted from
every error (:mod:`dualloop.redaction`). A request is POST ``{base_url}/chat/completions``; a 408,
409, 425, 429, 5xx, timeout, connection error or reset, a reply past the request's deadline or size
cap, or a bad body (malformed, undecodable, another model's, empty where text is needed) is retried up
to ``max_retries`` times with jittered exponential backoff or the server's Retry-After (:func:`retry_wait`).
"""

from __future__ import annotations

import email.utils
import json
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
        deadline: float = 300.0,
        max_reply_bytes: int = 1_000_000,
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
        self.deadline = deadline
        self.max_reply_bytes = max_reply_bytes

    def __repr__(self) -> str:
        return f"ChatEndpoint(base_url={self.base_url!r}, api_key_env={self.api_key_env!r})"

    def client(self) -> Any:
        """An ``httpx.Client`` for this endpoint's requests (close it, e.g. with ``with``)."""
        import httpx

        return httpx.Client(timeout=self.timeout)

    def complete(
        self, client: Any, body: dict, sleep: Callable[[float], Any] = time.sleep, *, allow_empty: bool = True
    ) -> str | None:
        """The reply text of one chat completion (None when its content is null and ``allow_empty``), retried
        as the module docstring says, waiting with ``sleep``; EndpointError when it fails for good.

        Every attempt is bounded: it must be complete within ``deadline`` seconds (connect, send, every byte
        of the reply) and within ``max_reply_bytes``. A reply that cannot be decoded (a broken gzip body,
        bytes that are not UTF-8, a lone surrogate), one for another model than ``body["model"]`` (a dated
        snapshot of it, ``<model>-…``, counts as it), and with ``allow_empty=False`` an empty or null text,
        is a bad reply like a malformed one: retried, and never returned."""
        import httpx

        url = f"{self.base_url}/chat/completions"
        headers = {"Authorization": f"Bearer {self._api_key.reveal()}"} if self._api_key else {}
        model = body.get("model")
        problem = ""
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                status, retry_after, raw = self._post(client, url, body, headers)
            except (httpx.TimeoutException, httpx.TransportError, httpx.DecodingError) as error:
                problem = type(error).__name__
            except _BadReply as error:
                problem = str(error)
            else:
                if status == 200:
                    try:
                        return _reply_text(raw, model, allow_empty)
                    except _BadReply as error:
                        problem = str(error)
                elif status in RETRIED_STATUS or status >= 500:
                    problem = f"HTTP {status}"
                else:
                    text = raw[:300].decode("utf-8", errors="replace")
                    raise EndpointError(f"{model} at {url}: HTTP {status}: {redact(text)}")
            if attempt < self.max_retries:
                sleep(retry_wait(attempt, self.backoff_base, self.backoff_max, retry_after))
        raise EndpointError(
            f"{model} at {url}: gave up after {self.max_retries + 1} attempts "
            f"(last: {problem}); finished requests are cached, rerun to continue"
        )

    def _post(self, client: Any, url: str, body: dict, headers: dict) -> tuple[int, str | None, bytes]:
        """(status, Retry-After, body bytes) of one POST, read within ``deadline`` and ``max_reply_bytes``."""
        started = time.monotonic()
        with client.stream("POST", url, json=body, headers=headers) as response:
            chunks, size = [], 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > self.max_reply_bytes:
                    raise _BadReply(f"a reply over {self.max_reply_bytes} bytes")
                if time.monotonic() - started > self.deadline:
                    raise _BadReply(f"no complete reply within {self.deadline:g} s")
                chunks.append(chunk)
            return response.status_code, response.headers.get("retry-after"), b"".join(chunks)


class _BadReply(Exception):
    """A reply that came but cannot be used; retried like a failed request."""


def _reply_text(raw: bytes, model: str | None, allow_empty: bool) -> str | None:
    try:
        document = json.loads(raw.decode("utf-8"))
        content = document["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):  # UnicodeDecodeError is a ValueError
        raise _BadReply(f"malformed reply {redact(raw[:200].decode('utf-8', errors='replace'))!r}") from None
    if content is not None and not isinstance(content, str):
        raise _BadReply(f"a reply whose content is {type(content).__name__}, not text")
    if content is not None:
        try:
            content.encode("utf-8")
        except UnicodeEncodeError:
            raise _BadReply("a reply whose text cannot be encoded (a lone surrogate)") from None
    replied = document.get("model") if isinstance(document, dict) else None
    if model and isinstance(replied, str) and replied != model and not replied.startswith(f"{model}-"):
        raise _BadReply(f"a reply from model {replied!r}, not {model!r}")
    if not allow_empty and not (content or "").strip():
        raise _BadReply("an empty completion")
    return content
