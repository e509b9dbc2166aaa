"""Tests for dualloop.summary (the phase summaries) and the tables rendered from them."""

import json
import math

import pytest

from dualloop import report, summary
from dualloop.judges import Decision


def _decision(prompt_id, winner, judge="gold-checker", a="dualloop", b="base"):
    winner_system = {"a": a, "b": b, "tie": "tie", None: None}[winner]
    return Decision(
        f"set:{prompt_id}",
        prompt_id,
        a,
        b,
        "instructions",
        judge,
        "ab",
        {"a": "A", "b": "B", "tie": "tie", None: "unparseable"}[winner],
        winner,
        winner_system,
    )


def _scores(tmp_path, system, strict, loose):
    path = tmp_path / f"{system}.jsonl"
    path.write_text(
        "".join(
            json.dumps({"prompt_id": f"p{i}", "instruction_ids": ["x"], "strict": [s], "loose": [lo]}) + "\n"
            for i, (s, lo) in enumerate(zip(strict, loose))
        )
    )
    return path


def test_phase_summary_on_a_small_table_equals_hand_computations(tmp_path):
    # 8 prompts. strict: dualloop passes p0-p4, base p3 and p5 -> a_only 4 (p0, p1, p2, p4), b_only 1 (p5)
    dual_strict = [True, True, True, True, True, False, False, False]
    base_strict = [False, False, False, True, False, True, False, False]
    dual_loose = [True] * 6 + [False] * 2
    base_loose = [True, False, False, True, False, True, False, False]
    files = {
        "dualloop": _scores(tmp_path, "dualloop", dual_strict, dual_loose),
        "base": _scores(tmp_path, "base", base_strict, base_loose),
    }
    strict_outcomes = ["a", "a", "a", "tie", "a", "b", "tie", "tie"]
    decisions = [_decision(f"p{i}", w) for i, w in enumerate(strict_outcomes)]
    decisions += [
        _decision(f"p{i}", w, judge="gold-loose")
        for i, w in enumerate(["tie", "a", "a", "tie", "a", "tie", None, "tie"])
    ]
    result = summary.phase_summary("02_main_comparison", "cpu", "verifiable-heldout", decisions, files)
    path = summary.write_summary(tmp_path / "results", result)
    assert path.name == "02_main_comparison.json"
    loaded = summary.read_summary(path)
    assert loaded["phase"] == "02_main_comparison" and loaded["profile"] == "cpu"
    dual = loaded["systems"]["dualloop"]
    assert dual["n"] == 8 and dual["strict_accuracy"] == 5 / 8 and dual["loose_accuracy"] == 6 / 8
    z = 1.959963984540054
    p, n = 5 / 8, 8
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert dual["strict_ci"] == pytest.approx([centre - half, centre + half])
    gold, loose = loaded["comparisons"]
    assert (gold["a"], gold["b"], gold["judge"]) == ("dualloop", "base", "gold-checker")
    assert (gold["n"], gold["wins"], gold["losses"], gold["ties"]) == (8, 4, 1, 3)
    assert gold["win_rate"] == pytest.approx(5.5 / 8)
    se = math.sqrt(5.5 / 8 * (1 - 5.5 / 8) / 8)  # Wald, ties as half
    assert gold["ci"] == pytest.approx([5.5 / 8 - z * se, min(5.5 / 8 + z * se, 1.0)])
    assert gold["accuracy"] == "strict" and gold["accuracy_diff"] == pytest.approx(3 / 8)
    from scipy.stats import beta as beta_distribution  # Clopper-Pearson of 4 / 5 discordant, scaled by 5 / 8

    assert gold["accuracy_diff_ci"] == pytest.approx(
        [5 / 8 * (2 * beta_distribution.ppf(0.025, 4, 2) - 1), 5 / 8 * (2 * beta_distribution.ppf(0.975, 5, 1) - 1)]
    )
    assert (loose["judge"], loose["n"], loose["unparseable"], loose["accuracy"]) == ("gold-loose", 7, 1, "loose")
    assert loose["accuracy_diff"] == pytest.approx(3 / 8)  # loose a_only p1, p2, p4 of 8 judged prompts

    table = report.summary_comparison_table(loaded)
    assert table.columns == ["Comparison", "Win rate [95% CI]", "N", "Ties", "Δ strict accuracy", "Δ loose accuracy"]
    (row,) = table.rows
    assert row[0] == "DualLoop-DPO vs. Base" and row[2:4] == ["15", "7"]
    assert row[1].startswith(f"{100 * 10.5 / 15:.1f}% [")  # pooled: 4 + 3 wins and 7 ties of 15 decisions
    assert row[4].startswith("+37.5% [") and row[5].startswith("+37.5% [")
    accuracy = report.accuracy_table(loaded)
    assert accuracy.rows[0][:3] == [
        "DualLoop-DPO",
        "8",
        f"62.5% [{100 * (centre - half):.1f}, {100 * (centre + half):.1f}]",
    ]


