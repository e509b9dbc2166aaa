"""The methods ``--method`` and ``Experiment.train`` take, read from the registries.

A method is a β controller and the loss it uses unless the run sets ``training.loss_type``: every
registered controller (:data:`dualloop.controllers.CONTROLLERS`) with DPO's loss, then every loss
registered as a method (:data:`dualloop.losses.LOSSES`, e.g. ``adadpo``) with a static β; such a
method is its loss. :func:`dualloop.trainer.method_settings` checks a run's settings against it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dualloop.controllers import CONTROLLERS
from dualloop.losses import LOSSES

__all__ = ["DEFAULT_LOSS", "methods", "registered_arguments"]

DEFAULT_LOSS = "sigmoid"


def methods() -> dict[str, dict[str, str]]:
    """Method name -> ``{"controller", "loss_type"}``, in registry order."""
    table = {name: {"controller": name, "loss_type": DEFAULT_LOSS} for name in CONTROLLERS}
    for name, entry in LOSSES.items():
        if entry.method and name not in table:
            table[name] = {"controller": "static", "loss_type": name}
    return table


def registered_arguments() -> dict[str, dict[str, Any]]:
    """``training.controller_kwargs`` and ``training.loss_kwargs``: the annotation of every argument some
    registered controller or loss takes, by name (what the params check and ``method_settings`` accept)."""
    return {
        "controller_kwargs": {
            name: f.type for controller in CONTROLLERS.values() for name, f in controller.arguments().items()
        },
        "loss_kwargs": {f.name: f.type for loss in LOSSES.values() for f in dataclasses.fields(loss.arguments)},
    }
