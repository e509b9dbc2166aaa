"""Preference losses as pure functions of summed log-probabilities.

Every loss takes the policy's and (where the method has one) the reference's summed
log-probabilities of the chosen and rejected responses, each a tensor ``[B]``, and a β that is
a float or a detached per-example tensor ``[B]`` (the controller's decision). It returns the
per-example losses and the implicit rewards computed with the β actually used; the trainer
averages. Notation: ``M = (πw − rw) − (πl − rl)``.

The self-adaptive losses follow AdaDPO (Chen et al.): β_l = β and β_w = β·sg(ratio) with the
ratio of Table 2, computed in log space and clipped at the ceiling C (Listing 1). When response
lengths are given the ratio uses per-token averages ("Stable AdaDPO", eq. 10 with α = 1/|y|).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "LossOutput",
    "dpo_loss",
    "ipo_loss",
    "adadpo_loss",
    "adaptive_ipo_loss",
    "rdpo_loss",
    "cpo_loss",
    "orpo_loss",
    "simpo_loss",
    "adaptive_rdpo_loss",
    "adaptive_cpo_loss",
    "adaptive_orpo_loss",
    "adaptive_simpo_loss",
]

ADADPO_SPACES = ("ratio", "policy")


@dataclass(frozen=True)
class LossOutput:
    """Per-example losses and implicit rewards, each ``[B]``.

    ``chosen_rewards``/``rejected_rewards`` are detached and use the β that entered the loss
    (β_w on the chosen side for the self-adaptive losses); ``chosen_beta`` is that β_w (equal to
    β for the plain losses), so a log can report the coefficient actually applied.
    """

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    chosen_beta: torch.Tensor


# ---------------------------------------------------------------- validation helpers


def _check_logps(**named: torch.Tensor | None) -> int:
    """All given log-prob tensors are 1-D, floating, and of one length; returns that length."""
    size = None
    for name, value in named.items():
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape [B], got {type(value).__name__}")
        if value.dim() != 1 or not value.is_floating_point():
            raise ValueError(
                f"{name} must be a 1-D floating tensor [B], got shape {tuple(value.shape)} and dtype {value.dtype}"
            )
        if size is None:
            size = value.shape[0]
        elif value.shape[0] != size:
            raise ValueError(f"{name} has {value.shape[0]} examples but the other log-probs have {size}")
    return size or 0


def _as_beta(beta: float | torch.Tensor, size: int, like: torch.Tensor, name: str = "beta") -> torch.Tensor:
    """β as a detached tensor [B]; rejects β ≤ 0, NaN/inf and a wrong shape."""
    if isinstance(beta, torch.Tensor):
        if beta.dim() == 0:
            beta = beta.reshape(1).expand(size)
        if beta.shape != (size,):
            raise ValueError(f"{name} must be a float or a tensor of shape [{size}], got shape {tuple(beta.shape)}")
        beta = beta.detach().to(dtype=like.dtype, device=like.device)
    elif isinstance(beta, (int, float)) and not isinstance(beta, bool):
        beta = torch.full((size,), float(beta), dtype=like.dtype, device=like.device)
    else:
        raise TypeError(f"{name} must be a float or a tensor [B], got {type(beta).__name__}")
    if not torch.isfinite(beta).all() or (beta <= 0).any():
        raise ValueError(f"{name} must be finite and > 0, got {beta.tolist()}")
    return beta


def _check_lengths(size: int, chosen_lengths, rejected_lengths, like: torch.Tensor, *, required: bool, method: str):
    """Response lengths in tokens, both or neither; returns float tensors like ``like`` or (None, None)."""
    if chosen_lengths is None and rejected_lengths is None:
        if required:
            raise ValueError(f"{method} needs chosen_lengths and rejected_lengths (tokens per response)")
        return None, None
    if chosen_lengths is None or rejected_lengths is None:
        raise ValueError("chosen_lengths and rejected_lengths must be given together (or neither)")
    out = []
    for name, lengths in (("chosen_lengths", chosen_lengths), ("rejected_lengths", rejected_lengths)):
        lengths = torch.as_tensor(lengths)
        if lengths.shape != (size,):
            raise ValueError(f"{name} must have shape [{size}], got {tuple(lengths.shape)}")
        if (lengths <= 0).any():
            raise ValueError(f"{name} must be positive token counts, got {lengths.tolist()}")
        out.append(lengths.detach().to(dtype=like.dtype, device=like.device))
    return out[0], out[1]


def _check_positive(name: str, value: float | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0{' or None' if allow_none else ''}, got {value!r}")


def _check_clip_and_k(clip: float | None, k: float) -> None:
    """The ceiling C (or None) and the scale k of the self-adaptive coefficient are finite and > 0."""
    _check_positive("clip", clip, allow_none=True)
    _check_positive("k", k)


def adaptive_coefficient(log_ratio: torch.Tensor, clip: float | None, k: float) -> torch.Tensor:
    """``min(k · exp(sg(log_ratio)), C)`` computed in log space (AdaDPO, Chen et al., eq. 6, Listing 1, A.3).

    ``clip=None`` removes the ceiling. The result carries no gradient.
    """
    log_coefficient = log_ratio.detach() + math.log(k)
    if clip is not None:
        log_coefficient = torch.clamp(log_coefficient, max=math.log(clip))
    return torch.exp(log_coefficient)


# ---------------------------------------------------------------- DPO and IPO


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float | torch.Tensor,
    *,
    label_smoothing: float = 0.0,
) -> LossOutput:
    """DPO's sigmoid loss (Rafailov et al. 2023, eq. 7; AdaDPO (Chen et al.) eq. 1).

    ``L_i = −(1−ε) log σ(β_i M_i) − ε log σ(−β_i M_i)`` with ``ε = label_smoothing`` (the
    conservative-DPO form; ε = 0 is plain DPO).
    """
    size = _check_logps(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing!r}")
    beta = _as_beta(beta, size, policy_chosen_logps)
    chosen_logratio = policy_chosen_logps - ref_chosen_logps
    rejected_logratio = policy_rejected_logps - ref_rejected_logps
    logits = beta * (chosen_logratio - rejected_logratio)
    losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return LossOutput(losses, (beta * chosen_logratio).detach(), (beta * rejected_logratio).detach(), beta)


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
    size = _check_logps(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    beta = _as_beta(beta, size, policy_chosen_logps)
    chosen_logratio = policy_chosen_logps - ref_chosen_logps
    rejected_logratio = policy_rejected_logps - ref_rejected_logps
    losses = (chosen_logratio - rejected_logratio - 1 / (2 * beta)) ** 2
    return LossOutput(losses, (beta * chosen_logratio).detach(), (beta * rejected_logratio).detach(), beta)


# ---------------------------------------------------------------- AdaDPO and its Table 2 family


def _balance_log_ratio(
    policy_chosen, policy_rejected, ref_chosen, ref_rejected, chosen_lengths, rejected_lengths, space: str
) -> torch.Tensor:
    """``ℓ = log(P_w R_l / (P_l R_w))`` (ratio space, eq. 5) or ``log(P_w / P_l)`` (policy space,
    eq. 4), per token when lengths are given (eq. 10 with α = 1/|y|)."""
    if space not in ADADPO_SPACES:
        raise ValueError(f"space must be one of {ADADPO_SPACES}, got {space!r}")
    chosen, rejected = policy_chosen, policy_rejected
    if space == "ratio":
        chosen, rejected = chosen - ref_chosen, rejected - ref_rejected
    if chosen_lengths is not None:
        chosen, rejected = chosen / chosen_lengths, rejected / rejected_lengths
    return chosen - rejected


def adadpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float | torch.Tensor,
    *,
    chosen_lengths: torch.Tensor | None = None,
    rejected_lengths: torch.Tensor | None = None,
    clip: float | None = 2.0,
    space: str = "ratio",
    k: float = 1.0,
) -> LossOutput:
    """AdaDPO (Chen et al., eq. 7, Listing 1): ``−log σ(β_w (πw − rw) − β_l (πl − rl))``.

    ``β_l = β`` and ``β_w = β · min(k · exp(sg(ℓ)), C)`` where ℓ is the log balance ratio:
    ratio space ``πw − πl − rw + rl`` (eq. 5) or policy space ``πw − πl`` (eq. 4), each
    length-normalized ("Stable AdaDPO", eq. 10) exactly when lengths are given. ``clip`` is the
    ceiling C (None: no ceiling); ``k`` the optional bias of Appendix A.3.
    """
    size = _check_logps(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    _check_clip_and_k(clip, k)
    beta = _as_beta(beta, size, policy_chosen_logps)
    chosen_lengths, rejected_lengths = _check_lengths(
        size, chosen_lengths, rejected_lengths, policy_chosen_logps, required=False, method="adadpo_loss"
    )
    log_ratio = _balance_log_ratio(
        policy_chosen_logps,
        policy_rejected_logps,
        ref_chosen_logps,
        ref_rejected_logps,
        chosen_lengths,
        rejected_lengths,
        space,
    )
    beta_chosen = beta * adaptive_coefficient(log_ratio, clip, k)
    chosen_logratio = policy_chosen_logps - ref_chosen_logps
    rejected_logratio = policy_rejected_logps - ref_rejected_logps
    losses = -F.logsigmoid(beta_chosen * chosen_logratio - beta * rejected_logratio)
    return LossOutput(
        losses, (beta_chosen * chosen_logratio).detach(), (beta * rejected_logratio).detach(), beta_chosen
    )


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
    size = _check_logps(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    _check_clip_and_k(clip, k)
    tau = _as_beta(beta, size, policy_chosen_logps)
    chosen_lengths, rejected_lengths = _check_lengths(
        size, chosen_lengths, rejected_lengths, policy_chosen_logps, required=False, method="adaptive_ipo_loss"
    )
    log_ratio = _balance_log_ratio(
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
    size = _check_logps(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    _check_alpha(alpha)
    beta = _as_beta(beta, size, policy_chosen_logps)
    chosen_lengths, rejected_lengths = _check_lengths(
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
    size = _check_logps(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    _check_clip_and_k(clip, k)
    _check_alpha(alpha)
    beta = _as_beta(beta, size, policy_chosen_logps)
    chosen_lengths, rejected_lengths = _check_lengths(
        size, chosen_lengths, rejected_lengths, policy_chosen_logps, required=True, method="adaptive_rdpo_loss"
    )
    log_ratio = _balance_log_ratio(
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
    size = _check_logps(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps)
    beta = _as_beta(beta, size, policy_chosen_logps)
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
    size = _check_logps(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps)
    _check_clip_and_k(clip, k)
    beta = _as_beta(beta, size, policy_chosen_logps)
    beta_chosen = beta * adaptive_coefficient(policy_chosen_logps - policy_rejected_logps, clip, k)
    return _cpo_core(policy_chosen_logps, policy_rejected_logps, beta, beta_chosen)


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
    size = _check_logps(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps)
    chosen_lengths, rejected_lengths = _check_lengths(
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
    beta = _as_beta(beta, chosen.shape[0], policy_chosen_logps)
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
    _check_clip_and_k(clip, k)
    chosen, rejected = _orpo_log_probs(
        policy_chosen_logps, policy_rejected_logps, chosen_lengths, rejected_lengths, "adaptive_orpo_loss"
    )
    beta = _as_beta(beta, chosen.shape[0], policy_chosen_logps)
    log_complement_chosen = torch.log1p(-torch.exp(chosen))
    log_complement_rejected = torch.log1p(-torch.exp(rejected))
    log_ratio = chosen + log_complement_chosen - rejected - log_complement_rejected
    beta_chosen = beta * adaptive_coefficient(log_ratio, clip, k)
    return _orpo_core(chosen, rejected, beta, beta_chosen)


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
    size = _check_logps(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps)
    _check_gamma(gamma)
    beta = _as_beta(beta, size, policy_chosen_logps)
    chosen_lengths, rejected_lengths = _check_lengths(
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
    size = _check_logps(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps)
    _check_clip_and_k(clip, k)
    _check_gamma(gamma)
    beta = _as_beta(beta, size, policy_chosen_logps)
    chosen_lengths, rejected_lengths = _check_lengths(
        size, chosen_lengths, rejected_lengths, policy_chosen_logps, required=True, method="adaptive_simpo_loss"
    )
    log_ratio = (torch.log(chosen_lengths) + policy_chosen_logps) - (
        torch.log(rejected_lengths) + policy_rejected_logps
    )
    beta_chosen = beta * adaptive_coefficient(log_ratio, clip, k)
    return _simpo_core(
        policy_chosen_logps, policy_rejected_logps, beta, beta_chosen, chosen_lengths, rejected_lengths, gamma
    )
