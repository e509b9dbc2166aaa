"""The losses the trainer can optimise, by ``training.loss_type``, and the margin each gives the controllers.

Every entry maps a micro-batch's summed log-probabilities (:class:`SequenceLogps`) and the
controller's per-example β to :class:`dualloop.losses.LossOutput`. Its ``margin`` is the quantity β
multiplies inside the loss (for the reference-based losses DPO's ``M = (πw − rw) − (πl − rl)``, on
per-token averages for IPO, which compares it with 1/(2τ); for CPO ``πw − πl``, SimPO
``πw/|yw| − πl/|yl|``, ORPO the log odds ratio), which β-DPO filters on and
DualLoop's fast loop turns into the entropy of ``σ(β M)``. Reference-free losses (CPO, ORPO, SimPO and
their self-adaptive versions) need no reference forward unless the controller or the logging does.

The base forms and the self-adaptive ones are those of AdaDPO (Chen et al., Table 2) with
``β_w = β_l = β`` for the base forms; the IPO pair is computed on per-token averaged log-probs, TRL's
IPO convention, so that the base and the self-adaptive IPO differ only in β_w.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from dualloop import losses

if TYPE_CHECKING:
    from dualloop.trainer.arguments import AdaptiveDPOConfig

__all__ = ["LOSSES", "Objective", "SequenceLogps"]


@dataclass(frozen=True)
class SequenceLogps:
    """Summed log-probs ``[B]`` of a micro-batch's chosen and rejected responses, and their lengths in tokens.
    The reference's are None when no reference forward ran."""

    policy_chosen: torch.Tensor
    policy_rejected: torch.Tensor
    ref_chosen: torch.Tensor | None
    ref_rejected: torch.Tensor | None
    chosen_lengths: torch.Tensor
    rejected_lengths: torch.Tensor

    def averaged(self) -> SequenceLogps:
        """Per-token averages of every log-prob (lengths unchanged)."""

        def mean(logps, lengths):
            return None if logps is None else logps / lengths

        return SequenceLogps(
            mean(self.policy_chosen, self.chosen_lengths),
            mean(self.policy_rejected, self.rejected_lengths),
            mean(self.ref_chosen, self.chosen_lengths),
            mean(self.ref_rejected, self.rejected_lengths),
            self.chosen_lengths,
            self.rejected_lengths,
        )


LossFunction = Callable[[SequenceLogps, torch.Tensor, "AdaptiveDPOConfig"], losses.LossOutput]


@dataclass(frozen=True)
class Objective:
    """A loss of the trainer: whether it needs the reference, the loss, the controllers' margin."""

    needs_reference: bool
    loss: LossFunction
    margin: Callable[[SequenceLogps], torch.Tensor]


def _referenced(logps: SequenceLogps) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return logps.policy_chosen, logps.policy_rejected, logps.ref_chosen, logps.ref_rejected


def _lengths(logps: SequenceLogps) -> dict[str, torch.Tensor]:
    return {"chosen_lengths": logps.chosen_lengths, "rejected_lengths": logps.rejected_lengths}


def _adaptive(args: AdaptiveDPOConfig) -> dict[str, float | None]:
    return {"clip": args.adadpo_clip, "k": args.adadpo_k}


def _dpo_margin(logps: SequenceLogps) -> torch.Tensor:
    return (logps.policy_chosen - logps.ref_chosen) - (logps.policy_rejected - logps.ref_rejected)


def _ipo_margin(logps: SequenceLogps) -> torch.Tensor:
    """DPO's margin on per-token averages: what the IPO losses compare with 1/(2τ)."""
    return _dpo_margin(logps.averaged())


def _cpo_margin(logps: SequenceLogps) -> torch.Tensor:
    return logps.policy_chosen - logps.policy_rejected


def _simpo_margin(logps: SequenceLogps) -> torch.Tensor:
    return logps.policy_chosen / logps.chosen_lengths - logps.policy_rejected / logps.rejected_lengths


def _orpo_margin(logps: SequenceLogps) -> torch.Tensor:
    """``log(P_w/(1−P_w)) − log(P_l/(1−P_l))`` with P the per-token average probability (ORPO's odds)."""
    averaged = logps.averaged()
    chosen, rejected = averaged.policy_chosen, averaged.policy_rejected
    return (chosen - torch.log1p(-torch.exp(chosen))) - (rejected - torch.log1p(-torch.exp(rejected)))


def _adadpo(logps: SequenceLogps, beta: torch.Tensor, args: AdaptiveDPOConfig) -> losses.LossOutput:
    lengths = _lengths(logps) if args.adadpo_length_normalized else {}
    return losses.adadpo_loss(*_referenced(logps), beta, space=args.adadpo_space, **lengths, **_adaptive(args))


LOSSES: dict[str, Objective] = {
    "sigmoid": Objective(
        True,
        lambda logps, beta, args: losses.dpo_loss(*_referenced(logps), beta, label_smoothing=args.label_smoothing),
        _dpo_margin,
    ),
    "ipo": Objective(
        True, lambda logps, beta, args: losses.ipo_loss(*_referenced(logps.averaged()), beta), _ipo_margin
    ),
    "adadpo": Objective(True, _adadpo, _dpo_margin),
    "rdpo": Objective(
        True,
        lambda logps, beta, args: losses.rdpo_loss(*_referenced(logps), beta, alpha=args.rdpo_alpha, **_lengths(logps)),
        _dpo_margin,
    ),
    "cpo": Objective(
        False, lambda logps, beta, args: losses.cpo_loss(logps.policy_chosen, logps.policy_rejected, beta), _cpo_margin
    ),
    "orpo": Objective(
        False,
        lambda logps, beta, args: losses.orpo_loss(logps.policy_chosen, logps.policy_rejected, beta, **_lengths(logps)),
        _orpo_margin,
    ),
    "simpo": Objective(
        False,
        lambda logps, beta, args: losses.simpo_loss(
            logps.policy_chosen, logps.policy_rejected, beta, gamma=args.simpo_gamma, **_lengths(logps)
        ),
        _simpo_margin,
    ),
    "adaptive-ipo": Objective(
        True,
        lambda logps, beta, args: losses.adaptive_ipo_loss(*_referenced(logps.averaged()), beta, **_adaptive(args)),
        _ipo_margin,
    ),
    "adaptive-rdpo": Objective(
        True,
        lambda logps, beta, args: losses.adaptive_rdpo_loss(
            *_referenced(logps), beta, alpha=args.rdpo_alpha, **_lengths(logps), **_adaptive(args)
        ),
        _dpo_margin,
    ),
    "adaptive-cpo": Objective(
        False,
        lambda logps, beta, args: losses.adaptive_cpo_loss(
            logps.policy_chosen, logps.policy_rejected, beta, **_adaptive(args)
        ),
        _cpo_margin,
    ),
    "adaptive-orpo": Objective(
        False,
        lambda logps, beta, args: losses.adaptive_orpo_loss(
            logps.policy_chosen, logps.policy_rejected, beta, **_lengths(logps), **_adaptive(args)
        ),
        _orpo_margin,
    ),
    "adaptive-simpo": Objective(
        False,
        lambda logps, beta, args: losses.adaptive_simpo_loss(
            logps.policy_chosen,
            logps.policy_rejected,
            beta,
            gamma=args.simpo_gamma,
            **_lengths(logps),
            **_adaptive(args),
        ),
        _simpo_margin,
    ),
}
