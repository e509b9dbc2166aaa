"""Tests for benchmarks/plan_comparisons.py: plans read from committed phase summaries, and its refusals."""

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

FIVE_SEEDS = ROOT / "figures" / "schedule_48" / "02_main_comparison.json"  # 48 steps, 5 seeds x 200 prompts
THREE_SEEDS = ROOT / "figures" / "results" / "02_main_comparison.json"  # 16 steps, seeds 0-2
SEVEN_SEEDS = ROOT / "figures" / "seven_seeds" / "results" / "02_main_comparison.json"  # 16 steps, seeds 0-6


def test_each_pooled_strict_difference_is_read_with_its_judge_design_and_components():
    found = plan_comparisons.strict_comparisons(FIVE_SEEDS)
    raw = next(
        c
        for c in json.loads(FIVE_SEEDS.read_text())["comparisons"]
        if (c["a"], c["b"], c["judge"]) == ("dualloop", "static-0.1", "gold-checker")
    )
    entry = found["dualloop − static-0.1 (gold-checker)"]
    assert (entry["seeds"], entry["prompts"]) == (5, 200)
    assert entry["diff"] == raw["accuracy_diff"]
    components = raw["accuracy_diff_variance_components"]
    assert entry["components"] == (components["seed"], components["prompt"], components["residual"])
    # at the run's own design, the expected mean squares give back the interval the run reported
    plan = planned_width(*entry["components"], seeds=5, prompts=200)
    assert plan.at_expected == pytest.approx(entry["half"], rel=1e-9)
    assert not any("gold-loose" in name for name in found)  # loose rows are not strict differences


def test_seeds_needed_is_the_first_count_whose_runs_reach_the_target_often_enough():
    components = (0.004, 0.0, 0.22)
    needed = plan_comparisons.seeds_needed(components, prompts=200, target=0.04, share=0.8)
    assert planned_width(*components, seeds=needed, prompts=200).share_within(0.04) >= 0.8
    assert planned_width(*components, seeds=needed - 1, prompts=200).share_within(0.04) < 0.8
    assert plan_comparisons.seeds_needed((0.05, 0.0, 0.2), prompts=200, target=0.01, share=0.8) is None


def test_the_plan_table_and_its_check_against_the_seven_seed_run(capsys):
    arguments = [str(THREE_SEEDS), "--seeds", "3", "5", "--prompts", "200", "--observed", str(SEVEN_SEEDS)]
    assert plan_comparisons.main(arguments) == 0
    out = capsys.readouterr().out
    assert (
        "| dualloop − static-0.1 (gold-checker) | +1.3 ±10.6 (3 × 200) | 0.0006 / 0.0000 / 0.2360 | ±8.4 | ±4.8 | 9 |"
        in out
    )
    # planned from three seeds, the seven-seed width of DualLoop-DPO - static β falls outside the middle 80 %
    assert "| dualloop − static-0.1 (gold-checker) | 3 × 200 | 7 × 200 | ±3.7 (±2.6 to ±5.3) | ±6.5 |" in out


def test_a_summary_without_what_a_plan_needs_is_a_one_line_error_naming_it(tmp_path, capsys):
    one_seed = tmp_path / "one_seed.json"
    one_seed.write_text(json.dumps({"comparisons": [{"a": "x", "b": "y", "accuracy": "strict", "n": 200}]}))
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    row = json.loads(FIVE_SEEDS.read_text())["comparisons"][0]
    unknown = tmp_path / "unknown_prompts.json"
    unknown.write_text(json.dumps({"comparisons": [{**row, "unparseable": 3}]}))
    lacking = tmp_path / "lacking.json"
    lacking.write_text(json.dumps({"comparisons": [{k: v for k, v in row.items() if k != "accuracy_diff_ci"}]}))
    cases = (
        (one_seed, "no strict-accuracy difference pooled over seeds"),
        (broken, "not a readable phase summary"),
        (unknown, "comparisons[0] (dualloop − base): its prompt count is unknown"),
        (lacking, "comparisons[0] (dualloop − base): missing 'accuracy_diff_ci'"),
    )
    for path, message in cases:
        assert plan_comparisons.main([str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(path) in err and message in err
    with pytest.raises(SystemExit):
        plan_comparisons.main([str(FIVE_SEEDS), "--seeds", "1"])
    assert "--seeds and --prompts must be ≥ 2" in capsys.readouterr().err
