"""Annealed β: a schedule from a start to an end value, the DualLoop-DPO paper's scheduled baseline."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from dualloop.controllers.base import BatchStats, BetaDecision, Controller, positive, register_controller, uniform

ANNEALING_SCHEDULES = ("linear", "cosine")


@register_controller
@dataclass(eq=False)
class Annealed(Controller):
    """A scheduled β: ``β_t = β_end + (β_start − β_end) · g(t/T)`` with ``g(x) = 1 − x`` (linear)
    or ``(1 + cos πx)/2`` (cosine), ``t`` the number of ``step()`` calls, held at β_end after T."""

    name = "annealed"
    beta_argument = "start"

    start: float = field(default=0.2, metadata={"help": "β at step 0 (> 0)."})
    end: float = field(default=0.05, metadata={"help": "β from step T on (> 0)."})
    total_steps: int = field(
        default=120, metadata={"help": "T, the schedule's length in optimizer steps (the trainer's own by default)."}
    )
    schedule: str = field(default="linear", metadata={"help": "g: 'linear' or 'cosine'."})

    def __post_init__(self) -> None:
        self.start = positive("start", self.start)
        self.end = positive("end", self.end)
        total_steps = self.total_steps
        if not isinstance(total_steps, int) or isinstance(total_steps, bool) or total_steps < 1:
            raise ValueError(f"total_steps must be an integer ≥ 1, got {total_steps!r}")
        if self.schedule not in ANNEALING_SCHEDULES:
            raise ValueError(f"schedule must be one of {ANNEALING_SCHEDULES}, got {self.schedule!r}")
        self._steps = 0

    @property
    def beta(self) -> float:
        x = min(self._steps / self.total_steps, 1.0)
        g = 1.0 - x if self.schedule == "linear" else (1.0 + math.cos(math.pi * x)) / 2.0
        return self.end + (self.start - self.end) * g

    def decide(self, stats: BatchStats, *, train: bool = True) -> BetaDecision:
        return BetaDecision(uniform(self.beta, stats.margins), uniform(1.0, stats.margins))

    def step(self, stats: BatchStats) -> None:
        self._steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self._steps}

    def metrics(self) -> dict[str, float]:
        return {"beta/base": self.beta}
