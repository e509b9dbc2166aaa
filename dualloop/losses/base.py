"""What every loss shares: its output, the checks of its inputs, AdaDPO's balancing coefficient, the registry.

Every loss is a pure function of summed log-probabilities: the policy's and (where the method has one)
the reference's summed log-probabilities of the chosen and rejected responses, each a tensor ``[B]``,
and a β that is a float or a detached per-example tensor ``[B]`` (the controller's decision). It
returns the per-example losses and the implicit rewards computed with the β actually used; the
trainer averages. Notation: ``M = (πw − rw) − (πl − rl)``.

A loss the trainer can optimise is a :class:`Loss` registered under its ``training.loss_type`` name
(:func:`register_loss`, :data:`LOSSES`): the loss on a micro-batch's :class:`SequenceLogps`, the
margin it gives the controllers (the quantity β multiplies inside the loss), whether it needs the
reference, and its arguments (a dataclass filled from ``training.loss_kwargs``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from dualloop.names import did_you_mean, same_definition, unknown_choice

__all__ = [
    "ADADPO_SPACES",
    "LOSSES",
    "Loss",
    "LossOutput",
    "NoArguments",
    "SelfAdaptive",
    "SequenceLogps",
    "adaptive_coefficient",
    "as_beta",
    "balance_log_ratio",
    "check_clip_and_k",
    "check_lengths",
    "check_logps",
    "check_referenced_logps",
    "check_positive",
    "loss_entry",
    "register_loss",
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


# ---------------------------------------------------------------- checks of the inputs


def check_logps(**named: torch.Tensor | None) -> int:
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


def check_referenced_logps(
    policy_chosen_logps: torch.Tensor | None,
    policy_rejected_logps: torch.Tensor | None,
    ref_chosen_logps: torch.Tensor | None,
    ref_rejected_logps: torch.Tensor | None,
) -> int:
    """:func:`check_logps` of a reference-based loss's four log-prob tensors, each named as its argument."""
    return check_logps(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )


def as_beta(beta: float | torch.Tensor, size: int, like: torch.Tensor, name: str = "beta") -> torch.Tensor:
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


def check_lengths(size: int, chosen_lengths, rejected_lengths, like: torch.Tensor, *, required: bool, method: str):
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


