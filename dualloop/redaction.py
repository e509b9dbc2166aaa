"""Secrets never reach a file: every writer of the project passes what it writes through :func:`redact`.

A secret is the value of an environment variable that holds a key: one whose name ends in ``API_KEY``,
``_TOKEN`` or ``_SECRET``, or one a judge registered (:func:`register_secret_env`, its ``api_key_env``).
Values shorter than :data:`MIN_LENGTH` characters are not treated as secrets (replacing them would
mangle ordinary text).
"""

from __future__ import annotations

import os
import re
from typing import Any

__all__ = ["REDACTED", "redact", "redact_record", "register_secret_env"]

REDACTED = "<secret>"
MIN_LENGTH = 8
_SECRET_NAME = re.compile(r"(API_KEY|_TOKEN|_SECRET)$")
_registered: set[str] = set()


def register_secret_env(name: str) -> None:
    """Treat the value of environment variable ``name`` as a secret from now on."""
    _registered.add(name)


def _secrets() -> list[str]:
    names = [name for name in os.environ if _SECRET_NAME.search(name) or name in _registered]
    values = {os.environ.get(name, "").strip() for name in names}
    return sorted((value for value in values if len(value) >= MIN_LENGTH), key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with every secret replaced by ``<secret>``."""
    for secret in _secrets():
        text = text.replace(secret, REDACTED)
    return text


def redact_record(value: Any) -> Any:
    """A JSON-like value (dicts, lists, strings, numbers) with every string redacted, keys included."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_record(key): redact_record(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_record(item) for item in value]
    return value
