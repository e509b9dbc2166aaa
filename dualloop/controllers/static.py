"""Static β: the DPO baseline (Rafailov et al. 2023, arXiv 2305.18290, eq. 7)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dualloop.controllers.base import BatchStats, BetaDecision, Controller, positive, register_controller, uniform


@register_controller
@dataclass(eq=False)
class Static(Controller):
    """A fixed β for every example and step (the DPO baseline)."""

    name = "static"
    beta_argument = "beta"

    beta: float = field(metadata={"help": "The β of every example and step (> 0)."})

    def __post_init__(self) -> None:
        self._beta = positive("beta", self.beta)

    def decide(self, stats: BatchStats, *, train: bool = True) -> BetaDecision:
        return BetaDecision(uniform(self._beta, stats.margins), uniform(1.0, stats.margins))

    def step(self, stats: BatchStats) -> None:
        """β never changes."""

    def state_dict(self) -> dict[str, Any]:
        return {"beta": self._beta}

    def metrics(self) -> dict[str, float]:
        return {"beta/base": self._beta}
