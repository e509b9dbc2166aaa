"""DeepSpeed ZeRO-2 on a CPU: a run resumed from a checkpoint continues the uninterrupted run's β.

Under DeepSpeed the Trainer restores the engine through ``deepspeed_load_checkpoint`` and never calls
its private ``_load_from_checkpoint``; β must come back through the controller callback's state.
Needs ``pip install deepspeed`` (not a dependency of the project; skipped without it) and builds
DeepSpeed's shared-memory op on first use (about a minute), hence marked slow."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys

import pytest

from dualloop.config import REPO_ROOT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("deepspeed") is None, reason="deepspeed is not installed"),
]


def train(out) -> None:
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO_ROOT / "params" / "accelerate" / "deepspeed_zero2.yaml"),
        "--num_processes", "1", "--mixed_precision", "no",  # the shipped file is for GPUs (bf16)
        "-m", "dualloop", "train", "--profile", "smoke", "--method", "dualloop", "--steps", "4",
        "--set", "training.save_steps=2", "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]


def betas(run) -> dict[int, tuple[float, float]]:
    rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    return {row["step"]: (row["beta"], row["beta/base"]) for row in rows if "beta" in row}


def test_a_deepspeed_run_resumed_from_step_2_repeats_the_uninterrupted_beta(tmp_path):
    train(tmp_path)
    (run,) = [path.parent for path in (tmp_path / "registry").glob("*/COMPLETE")]
    assert (run / "checkpoint-2" / "global_step2").is_dir()  # a DeepSpeed checkpoint
    uninterrupted = betas(run)
    (run / "COMPLETE").unlink()
    shutil.rmtree(run / "checkpoint-4")
    train(tmp_path)
    assert betas(run) == uninterrupted
    assert uninterrupted[4] != uninterrupted[1]  # β moved, so a restart from β_init would show
