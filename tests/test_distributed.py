"""Two CPU processes (gloo) hold the same β as each other and as one process with the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import distributed_run  # noqa: E402

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")


def trajectories(out_dir: Path, controller: str, rank: int) -> tuple[int, list[dict]]:
    saved = json.loads((out_dir / controller / f"rank{rank}.json").read_text())
    return saved["num_processes"], saved["rows"]


def close(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
    if isinstance(a, float) or isinstance(b, float):
        return a == pytest.approx(b, rel=1e-4, abs=1e-6)
    return a == b


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if TORCHRUN is None:
        pytest.skip("torchrun is not installed next to this Python")
    out = tmp_path_factory.mktemp("distributed")
    per_device = distributed_run.GLOBAL_PAIRS_PER_STEP // distributed_run.GRADIENT_ACCUMULATION
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(HERE.parent)}
    two = subprocess.run(
        [
            TORCHRUN,
            "--standalone",
            "--nproc_per_node",
            "2",
            str(HERE / "distributed_run.py"),
            str(out / "two"),
            str(per_device // 2),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        distributed_run.run(out / "one", per_device)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.parametrize("controller", list(distributed_run.CONTROLLERS))
def test_both_ranks_log_the_beta_of_one_process_with_the_same_global_batch(runs, controller):
    processes0, rank0 = trajectories(runs / "two", controller, 0)
    processes1, rank1 = trajectories(runs / "two", controller, 1)
    single_processes, single = trajectories(runs / "one", controller, 0)
    assert (processes0, processes1, single_processes) == (2, 2, 1)
    assert [row["step"] for row in rank0] == list(range(1, distributed_run.STEPS + 1))
    assert rank0 == rank1  # every process holds exactly the same β and controller state
    for two_processes, one_process in zip(rank0, single, strict=True):
        assert close(two_processes, one_process), (two_processes, one_process)
    assert len({round(row["beta"], 6) for row in single}) == distributed_run.STEPS  # β moved every step
