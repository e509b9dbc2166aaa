"""Tests for benchmarks/pilot_dualloop.py: a tiny run on smoke under a changed schedule, and its refusals."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "pilot_dualloop.py"
spec = importlib.util.spec_from_file_location("pilot_dualloop", SCRIPT)
pilot_dualloop = importlib.util.module_from_spec(spec)
sys.modules["pilot_dualloop"] = pilot_dualloop
spec.loader.exec_module(pilot_dualloop)


def test_a_tiny_pilot_on_smoke_trains_each_seed_under_the_set_schedule_and_records_it(tmp_path, capsys):
    arguments = ["--profile", "smoke", "--seeds", "0", "1", "--config", "kl_target=0.5,eta=0.5"]
    assert pilot_dualloop.main([*arguments, "--set", "training.max_steps=2", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "pilot_dualloop.json").read_text())
    assert result["overrides"] == ["training.max_steps=2"] and [run["seed"] for run in result["runs"]] == [0, 1]
    for run in result["runs"]:
        assert [point["step"] for point in run["trajectory"]] == [1, 2]  # the schedule --set gave
        config = json.loads((tmp_path / "registry" / run["run"] / "config.json").read_text())
        assert {"kl_target": 0.5, "eta": 0.5}.items() <= config["training"]["controller_kwargs"].items()
    assert "With --set training.max_steps=2." in (tmp_path / "pilot_dualloop.md").read_text()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--config", "kl_targt=0.5"], "'kl_targt=0.5' is not KEY=NUMBER"),
        (
            ["--config", "eta=0.5", "--set", "training.controller_kwargs.eta=1"],
            "give DualLoop's constants with --config",
        ),
        (["--config", "eta=0.5", "--set", "training.max_stps=2"], "did you mean 'max_steps'?"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2_before_training(extra, message, tmp_path, capsys):
    assert pilot_dualloop.main(["--profile", "smoke", *extra, "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("pilot_dualloop: ") and message in error
    assert not (tmp_path / "registry").exists()
