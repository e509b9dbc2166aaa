"""β-DPO (Wu et al. 2024, "β-DPO: Direct Preference Optimization with Dynamic β", arXiv 2407.08639)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from dualloop.controllers.base import (
    BatchStats,
    BetaDecision,
    Controller,
    finite_number,
    in_unit_interval,
    positive,
    register_controller,
    uniform,
)

BETA_DPO_FLOOR = 1e-3


@register_controller
@dataclass(eq=False)
class BetaDPO(Controller):
    """β-DPO (Wu et al. 2024), per training micro-batch on the margins M:

    1. ``M0 ← γ M0 + (1−γ) mean(M)``, ``σ0 ← γ σ0 + (1−γ) std(M)`` (sample std; both start at 0;
       a batch of one keeps σ0 and is not filtered);
    2. ``w_i = exp(−½((M_i − M0)/σ0)²)`` (uniform while σ0 = 0); keep ``⌊N(1−ρ)⌋`` examples (at
       least one) sampled without replacement ∝ w with a generator seeded by (seed, call count);
    3. ``β = max(β0 (1 + a (mean_kept M − M0)), 1e-3)``; dropped examples get weight 0.

    Evaluation batches (``train=False``) update nothing and drop nothing.
    """

    name = "beta-dpo"
    beta_argument = "beta0"

    beta0: float = field(default=0.1, metadata={"help": "β0, the β at the running mean margin (> 0)."})
    a: float = field(default=0.6, metadata={"help": "a, β's sensitivity to the kept batch's margin."})
    rho: float = field(default=0.2, metadata={"help": "ρ, the fraction of each micro-batch dropped, in [0, 1)."})
    gamma: float = field(default=0.9, metadata={"help": "γ, the momentum of M0 and σ0, in [0, 1]."})
    seed: int = field(default=0, metadata={"help": "Seed of the sampling (the run's seed by default)."})

    def __post_init__(self) -> None:
        self.beta0 = positive("beta0", self.beta0)
        self.a = finite_number("a", self.a)
        self.rho = in_unit_interval("rho", self.rho, low_open=False, high_open=True)
        self.gamma = in_unit_interval("gamma", self.gamma, low_open=False, high_open=False)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise TypeError(f"seed must be an int, got {type(self.seed).__name__}")
        self._m0 = 0.0
        self._sigma0 = 0.0
        self._calls = 0
        self._beta = self.beta0
        self._kept_fraction = 1.0

    def _beta_from(self, kept_mean: float) -> float:
        return max(self.beta0 * (1.0 + self.a * (kept_mean - self._m0)), BETA_DPO_FLOOR)

    def keep_mask(self, margins: torch.Tensor) -> torch.Tensor:
        """Step 2: which examples are kept, sampled ∝ the Gaussian weight around (M0, σ0)."""
        size = margins.numel()
        n_keep = max(1, math.floor(size * (1.0 - self.rho)))
        if size < 2 or n_keep >= size:
            return torch.ones(size, dtype=torch.bool)
        if self._sigma0 > 0:
            log_weight = -0.5 * ((margins.double().cpu() - self._m0) / self._sigma0) ** 2
            weight = torch.exp(log_weight - log_weight.max()).clamp_min(torch.finfo(torch.float64).tiny)
        else:
            weight = torch.ones(size, dtype=torch.float64)
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self._calls) % (2**63))
        kept = torch.multinomial(weight, n_keep, replacement=False, generator=generator)
        mask = torch.zeros(size, dtype=torch.bool)
        mask[kept] = True
        return mask

    def decide(self, stats: BatchStats, *, train: bool = True) -> BetaDecision:
        margins = stats.margins.double().cpu()
        if not train:
            beta = self._beta_from(margins.mean().item())
            return BetaDecision(uniform(beta, stats.margins), uniform(1.0, stats.margins))
        self._m0 = self.gamma * self._m0 + (1 - self.gamma) * margins.mean().item()
        if margins.numel() > 1:
            self._sigma0 = self.gamma * self._sigma0 + (1 - self.gamma) * margins.std().item()
        mask = self.keep_mask(margins)
        self._calls += 1
        self._beta = self._beta_from(margins[mask].mean().item())
        self._kept_fraction = mask.double().mean().item()
        weight = mask.to(device=stats.margins.device, dtype=torch.float32)
        return BetaDecision(uniform(self._beta, stats.margins), weight)

    def step(self, stats: BatchStats) -> None:
        """β-DPO adapts per micro-batch in ``decide``; an optimizer step changes nothing."""

    def state_dict(self) -> dict[str, Any]:
        return {
            "m0": self._m0,
            "sigma0": self._sigma0,
            "calls": self._calls,
            "beta": self._beta,
            "kept_fraction": self._kept_fraction,
        }

    def metrics(self) -> dict[str, float]:
        return {"beta/base": self._beta, "m0": self._m0, "sigma0": self._sigma0, "kept_fraction": self._kept_fraction}
