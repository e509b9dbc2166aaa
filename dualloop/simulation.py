"""Simulated training statistics for teaching: why β matters, and what each controller does.

Nothing here trains a model. The functions evaluate the papers' formulas on grids, and drive the
real controllers of :mod:`dualloop.controllers` through their public API (``decide``/``step``)
with margin, KL and ε-step streams from a small, explicit toy model of DPO training
(:class:`ToyTraining`). The notebook ``00_walkthrough`` shows the results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from dualloop.controllers import BatchStats, Controller
from dualloop.losses import adadpo_loss, dpo_loss

__all__ = ["gradient_scale", "margin_after_steps", "ToyTraining", "simulate", "summarize", "gradient_balance"]


def gradient_scale(beta: np.ndarray | float, margin: np.ndarray | float) -> np.ndarray:
    """Eq. (1) of DualLoop-DPO: ``‖∇L‖ / ‖∇M‖ = β · σ(−β M)``.

    At an uncertain pair (M ≈ 0) it is 0.5 β: a small β gives "gradient laziness".
    """
    beta, margin = np.asarray(beta, dtype=float), np.asarray(margin, dtype=float)
    return beta / (1.0 + np.exp(beta * margin))


def margin_after_steps(beta: float, steps: int, learning_rate: float = 1.0, margin: float = 0.0) -> np.ndarray:
    """The margin of one pair pushed by eq. (1) for ``steps`` gradient steps, ``‖∇M‖² = 1``:
    ``M ← M + lr · β σ(−β M)``. A large β moves the pair far in its first steps (every pair at once:
    "global drift") and then stalls once βM is large; a small β crawls ("laziness").
    Returns the margin after each step (length ``steps + 1``)."""
    path = [margin]
    for _ in range(steps):
        margin = margin + learning_rate * float(gradient_scale(beta, margin))
        path.append(margin)
    return np.asarray(path)


@dataclass
class ToyTraining:
    """A toy of DPO training statistics, explicit so students can change it.

    Each step draws a batch of margins around a mean that grows with the push of eq. (1); every
    ``uncertain_every``-th batch is ambiguous (margins near 0, as with noisy labels). The per-token
    KL relaxes towards ``min(kl_scale / β, kl_cap)`` — a smaller β lets the policy drift further
    from the reference, as the closed-form DPO optimum ``π ∝ π_ref exp(r/β)`` does. ε-DPO's step direction of a pair is +1
    (β over-regularizes) with probability ``0.5 σ((β − beta_star)/0.02)``, −1 with
    ``0.5 σ((beta_star − β)/0.02)``, else 0.
    """

    batch_size: int = 16
    learning_rate: float = 10.0
    margin_noise: float = 1.0
    uncertain_every: int = 7
    kl_scale: float = 0.012
    kl_cap: float = 0.5
    kl_relaxation: float = 0.1
    kl_noise: float = 0.004
    beta_star: float = 0.12
    seed: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        self.margin_mean = 0.0
        self.kl = 0.0

    def batch(self, step: int) -> tuple[torch.Tensor, bool]:
        """Margins of this step's batch, and whether the batch is an uncertain one."""
        uncertain = self.uncertain_every > 0 and step % self.uncertain_every == self.uncertain_every - 1
        centre = 0.0 if uncertain else self.margin_mean
        spread = 0.1 if uncertain else self.margin_noise
        return torch.tensor(self.rng.normal(centre, spread, self.batch_size)), uncertain

    def epsilon_steps(self, beta: float) -> torch.Tensor:
        up = 0.5 / (1.0 + math.exp(-(beta - self.beta_star) / 0.02))
        down = 0.5 / (1.0 + math.exp(-(self.beta_star - beta) / 0.02))
        draws = self.rng.random(self.batch_size)
        return torch.tensor(np.where(draws < up, 1, np.where(draws < up + down, -1, 0)))

    def advance(self, beta: float) -> float:
        """Apply one optimizer step at β; returns the batch KL (nats per token)."""
        self.margin_mean += self.learning_rate * float(gradient_scale(beta, self.margin_mean))
        self.kl += self.kl_relaxation * (min(self.kl_scale / beta, self.kl_cap) - self.kl)
        return max(self.kl + self.rng.normal(0.0, self.kl_noise), 0.0)


