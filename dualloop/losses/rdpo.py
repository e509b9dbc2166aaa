"""R-DPO (Park et al. 2024, arXiv 2403.19159, eq. 9) and its self-adaptive form (AdaDPO, Chen et al., Table 2);
its margin is DPO's."""

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
    balance_log_ratio,
    check_clip_and_k,
    check_lengths,
    check_referenced_logps,
    register_loss,
)
from dualloop.losses.dpo import dpo_margin


def _check_alpha(alpha: float) -> None:
    if not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha (R-DPO's length penalty) must be a finite number ≥ 0, got {alpha!r}")


def _rdpo_core(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: torch.Tensor,
    beta_chosen: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    alpha: float,
) -> LossOutput:
    """``−log σ(β_w log(P_w/R_w) − β log(P_l/R_l) − α(|y_w| − |y_l|))`` on validated inputs."""
    chosen_logratio = policy_chosen_logps - ref_chosen_logps
    rejected_logratio = policy_rejected_logps - ref_rejected_logps
    length_penalty = alpha * (chosen_lengths - rejected_lengths)
    losses = -F.logsigmoid(beta_chosen * chosen_logratio - beta * rejected_logratio - length_penalty)
    return LossOutput(
        losses, (beta_chosen * chosen_logratio).detach(), (beta * rejected_logratio).detach(), beta_chosen
    )


def rdpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float | torch.Tensor,
    *,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    alpha: float,
) -> LossOutput:
    """R-DPO (Park et al. 2024, "Disentangling Length from Quality in Direct Preference Optimization",
    arXiv 2403.19159; AdaDPO (Chen et al.) Table 2 with β_w = β_l = β):
    ``−log σ(β log(P_w/R_w) − β log(P_l/R_l) − α(|y_w| − |y_l|))`` on summed log-probs, lengths in tokens.
    """
    size = check_referenced_logps(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    _check_alpha(alpha)
    beta = as_beta(beta, size, policy_chosen_logps)
    chosen_lengths, rejected_lengths = check_lengths(
        size, chosen_lengths, rejected_lengths, policy_chosen_logps, required=True, method="rdpo_loss"
    )
    return _rdpo_core(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        beta,
        beta,
        chosen_lengths,
        rejected_lengths,
        alpha,
    )


def adaptive_rdpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float | torch.Tensor,
    *,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
    alpha: float,
    clip: float | None = 2.0,
    k: float = 1.0,
) -> LossOutput:
    """Self-adaptive R-DPO (AdaDPO, Chen et al., Table 2; Park et al. 2024):
    ``−log σ(β_w log(P_w/R_w) − β_l log(P_l/R_l) − α(|y_w| − |y_l|))`` with ``β_l = β`` and
    ``β_w = β · min(k · sg(P_w R_l / (P_l R_w)), C)`` (summed log-probs in the ratio)."""
    size = check_referenced_logps(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    check_clip_and_k(clip, k)
    _check_alpha(alpha)
    beta = as_beta(beta, size, policy_chosen_logps)
    chosen_lengths, rejected_lengths = check_lengths(
        size, chosen_lengths, rejected_lengths, policy_chosen_logps, required=True, method="adaptive_rdpo_loss"
    )
    log_ratio = balance_log_ratio(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, None, None, "ratio"
    )
    beta_chosen = beta * adaptive_coefficient(log_ratio, clip, k)
    return _rdpo_core(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        beta,
        beta_chosen,
        chosen_lengths,
        rejected_lengths,
        alpha,
    )


@dataclass(frozen=True)
class RDPOArguments:
    """R-DPO's length penalty α."""

    alpha: float = field(default=0.01, metadata={"help": "α on |y_w| − |y_l| (≥ 0; Park et al. 2024, eq. 9)."})

    def __post_init__(self) -> None:
        _check_alpha(self.alpha)


@dataclass(frozen=True)
class AdaptiveRDPOArguments(SelfAdaptive, RDPOArguments):
    """Self-adaptive R-DPO's arguments: α, the ceiling C and the scale k."""

    def __post_init__(self) -> None:
        SelfAdaptive.__post_init__(self)
        RDPOArguments.__post_init__(self)


def _rdpo(logps: SequenceLogps, beta: torch.Tensor, arguments: RDPOArguments) -> LossOutput:
    return rdpo_loss(
        *logps.referenced(),
        beta,
        alpha=arguments.alpha,
        chosen_lengths=logps.chosen_lengths,
        rejected_lengths=logps.rejected_lengths,
    )


def _adaptive_rdpo(logps: SequenceLogps, beta: torch.Tensor, arguments: AdaptiveRDPOArguments) -> LossOutput:
    return adaptive_rdpo_loss(
        *logps.referenced(),
        beta,
        alpha=arguments.alpha,
        chosen_lengths=logps.chosen_lengths,
        rejected_lengths=logps.rejected_lengths,
        clip=arguments.clip,
        k=arguments.k,
    )


register_loss(Loss("rdpo", _rdpo, dpo_margin, True, RDPOArguments))
register_loss(Loss("adaptive-rdpo", _adaptive_rdpo, dpo_margin, True, AdaptiveRDPOArguments))
