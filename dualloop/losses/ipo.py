"""IPO (Azar et al. 2023, arXiv 2310.12036, eq. 17) on per-token averages, TRL's convention, and its
self-adaptive form (AdaDPO, Chen et al., Table 2)."""

from __future__ import annotations

from typing import Any

import torch

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


def ipo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float | torch.Tensor,
) -> LossOutput:
    """IPO (Azar et al. 2023, eq. 17) in TRL's convention: ``L_i = (M_i − 1/(2β_i))²``.

    β plays the role of IPO's τ. TRL feeds IPO per-token averaged log-probs; pass those here
    to match it.
    """
    size = check_referenced_logps(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    beta = as_beta(beta, size, policy_chosen_logps)
    chosen_logratio = policy_chosen_logps - ref_chosen_logps
    rejected_logratio = policy_rejected_logps - ref_rejected_logps
    losses = (chosen_logratio - rejected_logratio - 1 / (2 * beta)) ** 2
    return LossOutput(losses, (beta * chosen_logratio).detach(), (beta * rejected_logratio).detach(), beta)


def adaptive_ipo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float | torch.Tensor,
    *,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
    clip: float | None = 2.0,
    k: float = 1.0,
) -> LossOutput:
    """Self-adaptive IPO (AdaDPO, Chen et al., Table 2): ``(β_w log(P_w/R_w) − β_l log(P_l/R_l) − 1/(2τ))²``.

    IPO has no β, hence ``β_l = 1`` and ``β_w = min(k · sg(P_w R_l / (P_l R_w)), C)``; the
    controller's β is IPO's τ.
    """
    size = check_referenced_logps(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    check_clip_and_k(clip, k)
    tau = as_beta(beta, size, policy_chosen_logps)
    chosen_lengths, rejected_lengths = check_lengths(
        size, chosen_lengths, rejected_lengths, policy_chosen_logps, required=False, method="adaptive_ipo_loss"
    )
    log_ratio = balance_log_ratio(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        chosen_lengths,
        rejected_lengths,
        "ratio",
    )
    beta_chosen = adaptive_coefficient(log_ratio, clip, k)
    chosen_logratio = policy_chosen_logps - ref_chosen_logps
    rejected_logratio = policy_rejected_logps - ref_rejected_logps
    losses = (beta_chosen * chosen_logratio - rejected_logratio - 1 / (2 * tau)) ** 2
    return LossOutput(losses, (beta_chosen * chosen_logratio).detach(), rejected_logratio.detach(), beta_chosen)


def ipo_margin(logps: SequenceLogps) -> torch.Tensor:
    """DPO's margin on per-token averages: what the IPO losses compare with 1/(2τ)."""
    return dpo_margin(logps.averaged())


def _ipo(logps: SequenceLogps, beta: torch.Tensor, arguments: Any) -> LossOutput:
    return ipo_loss(*logps.averaged().referenced(), beta)


def _adaptive_ipo(logps: SequenceLogps, beta: torch.Tensor, arguments: SelfAdaptive) -> LossOutput:
    return adaptive_ipo_loss(*logps.averaged().referenced(), beta, clip=arguments.clip, k=arguments.k)


register_loss(Loss("ipo", _ipo, ipo_margin, True))
register_loss(Loss("adaptive-ipo", _adaptive_ipo, ipo_margin, True, SelfAdaptive))
