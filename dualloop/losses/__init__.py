"""Preference losses as pure functions of summed log-probabilities, one module per family.

Each family module holds its base and self-adaptive forms, the margin it gives the controllers,
its arguments and its registration (:func:`register_loss`); :mod:`dualloop.losses.base` holds what
they share. The self-adaptive losses follow AdaDPO (Chen et al.): β_l = β and β_w = β·sg(ratio) with
the ratio of Table 2, computed in log space and clipped at the ceiling C (Listing 1). When response
lengths are given the ratio uses per-token averages ("Stable AdaDPO", eq. 10 with α = 1/|y|).

- :mod:`~dualloop.losses.dpo`: ``sigmoid`` (DPO) and ``adadpo``;
- :mod:`~dualloop.losses.ipo`: ``ipo`` and ``adaptive-ipo``;
- :mod:`~dualloop.losses.rdpo`: ``rdpo`` and ``adaptive-rdpo``;
- :mod:`~dualloop.losses.cpo`: ``cpo`` and ``adaptive-cpo``;
- :mod:`~dualloop.losses.orpo`: ``orpo`` and ``adaptive-orpo``;
- :mod:`~dualloop.losses.simpo`: ``simpo`` and ``adaptive-simpo``.
"""

from dualloop.losses.base import (
    LOSSES,
    Loss,
    LossOutput,
    NoArguments,
    SelfAdaptive,
    SequenceLogps,
    adaptive_coefficient,
    loss_entry,
    register_loss,
)

# isort: off
# (the registry lists the losses in this order)
from dualloop.losses.dpo import adadpo_loss, dpo_loss
from dualloop.losses.ipo import adaptive_ipo_loss, ipo_loss
from dualloop.losses.rdpo import adaptive_rdpo_loss, rdpo_loss
from dualloop.losses.cpo import adaptive_cpo_loss, cpo_loss
from dualloop.losses.orpo import adaptive_orpo_loss, orpo_loss
from dualloop.losses.simpo import adaptive_simpo_loss, simpo_loss
# isort: on

__all__ = [
    "LOSSES",
    "Loss",
    "LossOutput",
    "NoArguments",
    "SelfAdaptive",
    "SequenceLogps",
    "adadpo_loss",
    "adaptive_coefficient",
    "adaptive_cpo_loss",
    "adaptive_ipo_loss",
    "adaptive_orpo_loss",
    "adaptive_rdpo_loss",
    "adaptive_simpo_loss",
    "cpo_loss",
    "dpo_loss",
    "ipo_loss",
    "loss_entry",
    "orpo_loss",
    "rdpo_loss",
    "register_loss",
    "simpo_loss",
]
