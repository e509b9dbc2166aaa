"""Names a user types or defines: one "did you mean" for methods, controllers, losses, keys, prompt sets; a
notebook cell's class or function defined again."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

__all__ = ["did_you_mean", "same_definition", "unknown_choice"]


def did_you_mean(value: object, choices: Iterable[object]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to ``value``, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(value), [str(choice) for choice in choices], n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_choice(kind: str, value: object, choices: Iterable[object], *, prefix: str = "") -> ValueError:
    """``ValueError: <prefix>unknown <kind> 'value' (did you mean …?); choose one of a, b, c``."""
    names = [str(choice) for choice in choices]
    return ValueError(f"{prefix}unknown {kind} {value!r}{did_you_mean(value, names)}; choose one of {', '.join(names)}")


def same_definition(new: Any, old: Any) -> bool:
    """Whether ``new`` is ``old`` defined again: the same module and qualified name (a notebook cell run twice)."""
    return (new.__module__, new.__qualname__) == (old.__module__, old.__qualname__)
