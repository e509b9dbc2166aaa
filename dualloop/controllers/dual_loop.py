"""DualLoop-DPO's two-loop β controller (DualLoop-DPO, eqs. 2–3)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

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

FAST_LOOP_SCOPES = ("batch", "example")
KL_EMA_INITS = ("target", "first")  # where the KL EMA starts (DualLoop docstring)


def normalized_binary_entropy(logits: torch.Tensor) -> torch.Tensor:
    """``h = −(p ln p + (1−p) ln(1−p)) / ln 2`` with ``p = σ(logits)``, in [0, 1], stable for any logit."""
    p = torch.sigmoid(logits)
    return -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits)) / math.log(2.0)


def _exp(log_value: float) -> float:
    """exp, with +inf instead of OverflowError."""
    return math.exp(log_value) if log_value < 700 else math.inf


def _at_least_zero(name: str, value: Any) -> float:
    value = finite_number(name, value)
    if value < 0:
        raise ValueError(f"{name} must be ≥ 0, got {value}")
    return value


@register_controller
@dataclass(eq=False)
class DualLoop(Controller):
    """DualLoop-DPO's two-loop β (DualLoop-DPO, eqs. 2–3).

    Fast loop (each micro-batch, eq. 2): ``p_i = σ(β_base M_i)``, ``h_i`` its normalized binary
    entropy, ``H̃ = mean_i h_i``; ``β_total = β_base (1 + λ H̃)`` for every example (scope
    ``"batch"``) or ``β_base (1 + λ h_i)`` per example (scope ``"example"``).
    Slow loop (each optimizer step, eq. 3): ``KL_ema ← (1−α) KL_ema + α KL``;
    ``e = (KL_ema − KL_target)/KL_target``; if ``|e| > deadband``,
    ``β_base ← clip(β_base · exp(η e), β_min, β_max)``. The paper does not say where KL_ema starts:
    ``kl_ema_init="target"`` (default) starts it at KL_target — no error until observed KLs move it —
    because the first observed KL of a LoRA run is exactly 0 (the adapter starts at zero, so the
    policy is the reference), and an EMA started there would lower β for the first ~1/α steps while
    the KL rises; ``"first"`` sets ``KL_ema ← KL`` on the first step.
    Ablations: ``use_ema=False`` (α = 1), ``fast_loop=False`` (λ = 0), ``clip=False`` (no
    bounds), ``deadband=0``. The logged ``entropy`` is mean h_i over every training example of the
    optimizer step (all micro-batches of the accumulation, all processes). The logged
    ``controller/clip_acted`` counts the steps so far whose update the clip changed and
    ``controller/deadband_held`` those where ``0 < |e| ≤ deadband`` kept β_base: while both are 0,
    the ``clip=False`` and ``deadband=0`` ablations give the same β at every step.
    """

    name = "dualloop"
    beta_argument = "beta_init"
    needs = frozenset({"kl"})

    beta_init: float = field(default=0.1, metadata={"help": "β_base at step 0 (> 0; within the clip bounds)."})
    kl_target: float = field(default=0.04, metadata={"help": "KL_target, nats per token (> 0)."})
    lam: float = field(default=4.0, metadata={"help": "λ, the fast loop's gain on the entropy (≥ 0)."})
    eta: float = field(default=0.01, metadata={"help": "η, the slow loop's rate (≥ 0)."})
    ema_alpha: float = field(default=0.1, metadata={"help": "α of the KL EMA, in (0, 1]."})
    deadband: float = field(default=0.1, metadata={"help": "Relative KL error within which β_base holds (≥ 0)."})
    beta_min: float = field(default=0.05, metadata={"help": "β_base's lower clip bound (> 0)."})
    beta_max: float = field(default=2.0, metadata={"help": "β_base's upper clip bound (> beta_min)."})
    fast_loop: bool = field(default=True, metadata={"help": "False: λ = 0 (ablation)."})
    use_ema: bool = field(default=True, metadata={"help": "False: α = 1, the raw KL (ablation)."})
    clip: bool = field(default=True, metadata={"help": "False: no bounds on β_base (ablation)."})
    fast_loop_scope: str = field(
        default="batch", metadata={"help": "'batch' (one β from the mean entropy) or 'example' (β per example)."}
    )
    kl_ema_init: str = field(
        default="target", metadata={"help": "Where KL_ema starts: 'target' or 'first' (the first observed KL)."}
    )

    def __post_init__(self) -> None:
        beta_init = positive("beta_init", self.beta_init)
        self.kl_target = positive("kl_target", self.kl_target)
        self.lam = _at_least_zero("lam", self.lam)
        self.eta = _at_least_zero("eta", self.eta)
        self.ema_alpha = in_unit_interval("ema_alpha", self.ema_alpha, low_open=True, high_open=False)
        self.deadband = _at_least_zero("deadband", self.deadband)
        self.beta_min = positive("beta_min", self.beta_min)
        self.beta_max = positive("beta_max", self.beta_max)
        if self.beta_min >= self.beta_max:
            raise ValueError(f"beta_min must be < beta_max, got beta_min={self.beta_min}, beta_max={self.beta_max}")
        if self.clip and not self.beta_min <= beta_init <= self.beta_max:
            raise ValueError(
                f"beta_init={beta_init} lies outside [beta_min, beta_max] = [{self.beta_min}, {self.beta_max}]"
            )
        if self.fast_loop_scope not in FAST_LOOP_SCOPES:
            raise ValueError(f"fast_loop_scope must be one of {FAST_LOOP_SCOPES}, got {self.fast_loop_scope!r}")
        if self.kl_ema_init not in KL_EMA_INITS:
            raise ValueError(f"kl_ema_init must be one of {KL_EMA_INITS}, got {self.kl_ema_init!r}")
        self.fast_loop, self.use_ema, self.clip = bool(self.fast_loop), bool(self.use_ema), bool(self.clip)
        self._beta_base = beta_init
        self._kl_ema: float | None = self.kl_target if self.kl_ema_init == "target" else None
        self._kl: float | None = None
        self._entropy: float | None = None
        self._entropy_sum = 0.0  # over the training micro-batches since the last step()
        self._entropy_count = 0
        self._steps = 0
        self._clip_acted = 0
        self._deadband_held = 0

    @property
    def beta_base(self) -> float:
        return self._beta_base

    @property
    def kl_ema(self) -> float | None:
        return self._kl_ema

    def decide(self, stats: BatchStats, *, train: bool = True) -> BetaDecision:
        margins = stats.margins.double()
        entropy = normalized_binary_entropy(self._beta_base * margins)
        lam = self.lam if self.fast_loop else 0.0
        if self.fast_loop_scope == "batch":
            beta = torch.full_like(margins, self._beta_base * (1.0 + lam * entropy.mean().item()))
        else:
            beta = self._beta_base * (1.0 + lam * entropy)
        if train:
            self._entropy_sum += entropy.sum().item()
            self._entropy_count += entropy.numel()
        return BetaDecision(beta.float(), uniform(1.0, stats.margins))

    def step(self, stats: BatchStats) -> None:
        if stats.kl is None:
            raise ValueError("DualLoop.step needs stats.kl (the batch KL in nats per token)")
        alpha = self.ema_alpha if self.use_ema else 1.0
        if self._entropy_count:  # the logged entropy: mean h_i over the whole global batch of this step
            self._entropy = self._entropy_sum / self._entropy_count
        self._entropy_sum, self._entropy_count = 0.0, 0
        self._kl = stats.kl
        self._kl_ema = stats.kl if self._kl_ema is None else (1 - alpha) * self._kl_ema + alpha * stats.kl
        error = (self._kl_ema - self.kl_target) / self.kl_target
        if abs(error) > self.deadband:
            unclipped = math.log(self._beta_base) + self.eta * error  # in log space: no overflow
            log_beta_base = unclipped
            if self.clip:
                log_beta_base = min(max(log_beta_base, math.log(self.beta_min)), math.log(self.beta_max))
            beta_base = _exp(log_beta_base)
            if self.clip:  # exact bounds, not exp(log(bound))
                beta_base = min(max(beta_base, self.beta_min), self.beta_max)
                self._clip_acted += beta_base != _exp(unclipped)
            if not math.isfinite(beta_base) or beta_base <= 0:
                raise ValueError(
                    f"beta_base left (0, inf) after KL_ema={self._kl_ema} (kl={stats.kl}) "
                    f"with clip=False; use clip=True or a smaller eta"
                )
            self._beta_base = beta_base
        elif error != 0:
            self._deadband_held += 1
        self._steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            "beta_base": self._beta_base,
            "kl_ema": self._kl_ema,
            "kl": self._kl,
            "entropy": self._entropy,
            "entropy_sum": self._entropy_sum,
            "entropy_count": self._entropy_count,
            "steps": self._steps,
            "clip_acted": self._clip_acted,
            "deadband_held": self._deadband_held,
        }

    def metrics(self) -> dict[str, float]:
        out = {
            "beta/base": self._beta_base,
            "controller/clip_acted": self._clip_acted,
            "controller/deadband_held": self._deadband_held,
        }
        for key, value in (("entropy", self._entropy), ("kl", self._kl), ("kl_ema", self._kl_ema)):
            if value is not None:
                out[key] = value
        return out