def check_positive(name: str, value: float | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0{' or None' if allow_none else ''}, got {value!r}")


def check_clip_and_k(clip: float | None, k: float) -> None:
    """The ceiling C (or None) and the scale k of the self-adaptive coefficient are finite and > 0."""
    check_positive("clip", clip, allow_none=True)
    check_positive("k", k)


def adaptive_coefficient(log_ratio: torch.Tensor, clip: float | None, k: float) -> torch.Tensor:
    """``min(k · exp(sg(log_ratio)), C)`` computed in log space (AdaDPO, Chen et al., eq. 6, Listing 1, A.3).

    ``clip=None`` removes the ceiling. The result carries no gradient.
    """
    log_coefficient = log_ratio.detach() + math.log(k)
    if clip is not None:
        log_coefficient = torch.clamp(log_coefficient, max=math.log(clip))
    return torch.exp(log_coefficient)


def balance_log_ratio(
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


# ---------------------------------------------------------------- what the trainer feeds a loss


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

    def referenced(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(πw, πl, rw, rl): the first four arguments of a reference-based loss."""
        if self.ref_chosen is None or self.ref_rejected is None:
            raise ValueError("this loss needs the reference's log-probs, but no reference forward ran")
        return self.policy_chosen, self.policy_rejected, self.ref_chosen, self.ref_rejected


# ---------------------------------------------------------------- arguments and the registry


@dataclass(frozen=True)
class NoArguments:
    """A loss without arguments of its own."""


@dataclass(frozen=True)
class SelfAdaptive:
    """The arguments every self-adaptive loss shares (AdaDPO, Chen et al., eq. 6, Listing 1, A.3)."""

    clip: float | None = field(
        default=2.0, metadata={"help": "The ceiling C on the chosen-side coefficient (> 0); None removes it."}
    )
    k: float = field(default=1.0, metadata={"help": "The coefficient's optional scale k (> 0, Appendix A.3)."})

    def __post_init__(self) -> None:
        check_clip_and_k(self.clip, self.k)


@dataclass(frozen=True)
class Loss:
    """A loss of the trainer, under its ``training.loss_type`` name.

    ``loss(logps, beta, arguments)``: per-example losses of a micro-batch; ``margin(logps)``: what β
    multiplies inside it, which β-DPO filters on and DualLoop's fast loop turns into the entropy of
    ``σ(β M)``; ``needs_reference``: whether the reference forward must run; ``arguments``: a frozen
    dataclass of its arguments, built from ``training.loss_kwargs`` and checked in its ``__post_init__``;
    ``from_config``: arguments filled from the ``AdaptiveDPOConfig`` field of the same name unless
    ``loss_kwargs`` gives them (TRL's ``label_smoothing``); ``method``: also a ``--method`` of that name
    (static β with this loss, as AdaDPO is).
    """

    name: str
    loss: Callable[[SequenceLogps, torch.Tensor, Any], LossOutput]
    margin: Callable[[SequenceLogps], torch.Tensor]
    needs_reference: bool
    arguments: type = NoArguments
    from_config: tuple[str, ...] = ()
    method: bool = False

    def argument_names(self) -> list[str]:
        """The names of the loss's arguments (its arguments dataclass's fields)."""
        return [f.name for f in dataclasses.fields(self.arguments)]

    def build_arguments(self, loss_kwargs: Mapping[str, Any] | None, config: Mapping[str, Any] | None = None) -> Any:
        """The loss's arguments from ``loss_kwargs`` and, for ``from_config``, the training settings
        ``config``; a key that is not one of its arguments, or a value its dataclass refuses, is one
        error naming ``training.loss_kwargs``."""
        accepted = self.argument_names()
        kwargs = dict(loss_kwargs or {})
        for key in kwargs:
            if key not in accepted:
                takes = f"; it takes {', '.join(accepted)}" if accepted else "; it takes none"
                raise ValueError(
                    f"training.loss_kwargs.{key}: not an argument of the {self.name!r} loss{did_you_mean(key, accepted)}"
                    + takes
                )
        for name in self.from_config:
            if config is not None and config.get(name) is not None and name not in kwargs:
                kwargs[name] = config[name]
        try:
            return self.arguments(**kwargs)
        except (ValueError, TypeError) as error:
            raise type(error)(f"training.loss_kwargs of the {self.name!r} loss: {error}") from None


LOSSES: dict[str, Loss] = {}


def register_loss(entry: Loss, *, replace: bool = False) -> Loss:
    """Add ``entry`` to :data:`LOSSES` under ``entry.name``; from then on ``training.loss_type: <name>``
    trains with it (and, with ``entry.method``, ``--method <name>``). A taken name is an error unless ``replace``."""
    if not isinstance(entry, Loss):
        raise TypeError(f"register_loss needs a Loss(...), got {entry!r}")
    if not entry.name:
        raise ValueError("a Loss needs a name: its training.loss_type")
    taken = LOSSES.get(entry.name)
    if taken is not None and taken is not entry and not replace and not same_definition(entry.loss, taken.loss):
        raise ValueError(f"loss name {entry.name!r} is taken; choose another or pass replace=True")
    if not dataclasses.is_dataclass(entry.arguments):
        raise TypeError(f"Loss {entry.name!r}: arguments must be a dataclass, got {entry.arguments!r}")
    LOSSES[entry.name] = entry
    return entry


def loss_entry(name: str) -> Loss:
    """The registered loss ``name``; an unknown name is one error listing the known ones."""
    if name not in LOSSES:
        raise unknown_choice("training.loss_type", name, LOSSES)
    return LOSSES[name]
