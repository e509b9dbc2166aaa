"""The trainer's callbacks: the β controller as Trainer state, the JSONL history, the printed lines.

:class:`ControllerCallback` is a ``TrainerCallback`` and a transformers ``ExportableState``: the
Trainer writes its ``state()`` into every checkpoint's ``trainer_state.json`` (``stateful_callbacks``)
and rebuilds it from there on ``resume_from_checkpoint`` — the same path under plain, DDP, FSDP and
DeepSpeed training, none of which goes through a private Trainer method.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from dualloop.controllers import Controller, controller_class
from dualloop.jsonl import append_records, read_records

__all__ = ["ControllerCallback", "HistoryCallback", "ProgressCallback"]


class ControllerCallback(TrainerCallback, ExportableState):
    """Holds the run's β controller; its state is saved and restored with the Trainer's checkpoints.

    ``controller``/``kwargs``: the controller's name and constructor arguments; ``state``: its
    ``state_dict`` to start from; ``step``: the optimizer step that state belongs to. With
    ``horizon_from_trainer`` the controller's ``total_steps`` is set, when training begins, to the
    Trainer's own number of optimizer steps (``TrainerState.max_steps``: epochs, accumulation and
    ``dataloader_drop_last`` included)."""

    def __init__(
        self,
        controller: str,
        kwargs: dict[str, Any],
        state: dict[str, Any] | None = None,
        step: int = 0,
        horizon_from_trainer: bool = False,
    ) -> None:
        self.name = controller
        self.kwargs = dict(kwargs)
        self.controller: Controller = controller_class(controller)(**self.kwargs)
        if state is not None:
            self.controller.load_state_dict(state)
        self.step = step
        self.horizon_from_trainer = horizon_from_trainer

    def state(self) -> dict[str, Any]:
        return {
            "args": {
                "controller": self.name,
                "kwargs": self.kwargs,
                "state": self.controller.state_dict(),
                "step": self.step,
                "horizon_from_trainer": self.horizon_from_trainer,
            },
            "attributes": {},
        }

    def on_train_begin(self, args, state, control, **kwargs):
        if self.name != args.controller:
            raise ValueError(
                f"the checkpoint holds the state of controller '{self.name}' but this run's controller "
                f"is '{args.controller}'"
            )
        if self.step != state.global_step:
            raise ValueError(
                f"training resumes at step {state.global_step} but the controller's state is of step "
                f"{self.step}: the checkpoint was not written by AdaptiveDPOTrainer, so β cannot be "
                "restored"
            )
        if self.horizon_from_trainer and self.kwargs["total_steps"] != state.max_steps:
            saved = self.controller.state_dict()
            self.kwargs["total_steps"] = state.max_steps
            self.controller = controller_class(self.name)(**self.kwargs)
            self.controller.load_state_dict(saved)

    def on_step_end(self, args, state, control, **kwargs):
        self.step = state.global_step


class HistoryCallback(TrainerCallback):
    """Appends every log row, with its step, to ``path`` as JSON lines.

    On (re)start, rows beyond the step training starts from are dropped, so a resumed run's file
    holds each step once."""

    def __init__(self, path: Path):
        self.path = path

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not self.path.exists():
            return
        kept = [row for row in read_records(self.path) if row.get("step", 0) <= state.global_step]
        self.path.write_text("".join(json.dumps(row) + "\n" for row in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        append_records(self.path, [{"step": state.global_step, **logs}])


class ProgressCallback(TrainerCallback):
    """One plain printed line per log row (papermill- and terminal-friendly)."""

    KEYS = (
        "loss",
        "beta",
        "beta/base",
        "kl",
        "kl_ema",
        "kl/token",
        "kl/logratio",
        "rewards/accuracies",
        "rewards/margins",
        "eval_loss",
    )

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        shown = " ".join(f"{key} {logs[key]:.4g}" for key in self.KEYS if isinstance(logs.get(key), (int, float)))
        if not shown:
            shown = " ".join(f"{key} {value:.4g}" for key, value in logs.items() if isinstance(value, (int, float)))
        print(f"step {state.global_step}/{state.max_steps} {shown}", flush=True)
