"""Tests for benchmarks/pilot.py: its grid, its refusals of impossible values, and one tiny run on smoke."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

PILOT = Path(__file__).resolve().parents[1] / "benchmarks" / "pilot.py"
spec = importlib.util.spec_from_file_location("pilot", PILOT)
pilot = importlib.util.module_from_spec(spec)
sys.modules["pilot"] = pilot
spec.loader.exec_module(pilot)


def test_the_grid_is_a_product_and_each_also_varies_its_first_point():
    grid = pilot.parse_assignments(["max_steps=8,16", "learning_rate=1e-3", "beta=0.1"])
    also = [pilot.parse_assignments(["beta=0.05,0.3"]), pilot.parse_assignments(["augmented=false"])]
    points = pilot.schedules(grid, also)
    first = {"max_steps": 8, "learning_rate": 1e-3, "beta": 0.1}
    assert points == [
        first,
        {**first, "max_steps": 16},
        {**first, "beta": 0.05},
        {**first, "beta": 0.3},
        {**first, "augmented": False},
    ]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--grid", "max_steps=0"], "pilot grid: max_steps='0' is impossible: need an integer >= 1"),
        (
            ["--grid", "max_steps=8", "learning_rate=-1e-3"],
            "learning_rate='-1e-3' is impossible: need a finite number > 0",
        ),
        (["--grid", "beta=nan"], "beta='nan' is impossible"),
        (["--grid", "beta=abc"], "beta='abc' is impossible"),
        (["--grid", "augmented=maybe"], "augmented='maybe' is impossible: need true or false"),
        (["--grid", "lr=1e-3"], "pilot grid: unknown key 'lr'"),
        (["--grid", "beta"], "pilot grid: 'beta' is not KEY=V1,V2,..."),
        (["--grid", "beta=0.1", "--prompts", "240:300", "--profile", "smoke"], "the held-out set holds"),
    ],
)
def test_impossible_values_are_refused_by_name_before_training(arguments, message, capsys, tmp_path):
    assert pilot.main([*arguments, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing trained or written


def test_a_tiny_pilot_on_smoke_writes_its_table(tmp_path, capsys):
    assert (
        pilot.main(
            [
                "--profile",
                "smoke",
                "--grid",
                "max_steps=1",
                "beta=0.1",
                "--also",
                "beta=0.3",
                "--prompts",
                "0:3",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    result = json.loads((tmp_path / "pilot.json").read_text())
    assert [row["schedule"]["beta"] for row in result["schedules"]] == [0.1, 0.3]
    assert all(row["n"] == 3 and row["kl_token"] is not None for row in result["schedules"])
    table = (tmp_path / "pilot.md").read_text()
    assert "| base model |" in table and "max_steps=1 beta=0.1" in table


def test_a_pilot_over_two_seeds_pools_each_schedules_gain(tmp_path):
    arguments = ["--profile", "smoke", "--grid", "max_steps=1", "beta=0.1", "--prompts", "0:3", "--seeds", "0", "1"]
    assert pilot.main([*arguments, "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "pilot.json").read_text())
    assert [row["seed"] for row in result["schedules"]] == [0, 1] and result["seeds"] == [0, 1]
    assert result["schedules"][0]["run"] != result["schedules"][1]["run"]
    (pooled,) = result["pooled"]
    gains = [row["strict_gain_vs_base"] for row in result["schedules"]]
    assert pooled["gain_by_seed"] == pytest.approx(gains)
    assert pooled["strict_gain_vs_base"] == pytest.approx(sum(gains) / 2)
    assert "pooled over seeds 0, 1" in (tmp_path / "pilot.md").read_text()
