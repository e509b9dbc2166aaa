"""ε-DPO (Lee et al. 2025, "KL Penalty Control via Perturbation for Direct Preference Optimization",
arXiv 2502.13177): β adjusted per example and per step by whether a perturbed β would move the
policy's preference the same way."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from dualloop.controllers.base import (
    BatchStats,
    BetaDecision,
    Controller,
    in_unit_interval,
    positive,
    register_controller,
    uniform,
)


@register_controller
@dataclass(eq=False)
class EpsilonDPO(Controller):
    """ε-DPO (Lee et al. 2025): per example ``β̃_i = β / (1 + ε s_i)`` with the step ``s_i`` from
    :func:`epsilon_steps_from_logps`; each optimizer step ``β ← β / (1 + ε s̄)`` with s̄ the mean step
    over the global batch. One ε both perturbs β and sizes its step."""

    name = "epsilon-dpo"
    beta_argument = "beta"
    needs = frozenset({"epsilon_steps"})

    beta: float = field(default=0.1, metadata={"help": "β at step 0 (> 0)."})
    epsilon: float = field(
        default=0.01, metadata={"help": "ε, the perturbation of β and the size of its step, in (0, 1)."}
    )

    def __post_init__(self) -> None:
        self._beta = positive("beta", self.beta)
        self.epsilon = in_unit_interval("epsilon", self.epsilon, low_open=True, high_open=True)
        self._up_fraction = 0.0
        self._down_fraction = 0.0

    @staticmethod
    def _steps_of(stats: BatchStats) -> torch.Tensor:
        if stats.epsilon_steps is None:
            raise ValueError(
                "EpsilonDPO needs stats.epsilon_steps (see dualloop.controllers.epsilon_dpo.epsilon_steps_from_logps)"
            )
        return stats.epsilon_steps.double()

    def decide(self, stats: BatchStats, *, train: bool = True) -> BetaDecision:
        beta = self._beta / (1.0 + self.epsilon * self._steps_of(stats))
        return BetaDecision(beta.to(device=stats.margins.device, dtype=torch.float32), uniform(1.0, stats.margins))

    def step(self, stats: BatchStats) -> None:
        steps = self._steps_of(stats)
        self._beta = self._beta / (1.0 + self.epsilon * steps.mean().item())
        self._up_fraction = (steps > 0).double().mean().item()
        self._down_fraction = (steps < 0).double().mean().item()

    def state_dict(self) -> dict[str, Any]:
        return {"beta": self._beta, "up_fraction": self._up_fraction, "down_fraction": self._down_fraction}

    def metrics(self) -> dict[str, float]:
        return {
            "beta/base": self._beta,
            "epsilon/step_up_fraction": self._up_fraction,
            "epsilon/step_down_fraction": self._down_fraction,
        }


def epsilon_steps_from_logps(logps: torch.Tensor) -> torch.Tensor:
    """ε-DPO's step direction per pair (steps 1–2) from summed log-probs ``[3, 2B]`` of the label tokens
    under θ, under the policy perturbed to β/(1+ε) (logits ``(1+ε) ℓ_θ − ε ℓ_ref``) and to β/(1−ε)
    (``(1−ε) ℓ_θ + ε ℓ_ref``), rows 0..B−1 of each the chosen sequences. With ``z = log π(y_w) − log π(y_l)``
    under each: ``s = +1`` if ``z⁺ > z > z⁻``, ``−1`` if ``z⁻ > z > z⁺``, else 0. The trainer computes the
    three log-probs from hidden states (:func:`dualloop.trainer.heads.vocabulary_statistics`)."""
    if logps.dim() != 2 or logps.shape[0] != 3 or logps.shape[1] % 2:
        raise ValueError(f"logps must be [3, 2B] (θ, plus, minus × chosen then rejected), got {tuple(logps.shape)}")
    half = logps.shape[1] // 2
    z, z_plus, z_minus = logps[:, :half] - logps[:, half:]
    up = (z_plus > z) & (z > z_minus)
    down = (z_minus > z) & (z > z_plus)
    return up.long() - down.long()
