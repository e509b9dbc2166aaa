"""The run registry: one directory per resolved training configuration.

A run's directory is ``<root>/<run_id>``, where ``run_id`` is a hash of the resolved configuration
(a JSON-serialisable dict, key order irrelevant). It holds:

- ``config.json``   the resolved configuration;
- ``run.json``      the run's seed, git revision, package versions and start time;
- ``history.jsonl`` the training log (written by ``AdaptiveDPOTrainer``), ``checkpoint-*/``;
- ``adapter/``      the trained adapter (or model), saved when training finishes;
- ``COMPLETE``      the completion marker, written last;
- ``.lock``         the claim of the process training it (:mod:`dualloop.locking`).

``ensure_run`` returns a finished run without training, resumes an unfinished one from its last
checkpoint, and trains a new one; so notebooks share runs and a rerun skips finished work. The
registry is where runs are claimed: a second process asking for a run another is training waits for
it (naming the holder) and then reuses it, so two trainings of one configuration never both train.
Every file is written redacted (:mod:`dualloop.redaction`).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers.trainer_utils import get_last_checkpoint

from dualloop.jsonl import read_records
from dualloop.locking import file_lock
from dualloop.redaction import redact

__all__ = ["Run", "run_id", "open_run", "ensure_run", "package_versions", "git_revision"]

CONFIG_NAME = "config.json"
METADATA_NAME = "run.json"
HISTORY_NAME = "history.jsonl"
ADAPTER_DIR = "adapter"
COMPLETE_NAME = "COMPLETE"
PACKAGES = ("dualloop", "torch", "transformers", "trl", "peft", "accelerate", "datasets", "numpy")


def _canonical(config: Mapping[str, Any]) -> str:
    if not isinstance(config, Mapping):
        raise TypeError(f"a run's configuration must be a dict, got {type(config).__name__}")
    try:
        return json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"a run's configuration must be JSON-serialisable (plain numbers, strings, lists, dicts): {error}"
        ) from None


def run_id(config: Mapping[str, Any]) -> str:
    """The first 16 hex digits of the SHA-256 of the canonical JSON of ``config``."""
    return hashlib.sha256(_canonical(config).encode()).hexdigest()[:16]


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_revision(directory: Path | None = None) -> str | None:
    """The git commit of the code (``directory`` defaults to this package's), with ``+dirty`` when the
    working tree has changes; None outside a git checkout."""
    directory = directory or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=directory,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("+dirty" if dirty else "")


@dataclass(frozen=True)
class Run:
    """A run directory of the registry."""

    path: Path

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def config(self) -> dict[str, Any]:
        return json.loads((self.path / CONFIG_NAME).read_text())

    @property
    def metadata(self) -> dict[str, Any]:
        return json.loads((self.path / METADATA_NAME).read_text())

    @property
    def adapter_dir(self) -> Path:
        return self.path / ADAPTER_DIR

    @property
    def history_path(self) -> Path:
        return self.path / HISTORY_NAME

    @property
    def is_complete(self) -> bool:
        return (self.path / COMPLETE_NAME).is_file()

    def history(self) -> list[dict[str, Any]]:
        """The log rows of ``history.jsonl`` (empty before the first step)."""
        return read_records(self.history_path)

    def last_checkpoint(self) -> str | None:
        """The newest complete checkpoint, or None. The Trainer writes a checkpoint's ``trainer_state.json``
        last, so a checkpoint without a readable one of its own step was cut off (a kill while it was being
        written): it is moved aside to ``incomplete-checkpoint-<step>-<time>`` (kept, out of the Trainer's
        way) and the one before it is resumed from."""
        while (newest := get_last_checkpoint(str(self.path))) is not None:
            folder = Path(newest)
            if _complete_checkpoint(folder):
                return newest
            aside = folder.with_name(f"incomplete-{folder.name}-{time.strftime('%Y%m%d-%H%M%S')}")
            folder.rename(aside)
            print(f"dualloop.registry: run {self.id}: {folder.name} was cut off while written; moved to {aside.name}")
        return None

    def mark_complete(self) -> None:
        (self.path / COMPLETE_NAME).write_text(time.strftime("%Y-%m-%dT%H:%M:%S%z") + "\n")


def open_run(root: str | Path, config: Mapping[str, Any]) -> Run:
    """The run directory of ``config`` under ``root``, created with its config and metadata if new.

    ``config`` must be the resolved configuration and hold its ``seed``. An existing directory whose
    ``config.json`` differs (a hash collision or a hand edit) is refused.
    """
    if "seed" not in config:
        raise ValueError("a run's configuration must hold its 'seed' (the registry records it with the run)")
    canonical = json.loads(redact(_canonical(config)))
    run = Run(Path(root).expanduser() / run_id(config))
    if (run.path / CONFIG_NAME).exists():
        if run.config != canonical:
            raise ValueError(
                f"{run.path / CONFIG_NAME} holds another configuration than the one asked for; move that directory away"
            )
        return run
    run.path.mkdir(parents=True, exist_ok=True)
    (run.path / METADATA_NAME).write_text(
        redact(
            json.dumps(
                {
                    "run_id": run.id,
                    "seed": config["seed"],
                    "git_revision": git_revision(),
                    "packages": package_versions(),
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                },
                indent=1,
            )
        )
        + "\n"
    )
    (run.path / CONFIG_NAME).write_text(redact(json.dumps(canonical, indent=1, sort_keys=True)) + "\n")
    return run


def _complete_checkpoint(folder: Path) -> bool:
    """Whether ``folder`` (``checkpoint-<step>``) holds a ``trainer_state.json`` that parses and names its step."""
    try:
        state = json.loads((folder / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(state, dict) and f"checkpoint-{state.get('global_step')}" == folder.name


def ensure_run(root: str | Path, config: Mapping[str, Any], make_trainer: Callable[[Run], Any]) -> Run:
    """A finished run of ``config``: returned as is if it exists, otherwise trained (resuming from
    the run's last checkpoint when one exists) and marked complete.

    ``make_trainer(run)`` builds the trainer whose ``args.output_dir`` is ``run.path`` (for example an
    ``AdaptiveDPOTrainer``); it is called only when training is needed. After training the model (the
    adapter when training with PEFT) is saved to ``run.adapter_dir``.
    """
    run = open_run(root, config)
    # one claim per run: the main process of a distributed launch holds it for all its ranks
    claim = file_lock(run.path) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext()
    with claim:
        if run.is_complete:
            print(f"dualloop.registry: run {run.id} is complete; reusing {run.path}", flush=True)
            return run
        trainer = make_trainer(run)
        output_dir = Path(trainer.args.output_dir).resolve()
        if output_dir != run.path.resolve():
            raise ValueError(f"make_trainer built a trainer writing to {output_dir}; set output_dir={str(run.path)!r}")
        checkpoint = run.last_checkpoint()
        print(
            f"dualloop.registry: run {run.id}: " + (f"resuming from {checkpoint}" if checkpoint else "training"),
            flush=True,
        )
        trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model(str(run.adapter_dir))
        if trainer.args.should_save:
            run.mark_complete()
    return run
