"""Tests for benchmarks/plan_comparisons.py: plans read from a committed phase summary, and its refusals."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from dualloop.stats import planned_width

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "plan_comparisons.py"
spec = importlib.util.spec_from_file_location("plan_comparisons", SCRIPT)
plan_comparisons = importlib.util.module_from_spec(spec)
sys.modules["plan_comparisons"] = plan_comparisons
spec.loader.exec_module(plan_comparisons)

SUMMARY = ROOT / "figures" / "schedule_48" / "02_main_comparison.json"  # five seeds x 200 prompts


def test_each_pooled_strict_difference_is_read_with_its_design_and_components():
    found = plan_comparisons.strict_comparisons(SUMMARY)
    raw = next(
        c
        for c in json.loads(SUMMARY.read_text())["comparisons"]
        if (c["a"], c["b"], c["accuracy"]) == ("dualloop", "static-0.1", "strict")
    )
    entry = found["dualloop − static-0.1"]
    assert (entry["seeds"], entry["prompts"]) == (5, 200)
    assert entry["diff"] == raw["accuracy_diff"]
    components = raw["accuracy_diff_variance_components"]
    assert entry["components"] == (components["seed"], components["prompt"], components["residual"])
    # at the run's own design the plan gives back the interval the run reported
    assert planned_width(*entry["components"], seeds=5, prompts=200).half_width == pytest.approx(
        entry["half"], rel=1e-9
    )


def test_seeds_needed_is_the_first_design_within_the_target():
    components = (0.004, 0.0, 0.22)
    needed = plan_comparisons.seeds_needed(components, prompts=200, target=0.04)
    assert planned_width(*components, seeds=needed, prompts=200).half_width <= 0.04
    assert planned_width(*components, seeds=needed - 1, prompts=200).half_width > 0.04
    assert plan_comparisons.seeds_needed((0.05, 0.0, 0.2), prompts=200, target=0.01) is None


def test_the_printed_tables_and_the_check_against_a_later_run(capsys):
    assert (
        plan_comparisons.main([str(SUMMARY), "--seeds", "3", "5", "--prompts", "200", "--observed", str(SUMMARY)]) == 0
    )
    out = capsys.readouterr().out
    assert "| dualloop − static-0.1 | -1.3 ±3.5 (5 × 200) | 0.0000 / 0.0221 / 0.2035 | ±4.2 | ±3.5 | 4 |" in out
    assert "| dualloop − static-0.1 | 5 × 200 | 5 × 200 | ±3.5 | ±3.5 |" in out


def test_a_summary_without_pooled_differences_is_a_one_line_error_naming_it(tmp_path, capsys):
    one_seed = tmp_path / "one_seed.json"
    one_seed.write_text(json.dumps({"comparisons": [{"a": "x", "b": "y", "accuracy": "strict", "n": 200}]}))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    for path, message in ((one_seed, "no strict-accuracy difference pooled over seeds"), (broken, "not a readable")):
        assert plan_comparisons.main([str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(path) in err and message in err
    with pytest.raises(SystemExit):
        plan_comparisons.main([str(SUMMARY), "--seeds", "1"])
