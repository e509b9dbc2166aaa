"""DPO's sigmoid loss and AdaDPO, its self-adaptive form (AdaDPO, Chen et al., eqs. 1, 4–7, 10)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from dualloop.losses.base import (
    ADADPO_SPACES,
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


def check_label_smoothing(label_smoothing: float) -> None:
    """Conservative DPO's ε: a number in [0, 0.5)."""
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, (int, float)):
        raise TypeError(f"label_smoothing must be a number in [0, 0.5), got {label_smoothing!r}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing!r}")


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
    size = check_referenced_logps(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    check_label_smoothing(label_smoothing)
    beta = as_beta(beta, size, policy_chosen_logps)
    chosen_logratio = policy_chosen_logps - ref_chosen_logps
    rejected_logratio = policy_rejected_logps - ref_rejected_logps
    logits = beta * (chosen_logratio - rejected_logratio)
    losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return LossOutput(losses, (beta * chosen_logratio).detach(), (beta * rejected_logratio).detach(), beta)


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
    size = check_referenced_logps(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    check_clip_and_k(clip, k)
    beta = as_beta(beta, size, policy_chosen_logps)
    chosen_lengths, rejected_lengths = check_lengths(
        size, chosen_lengths, rejected_lengths, policy_chosen_logps, required=False, method="adadpo_loss"
    )
    log_ratio = balance_log_ratio(
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


def dpo_margin(logps: SequenceLogps) -> torch.Tensor:
    """DPO's margin ``M = (πw − rw) − (πl − rl)``: what β multiplies inside the sigmoid loss."""
    chosen, rejected, ref_chosen, ref_rejected = logps.referenced()
    return (chosen - ref_chosen) - (rejected - ref_rejected)


@dataclass(frozen=True)
class DPOArguments:
    """The sigmoid loss's argument: TRL's ``label_smoothing`` (taken from the config unless given)."""

    label_smoothing: float = field(default=0.0, metadata={"help": "ε of conservative DPO, in [0, 0.5)."})

    def __post_init__(self) -> None:
        check_label_smoothing(self.label_smoothing)


@dataclass(frozen=True)
class AdaDPOArguments(SelfAdaptive):
    """AdaDPO's arguments: the ceiling C and scale k, the balance ratio's space, its length normalization."""

    space: str = field(default="ratio", metadata={"help": "The balance ratio: 'ratio' (eq. 5) or 'policy' (eq. 4)."})
    length_normalized: bool = field(
        default=True, metadata={"help": "Length-normalize the balance ratio ('Stable AdaDPO', eq. 10)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.space not in ADADPO_SPACES:
            raise ValueError(f"space must be one of {ADADPO_SPACES}, got {self.space!r}")


def _sigmoid(logps: SequenceLogps, beta: torch.Tensor, arguments: DPOArguments) -> LossOutput:
    return dpo_loss(*logps.referenced(), beta, label_smoothing=arguments.label_smoothing)


def _adadpo(logps: SequenceLogps, beta: torch.Tensor, arguments: AdaDPOArguments) -> LossOutput:
    normalized = arguments.length_normalized
    return adadpo_loss(
        *logps.referenced(),
        beta,
        space=arguments.space,
        chosen_lengths=logps.chosen_lengths if normalized else None,
        rejected_lengths=logps.rejected_lengths if normalized else None,
        clip=arguments.clip,
        k=arguments.k,
    )


register_loss(Loss("sigmoid", _sigmoid, dpo_margin, True, DPOArguments, from_config=("label_smoothing",)))
register_loss(Loss("adadpo", _adadpo, dpo_margin, True, AdaDPOArguments, method=True))
