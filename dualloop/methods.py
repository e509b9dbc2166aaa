"""The methods ``--method`` and ``Experiment.train`` take, read from the registries.

A method is a β controller and the loss it uses unless the run sets ``training.loss_type``: every
registered controller (:data:`dualloop.controllers.CONTROLLERS`) with DPO's loss, then every loss
registered as a method (:data:`dualloop.losses.LOSSES`, e.g. ``adadpo``) with a static β; such a
method is its loss. :func:`dualloop.trainer.method_settings` checks a run's settings against it.
"""

from __future__ import annotations

from dualloop.controllers import CONTROLLERS
from dualloop.losses import LOSSES

__all__ = ["DEFAULT_LOSS", "methods"]

DEFAULT_LOSS = "sigmoid"


def methods() -> dict[str, dict[str, str]]:
    """Method name -> ``{"controller", "loss_type"}``, in registry order."""
    table = {name: {"controller": name, "loss_type": DEFAULT_LOSS} for name in CONTROLLERS}
    for name, entry in LOSSES.items():
        if entry.method and name not in table:
            table[name] = {"controller": "static", "loss_type": name}
    return table