def test_a_summary_without_checker_has_no_accuracy_fields(tmp_path):
    decisions = [_decision("p0", "a", judge="local"), _decision("p1", "b", judge="local")]
    result = summary.phase_summary("04_generalization", "cpu", "mt-bench", decisions)
    assert result["systems"] == {}
    (entry,) = result["comparisons"]
    assert entry["accuracy_diff"] is None and entry["accuracy_diff_ci"] is None and entry["win_rate"] == 0.5


def test_bad_summary_and_score_files_are_named(tmp_path):
    bad = tmp_path / "02.json"
    bad.write_text(json.dumps({"phase": "02", "profile": "cpu", "systems": {"base": {"n": 1}}, "comparisons": []}))
    with pytest.raises(ValueError, match="systems.base has no 'strict_accuracy'"):
        summary.read_summary(bad)
    scores = tmp_path / "scores.jsonl"
    scores.write_text('{"prompt_id": "p0", "strict": [true]}\n')
    with pytest.raises(ValueError, match="scores.jsonl, line 1: not an instruction-score row"):
        summary.read_scores(scores)


def test_table3_carries_the_paired_strict_difference_of_each_row(tmp_path):
    files = {
        "dualloop": _scores(tmp_path, "dualloop", [True, True, False], [True, True, False]),
        "beta-dpo": _scores(tmp_path, "beta-dpo", [False, True, False], [False, True, True]),
    }
    decisions = [_decision(f"p{i}", w, b="beta-dpo") for i, w in enumerate(["a", "tie", "tie"])]
    result = summary.phase_summary("05_dynamic_baselines", "cpu", "verifiable-heldout", decisions, files)
    table = report.judge_table(decisions, summary=result)
    assert table.columns[-1] == "Δ strict accuracy"
    assert table.rows[0][0] == "vs. beta-dpo" and table.rows[0][-1].startswith("+33.3% [")
    assert report.judge_table(decisions).columns[-1] == "Aggregated"  # without a summary, as before


def _seed_files(tmp_path, seed, dual_strict, base_strict):
    folder = tmp_path / f"seed-{seed}"
    folder.mkdir()
    return {
        "dualloop": _scores(folder, "dualloop", dual_strict, dual_strict),
        "base": _scores(folder, "base", base_strict, base_strict),
    }


def test_one_seed_gives_the_one_seed_summary_unchanged(tmp_path):
    files = _seed_files(tmp_path, 0, [True, False, True], [False, False, True])
    decisions = [_decision(f"p{i}", w) for i, w in enumerate(["a", "tie", "tie"])]
    one = summary.seeds_summary("02", "cpu", "verifiable-heldout", {0: (decisions, files)})
    assert one == {**summary.phase_summary("02", "cpu", "verifiable-heldout", decisions, files), "seeds": [0]}
    assert report.summary_comparison_table(one).notes[-1] == "One seed (0)."