def simulate(controller: Controller, steps: int, toy: ToyTraining | None = None) -> pd.DataFrame:
    """Run ``controller`` on ``toy`` for ``steps`` optimizer steps (one micro-batch each).

    Returns one row per step: β used (mean/min/max over the batch), whether the batch was
    uncertain, the batch KL, and the controller's ``metrics()`` after its step.
    """
    toy = toy or ToyTraining()
    rows = []
    for step in range(steps):
        margins, uncertain = toy.batch(step)
        base_beta = controller.metrics().get("beta/base", 0.1)
        stats = BatchStats(margins, epsilon_steps=toy.epsilon_steps(base_beta))
        decision = controller.decide(stats)
        kept = decision.weight > 0
        beta_used = float(decision.beta[kept].mean())
        kl = toy.advance(beta_used)
        controller.step(BatchStats(margins, kl=kl, epsilon_steps=stats.epsilon_steps))
        rows.append(
            {
                "step": step + 1,
                "beta": beta_used,
                "beta/min": float(decision.beta.min()),
                "beta/max": float(decision.beta.max()),
                "uncertain": uncertain,
                "batch_kl": kl,
                **controller.metrics(),
            }
        )
    return pd.DataFrame(rows)


def gradient_balance(pairs: list[tuple[float, float]], beta: float = 0.1, clip: float | None = 2.0) -> pd.DataFrame:
    """|∂L/∂P_w| / |∂L/∂P_l| for DPO and AdaDPO (policy space, AdaDPO (Chen et al.) eqs. 2 and 8), by autograd.

    ``pairs`` are (P_w, P_l) with a uniform reference. DPO's ratio is P_l/P_w; AdaDPO's is 1
    while ``P_w/P_l ≤ C`` and ``C · P_l/P_w`` beyond the ceiling.
    """
    rows = []
    for p_w, p_l in pairs:
        row = {"P_w": p_w, "P_l": p_l}
        for name, loss in (
            (
                "DPO",
                lambda chosen, rejected, ref_chosen, ref_rejected: dpo_loss(
                    chosen, rejected, ref_chosen, ref_rejected, beta
                ),
            ),
            (
                "AdaDPO",
                lambda chosen, rejected, ref_chosen, ref_rejected: adadpo_loss(
                    chosen, rejected, ref_chosen, ref_rejected, beta, space="policy", clip=clip
                ),
            ),
        ):
            probs = torch.tensor([p_w, p_l], dtype=torch.float64, requires_grad=True)
            logp, ref = probs.log(), torch.zeros(2, dtype=torch.float64)
            loss(logp[:1], logp[1:], ref[:1], ref[1:]).losses.sum().backward()
            grad = probs.grad
            assert grad is not None  # set by backward(): probs requires grad
            row[f"{name} |dL/dP_w| / |dL/dP_l|"] = abs(grad[0].item()) / abs(grad[1].item())
        rows.append(row)
    return pd.DataFrame(rows)


def summarize(trajectories: dict[str, pd.DataFrame], kl_target: float, last: int = 100) -> pd.DataFrame:
    """Per controller, over the last ``last`` steps: mean β used, mean batch KL and its distance
    from the target."""
    rows = []
    for name, frame in trajectories.items():
        tail = frame.tail(last)
        rows.append(
            {
                "controller": name,
                "mean β": tail["beta"].mean(),
                "mean KL": tail["batch_kl"].mean(),
                "|KL − target| / target": abs(tail["batch_kl"].mean() - kl_target) / kl_target,
            }
        )
    return pd.DataFrame(rows).set_index("controller")
