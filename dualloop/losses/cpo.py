"""CPO's preference term (Xu et al. 2024, arXiv 2401.08417) and its self-adaptive form (AdaDPO, Chen et al.,
Table 2); reference-free."""

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
    check_logps,
    register_loss,
)


def _cpo_core(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    beta: torch.Tensor,
    beta_chosen: torch.Tensor,
) -> LossOutput:
    """``−log σ(β_w log P_w − β log P_l)`` on validated inputs."""
    chosen_reward = beta_chosen * policy_chosen_logps
    rejected_reward = beta * policy_rejected_logps
    losses = -F.logsigmoid(chosen_reward - rejected_reward)
    return LossOutput(losses, chosen_reward.detach(), rejected_reward.detach(), beta_chosen)


def cpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    beta: float | torch.Tensor,
) -> LossOutput:
    """CPO's preference term L_prefer (Xu et al. 2024, "Contrastive Preference Optimization", arXiv 2401.08417;
    AdaDPO (Chen et al.) Table 2 with β_w = β_l = β), reference-free: ``−log σ(β log P_w − β log P_l)``.

    The NLL term of CPO's full objective is not included. Equals TRL's ``CPOTrainer.cpo_loss`` with
    ``loss_type="sigmoid"``, ``label_smoothing=0`` and ``alpha=0`` on the same summed log-probs.
    """
    size = check_logps(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps)
    beta = as_beta(beta, size, policy_chosen_logps)
    return _cpo_core(policy_chosen_logps, policy_rejected_logps, beta, beta)


def adaptive_cpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    beta: float | torch.Tensor,
    *,
    clip: float | None = 2.0,
    k: float = 1.0,
) -> LossOutput:
    """Self-adaptive CPO (AdaDPO, Chen et al., Table 2; Xu et al. 2024), reference-free:
    ``−log σ(β_w log P_w − β_l log P_l)`` with ``β_l = β``, ``β_w = β · min(k · sg(P_w/P_l), C)``."""
    size = check_logps(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps)
    check_clip_and_k(clip, k)
    beta = as_beta(beta, size, policy_chosen_logps)
    beta_chosen = beta * adaptive_coefficient(policy_chosen_logps - policy_rejected_logps, clip, k)
    return _cpo_core(policy_chosen_logps, policy_rejected_logps, beta, beta_chosen)


def cpo_margin(logps: SequenceLogps) -> torch.Tensor:
    """``πw − πl``: what β multiplies inside CPO's loss."""
    return logps.policy_chosen - logps.policy_rejected


def _cpo(logps: SequenceLogps, beta: torch.Tensor, arguments: Any) -> LossOutput:
    return cpo_loss(logps.policy_chosen, logps.policy_rejected, beta)


def _adaptive_cpo(logps: SequenceLogps, beta: torch.Tensor, arguments: SelfAdaptive) -> LossOutput:
    return adaptive_cpo_loss(logps.policy_chosen, logps.policy_rejected, beta, clip=arguments.clip, k=arguments.k)


register_loss(Loss("cpo", _cpo, cpo_margin, False))
register_loss(Loss("adaptive-cpo", _adaptive_cpo, cpo_margin, False, SelfAdaptive))