def test_two_seeds_pool_the_paired_difference_by_hand_with_a_seed_without_discordant_prompts(tmp_path):
    # Seed 0: dualloop - base per prompt = 1, 1, 1, 0, 0, -1; seed 1: both pass the same prompt -> all 0.
    # As in test_stats: estimate 1/6, se 1/6, 5 degrees of freedom, interval 1/6 ± 2.5705818 / 6.
    per_seed = {
        0: (
            [_decision(f"p{i}", w) for i, w in enumerate(["a", "a", "a", "tie", "tie", "b"])],
            _seed_files(tmp_path, 0, [True, True, True, False, True, False], [False, False, False, False, True, True]),
        ),
        1: (
            [_decision(f"p{i}", "tie") for i in range(6)],
            _seed_files(tmp_path, 1, [True] + [False] * 5, [True] + [False] * 5),
        ),
    }
    pooled = summary.seeds_summary("02", "cpu", "verifiable-heldout", per_seed)
    assert pooled["seeds"] == [0, 1] and pooled["estimator"] == "crossed-random-effects"
    (entry,) = pooled["comparisons"]
    assert (entry["n"], entry["wins"], entry["losses"], entry["ties"]) == (12, 3, 1, 8)
    half = 2.5705818 / 6
    assert entry["accuracy_diff"] == pytest.approx(1 / 6) and entry["accuracy_diff_df"] == pytest.approx(5.0)
    assert entry["accuracy_diff_n_prompts"] == 6  # the prompts every seed judged: the table's N
    assert entry["accuracy_diff_ci"] == pytest.approx([1 / 6 - half, 1 / 6 + half], abs=1e-7)
    assert [row["accuracy_diff"] for row in entry["by_seed"]] == pytest.approx([1 / 3, 0.0])
    assert entry["by_seed"][1]["accuracy_diff_ci"] == [0.0, 0.0]  # seed 1: no discordant prompt, exact interval 0
    # win scores per prompt are 1/2 + (a - b)/2 here: the same table halved -> 7/12 ± half / 2
    assert entry["win_rate"] == pytest.approx(7 / 12)
    assert entry["ci"] == pytest.approx([7 / 12 - half / 2, 7 / 12 + half / 2], abs=1e-7)
    dual = pooled["systems"]["dualloop"]
    assert dual["strict_by_seed"] == pytest.approx([4 / 6, 1 / 6]) and dual["strict_accuracy"] == pytest.approx(5 / 12)
    assert dual["strict_spread"] == pytest.approx(0.5) and dual["n"] == 6
    assert pooled["by_seed"]["1"]["systems"]["base"]["strict_accuracy"] == pytest.approx(1 / 6)
    (pair,) = pooled["pairs"]
    assert pair["win_rate"] == entry["win_rate"] and pair["win_rate_by_seed"] == pytest.approx([2 / 3, 0.5])
    assert (pair["n_prompts"], pair["prompts_dropped"]) == (6, 0)

    table = report.summary_comparison_table(pooled)
    assert table.columns[-1] == "Δ strict by seed (0, 1)" and table.rows[0][-1] == "+33.3 / +0.0"
    assert table.rows[0][2:4] == ["12", "8"]
    low, high = (round(100 * (7 / 12 + sign * half / 2), 1) for sign in (-1, 1))
    assert table.rows[0][1] == f"58.3% [{low:.1f}, {high:.1f}]"
    accuracy = report.accuracy_table(pooled)
    assert accuracy.columns[-2:] == ["Strict by seed (0, 1)", "Spread (points)"]
    assert accuracy.rows[0][-2:] == ["66.7 / 16.7", "50.0"]
    judges = report.judge_table([], summary=pooled)
    assert judges.columns == ["Method", "gold-checker", "Aggregated", "Δ strict accuracy", "Δ strict by seed (0, 1)"]
    assert judges.rows[0][0] == "vs. Base" and judges.rows[0][1] == judges.rows[0][2] == table.rows[0][1]


def test_an_unparseable_verdict_drops_that_prompt_from_the_pooled_win_rate_and_says_so(tmp_path):
    files = {seed: _seed_files(tmp_path, seed, [True, False, True], [False, False, True]) for seed in (0, 1)}
    per_seed = {
        0: ([_decision("p0", "a"), _decision("p1", None), _decision("p2", "tie")], files[0]),
        1: ([_decision("p0", "a"), _decision("p1", "tie"), _decision("p2", "tie")], files[1]),
    }
    pooled = summary.seeds_summary("02", "cpu", "verifiable-heldout", per_seed)
    (pair,) = pooled["pairs"]
    assert (pair["n_prompts"], pair["prompts_dropped"], pair["n"]) == (2, 1, 5)
    assert pair["win_rate_by_seed"] == [0.75, 0.75]  # p0 and p2 only
    (entry,) = pooled["comparisons"]
    assert entry["unparseable"] == 1 and entry["accuracy_diff"] == pytest.approx(1 / 3)  # the checks use all 3
    nothing = {seed: ([_decision(f"p{i}", None) for i in range(3)], files[seed]) for seed in (0, 1)}
    (empty,) = summary.seeds_summary("02", "cpu", "verifiable-heldout", nothing)["pairs"]
    assert empty["win_rate"] is None and empty["ci"] is None  # as with one seed: no parseable decision


def test_seeds_that_scored_or_judged_different_prompts_are_refused(tmp_path):
    files = {seed: _seed_files(tmp_path, seed, [True, True, False], [False, False, False]) for seed in (0, 1)}
    judged_apart = {
        0: ([_decision("p0", "a"), _decision("p1", "a")], files[0]),
        1: ([_decision("p1", "a"), _decision("p2", "tie")], files[1]),
    }
    with pytest.raises(ValueError, match=r"the seeds \[0, 1\] judged 1 prompts in common"):
        summary.seeds_summary("02", "cpu", "verifiable-heldout", judged_apart)
    short = _scores(tmp_path / "seed-1", "dualloop-short", [True, True], [True, True])
    scored_apart = {0: ([_decision("p0", "a")], files[0]), 1: ([_decision("p0", "a")], {**files[1], "dualloop": short})}
    with pytest.raises(ValueError, match=r"system dualloop: the seeds \[0, 1\] did not score the same"):
        summary.seeds_summary("02", "cpu", "verifiable-heldout", scored_apart)
