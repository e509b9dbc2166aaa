"""What an API judging will cost, estimated before the first call, and the cap on it.

Token estimate (a documented approximation, not a tokenizer): the input of a call is the characters
of the messages it will send (system and user content) divided by :data:`CHARS_PER_TOKEN`, rounded
up; its output is the request's ``max_tokens`` (the verdict is one letter, so this bounds it).
Calls whose verdict is already cached are not counted; a reply asked again because it did not parse
is not foreseen. Prices are USD per million tokens: the list prices of :data:`LIST_PRICES` for the
two preset judges, an endpoint's own ``usd_per_mtok_in``/``usd_per_mtok_out`` otherwise (0 when
absent: free or self-hosted).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "CHARS_PER_TOKEN",
    "LIST_PRICES",
    "LIST_PRICE_SOURCE",
    "PRICES_READ",
    "CostCapExceeded",
    "CostEstimate",
    "check_cost_cap",
    "estimate_tokens",
]

# list prices as read 2026-12-02; check the vendor's page: USD per million (input, output) tokens
PRICES_READ = "2026-12-02"
LIST_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gemini-2.0-flash": (0.10, 0.40),
}
LIST_PRICE_SOURCE = f"list prices as read {PRICES_READ}; check the vendor's page"
CHARS_PER_TOKEN = 4


class CostCapExceeded(ValueError):
    """The estimated cost of a judging exceeds ``evaluation.max_cost_usd``; nothing was called."""


def estimate_tokens(messages: Sequence[dict[str, str]]) -> int:
    """The estimated input tokens of one request: its messages' characters / CHARS_PER_TOKEN, rounded up."""
    return math.ceil(sum(len(message["content"]) for message in messages) / CHARS_PER_TOKEN)


@dataclass(frozen=True)
class CostEstimate:
    """The calls one judge will make and what they are estimated to cost."""

    judge: str
    calls: int
    input_tokens: int
    output_tokens: int
    usd_per_mtok_in: float
    usd_per_mtok_out: float
    price_source: str = "the endpoint's usd_per_mtok_in / usd_per_mtok_out"

    @property
    def usd(self) -> float:
        return (self.input_tokens * self.usd_per_mtok_in + self.output_tokens * self.usd_per_mtok_out) / 1e6

    def line(self) -> str:
        """One printed line: calls, tokens, USD and the prices used."""
        return (
            f"judge {self.judge}: {self.calls} calls, ~{self.input_tokens} input + {self.output_tokens} output "
            f"tokens, ~USD {self.usd:.4f} (USD {self.usd_per_mtok_in:g} / {self.usd_per_mtok_out:g} per M "
            f"input / output tokens: {self.price_source})"
        )


def check_cost_cap(estimates: Sequence[CostEstimate], cap: float | None) -> None:
    """CostCapExceeded when the estimates together exceed ``cap`` USD (None: no cap)."""
    total = sum(estimate.usd for estimate in estimates)
    if cap is not None and total > cap:
        calls = sum(estimate.calls for estimate in estimates)
        raise CostCapExceeded(
            f"evaluation.max_cost_usd={cap!r}: this comparison's {calls} judge calls are estimated at "
            f"USD {total:.4f}; nothing was called (raise the cap or judge fewer prompts)"
        )
