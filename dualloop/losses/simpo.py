"""SimPO (Meng et al. 2024, arXiv 2405.14734) and its self-adaptive form (AdaDPO, Chen et al., Table 2);
reference-free."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from dualloop.losses.base import (
    Loss,
    LossOutput,
    SelfAdaptive,
    SequenceLogps,
    adaptive_coefficient,
    as_beta,
    check_clip_and_k,
    check_lengths,
    check_logps,
    register_loss,
)


def _check_gamma(gamma: float) -> None:
    if not isinstance(gamma, (int, float)) or not math.isfinite(gamma):
        raise ValueError(f"gamma (SimPO's target margin) must be a finite number, got {gamma!r}")


def _simpo_core(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    beta: torch.Tensor,
    beta_chosen: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    gamma: float,
) -> LossOutput:
    """``−log σ(β_w/|y_w| · log P_w − β/|y_l| · log P_l − γ)`` on validated inputs."""
    chosen_reward = beta_chosen / chosen_lengths * policy_chosen_logps
    rejected_reward = beta / rejected_lengths * policy_rejected_logps
    losses = -F.logsigmoid(chosen_reward - rejected_reward - gamma)
    return LossOutput(losses, chosen_reward.detach(), rejected_reward.detach(), beta_chosen)


def simpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    beta: float | torch.Tensor,
    *,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    gamma: float = 0.0,
) -> LossOutput:
    """SimPO (Meng et al. 2024, "SimPO: Simple Preference Optimization with a Reference-Free Reward",
    arXiv 2405.14734, L_SimPO; AdaDPO (Chen et al.) Table 2 with β_w = β_l = β), reference-free:
    ``−log σ(β/|y_w| · log P_w − β/|y_l| · log P_l − γ)`` on summed log-probs, lengths in tokens.

    Equals TRL's ``CPOTrainer.cpo_loss`` with ``loss_type="simpo"``, ``simpo_gamma=γ`` and
    ``label_smoothing=0`` fed the per-token average log-probs (TRL's SimPO path averages them itself).
    """
    size = check_logps(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps)
    _check_gamma(gamma)
    beta = as_beta(beta, size, policy_chosen_logps)
    chosen_lengths, rejected_lengths = check_lengths(
        size, chosen_lengths, rejected_lengths, policy_chosen_logps, required=True, method="simpo_loss"
    )
    return _simpo_core(policy_chosen_logps, policy_rejected_logps, beta, beta, chosen_lengths, rejected_lengths, gamma)


def adaptive_simpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    beta: float | torch.Tensor,
    *,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    gamma: float = 0.0,
    clip: float | None = 2.0,
    k: float = 1.0,
) -> LossOutput:
    """Self-adaptive SimPO (AdaDPO, Chen et al., Table 2; Meng et al. 2024), reference-free:
    ``−log σ(β_w/|y_w| · log P_w − β_l/|y_l| · log P_l − γ)`` with ``β_l = β`` and
    ``β_w = β · min(k · sg(|y_w| P_w / (|y_l| P_l)), C)``."""
    size = check_logps(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps)
    check_clip_and_k(clip, k)
    _check_gamma(gamma)
    beta = as_beta(beta, size, policy_chosen_logps)
    chosen_lengths, rejected_lengths = check_lengths(
        size, chosen_lengths, rejected_lengths, policy_chosen_logps, required=True, method="adaptive_simpo_loss"
    )
    log_ratio = (torch.log(chosen_lengths) + policy_chosen_logps) - (
        torch.log(rejected_lengths) + policy_rejected_logps
    )
    beta_chosen = beta * adaptive_coefficient(log_ratio, clip, k)
    return _simpo_core(
        policy_chosen_logps, policy_rejected_logps, beta, beta_chosen, chosen_lengths, rejected_lengths, gamma
    )


@dataclass(frozen=True)
class SimPOArguments:
    """SimPO's target reward margin γ."""

    gamma: float = field(default=0.5, metadata={"help": "γ, the target reward margin (Meng et al. 2024)."})

    def __post_init__(self) -> None:
        _check_gamma(self.gamma)


@dataclass(frozen=True)
class AdaptiveSimPOArguments(SelfAdaptive, SimPOArguments):
    """Self-adaptive SimPO's arguments: γ, the ceiling C and the scale k."""

    def __post_init__(self) -> None:
        SelfAdaptive.__post_init__(self)
        SimPOArguments.__post_init__(self)


def simpo_margin(logps: SequenceLogps) -> torch.Tensor:
    """``πw/|yw| − πl/|yl|``: what β multiplies inside SimPO's loss."""
    return logps.policy_chosen / logps.chosen_lengths - logps.policy_rejected / logps.rejected_lengths


def _simpo(logps: SequenceLogps, beta: torch.Tensor, arguments: SimPOArguments) -> LossOutput:
    return simpo_loss(
        logps.policy_chosen,
        logps.policy_rejected,
        beta,
        gamma=arguments.gamma,
        chosen_lengths=logps.chosen_lengths,
        rejected_lengths=logps.rejected_lengths,
    )


def _adaptive_simpo(logps: SequenceLogps, beta: torch.Tensor, arguments: AdaptiveSimPOArguments) -> LossOutput:
    return adaptive_simpo_loss(
        logps.policy_chosen,
        logps.policy_rejected,
        beta,
        gamma=arguments.gamma,
        chosen_lengths=logps.chosen_lengths,
        rejected_lengths=logps.rejected_lengths,
        clip=arguments.clip,
        k=arguments.k,
    )


register_loss(Loss("simpo", _simpo, simpo_margin, False, SimPOArguments))
register_loss(Loss("adaptive-simpo", _adaptive_simpo, simpo_margin, False, AdaptiveSimPOArguments))
