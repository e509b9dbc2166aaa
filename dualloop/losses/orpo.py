"""ORPO in AdaDPO's Table 2 form (Hong et al. 2024, arXiv 2403.07691) and its self-adaptive form; reference-free."""

from __future__ import annotations

from typing import Any

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


def _log_odds(logps: torch.Tensor) -> torch.Tensor:
    """``log(P / (1 − P))`` from ``log P`` (< 0), stably: ``log P − log1p(−exp(log P))``."""
    return logps - torch.log1p(-torch.exp(logps))


def _orpo_log_probs(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor | None,
    rejected_lengths: torch.Tensor | None,
    method: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``log P`` of each side as ORPO uses it: per token when lengths are given; checked < 0."""
    size = check_logps(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps)
    chosen_lengths, rejected_lengths = check_lengths(
        size, chosen_lengths, rejected_lengths, policy_chosen_logps, required=False, method=method
    )
    chosen, rejected = policy_chosen_logps, policy_rejected_logps
    if chosen_lengths is not None:
        chosen, rejected = chosen / chosen_lengths, rejected / rejected_lengths
    if (chosen >= 0).any() or (rejected >= 0).any():
        raise ValueError(f"{method} needs log-probabilities < 0 (probabilities below 1)")
    return chosen, rejected


def _orpo_core(
    chosen: torch.Tensor, rejected: torch.Tensor, beta: torch.Tensor, beta_chosen: torch.Tensor
) -> LossOutput:
    """``−[log P_w + log σ(β_w log(P_w/(1−P_w)) − β log(P_l/(1−P_l)))]`` on checked ``log P`` (< 0)."""
    chosen_log_odds, rejected_log_odds = _log_odds(chosen), _log_odds(rejected)
    losses = -(chosen + F.logsigmoid(beta_chosen * chosen_log_odds - beta * rejected_log_odds))
    return LossOutput(
        losses, (beta_chosen * chosen_log_odds).detach(), (beta * rejected_log_odds).detach(), beta_chosen
    )


def orpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    beta: float | torch.Tensor,
    *,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
) -> LossOutput:
    """ORPO in AdaDPO's Table 2 form (Chen et al., Table 2 with β_w = β_l = β; Hong et al. 2024, "ORPO:
    Monolithic Preference Optimization without Reference Model", arXiv 2403.07691, L_SFT + L_OR),
    reference-free: ``−[log P_w + log σ(β log(P_w/(1−P_w)) − β log(P_l/(1−P_l)))]``.

    As in ORPO, P is the per-token average probability when lengths are given
    (``log P = summed log-prob / |y|``); without lengths the log-probs are used as given.

    ORPO itself (and TRL's ``ORPOTrainer``) puts the weight λ outside the log-sigmoid,
    ``−log P_w − λ log σ(log odds_w − log odds_l)``; Table 2 puts β inside. The odds-ratio terms coincide
    at β = λ = 1 (``losses + log P_w == −odds_ratio_loss(...)[0]`` on per-token average log-probs) and
    differ otherwise. TRL's NLL term is a token-level cross-entropy over the batch computed apart from
    ``odds_ratio_loss``; here it is the per-example ``−log P_w``. The rewards here are the β-weighted log
    odds, not TRL's β-weighted log-probs.
    """
    chosen, rejected = _orpo_log_probs(
        policy_chosen_logps, policy_rejected_logps, chosen_lengths, rejected_lengths, "orpo_loss"
    )
    beta = as_beta(beta, chosen.shape[0], policy_chosen_logps)
    return _orpo_core(chosen, rejected, beta, beta)


def adaptive_orpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    beta: float | torch.Tensor,
    *,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
    clip: float | None = 2.0,
    k: float = 1.0,
) -> LossOutput:
    """Self-adaptive ORPO (AdaDPO, Chen et al., Table 2; Hong et al. 2024), reference-free:
    ``−[log P_w + log σ(β_w log(P_w/(1−P_w)) − β_l log(P_l/(1−P_l)))]`` with ``β_l = β`` and
    ``β_w = β · min(k · sg(P_w(1−P_w) / (P_l(1−P_l))), C)``.

    As in ORPO, P is the per-token average probability when lengths are given
    (``log P = summed log-prob / |y|``); without lengths the summed log-probs are used as given.
    """
    check_clip_and_k(clip, k)
    chosen, rejected = _orpo_log_probs(
        policy_chosen_logps, policy_rejected_logps, chosen_lengths, rejected_lengths, "adaptive_orpo_loss"
    )
    beta = as_beta(beta, chosen.shape[0], policy_chosen_logps)
    log_complement_chosen = torch.log1p(-torch.exp(chosen))
    log_complement_rejected = torch.log1p(-torch.exp(rejected))
    log_ratio = chosen + log_complement_chosen - rejected - log_complement_rejected
    beta_chosen = beta * adaptive_coefficient(log_ratio, clip, k)
    return _orpo_core(chosen, rejected, beta, beta_chosen)


def orpo_margin(logps: SequenceLogps) -> torch.Tensor:
    """``log(P_w/(1−P_w)) − log(P_l/(1−P_l))`` with P the per-token average probability (ORPO's odds)."""
    averaged = logps.averaged()
    return _log_odds(averaged.policy_chosen) - _log_odds(averaged.policy_rejected)


def _orpo(logps: SequenceLogps, beta: torch.Tensor, arguments: Any) -> LossOutput:
    return orpo_loss(
        logps.policy_chosen,
        logps.policy_rejected,
        beta,
        chosen_lengths=logps.chosen_lengths,
        rejected_lengths=logps.rejected_lengths,
    )


def _adaptive_orpo(logps: SequenceLogps, beta: torch.Tensor, arguments: SelfAdaptive) -> LossOutput:
    return adaptive_orpo_loss(
        logps.policy_chosen,
        logps.policy_rejected,
        beta,
        chosen_lengths=logps.chosen_lengths,
        rejected_lengths=logps.rejected_lengths,
        clip=arguments.clip,
        k=arguments.k,
    )


register_loss(Loss("orpo", _orpo, orpo_margin, False))
register_loss(Loss("adaptive-orpo", _adaptive_orpo, orpo_margin, False, SelfAdaptive))
