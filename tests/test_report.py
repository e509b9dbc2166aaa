"""Tables and figures (dualloop.report) rendered from saved decisions and history files; expected
numbers are the DualLoop-DPO paper's printed values or hand counts."""

import json

import matplotlib
import pytest

from dualloop.judges import Decision, write_decisions
from dualloop.report import (
    Table,
    accuracy_kl_figure,
    final_kl,
    flip_table,
    judge_table,
    load_decisions,
    read_history,
    reliability_table,
    save_figure,
    trajectory_figure,
    win_rate_figure,
    write_table,
)
from dualloop.stats import flip_rate_by_entropy


def decisions(system_b, wins, ties, n, *, judge="gpt-4o-mini", system_a="dualloop", unparseable=0):
    """n decisions of system_a vs system_b: `wins` won, `ties` tied, the rest lost, then `unparseable` more."""
    rows = []
    for i in range(n + unparseable):
        winner = "a" if i < wins else "tie" if i < wins + ties else "b" if i < n else None
        verdict = {"a": "A", "b": "B", "tie": "tie", None: "unparseable"}[winner]
        system = {"a": system_a, "b": system_b, "tie": "tie", None: None}[winner]
        rows.append(
            Decision(f"{system_b}-{i}", f"p{i}", system_a, system_b, "general", judge, "ab", verdict, winner, system)
        )
    return rows


@pytest.fixture
def table_1_file(tmp_path):
    # DualLoop-DPO's Table 1 counts of N = 400 (two judges x 200 prompts): 348, 345, 344 wins
    rows = []
    for system_b, wins in (("base", 348), ("static", 345), ("annealed", 344)):
        rows += decisions(system_b, wins // 2, 0, 200, judge="gpt-4o-mini")
        rows += decisions(system_b, wins - wins // 2, 0, 200, judge="gemini-2.0-flash")
    return write_decisions(tmp_path / "decisions.jsonl", rows)


def test_table_1_from_a_decisions_file(table_1_file, tmp_path):
    table = judge_table(load_decisions(table_1_file), show_interval=True, caption="Table 1.")
    markdown = table.to_markdown()
    assert markdown.splitlines()[0].endswith("| Aggregated |")
    # the paper's printed values, all judges pooled
    for opponent, printed in (("Base", "87.0% [83.7, 90.3]"), ("Static", "86.3% [82.9, 89.6]")):
        (row,) = [row for row in table.rows if row[0] == f"vs. {opponent}"]
        assert row[-1] == printed
    md, tex = write_table(table, tmp_path / "tables" / "table_1")
    assert md.read_text() == markdown
    latex = tex.read_text()
    assert r"\toprule" in latex and r"\bottomrule" in latex and r"vs. Base &" in latex
    assert latex.count(r" \\") == 4  # header + three comparisons


def test_table_3_per_judge_with_the_pooled_aggregate():
    # vs. Beta-DPO: primary 182 wins + 1 tie of 200 (91.25 %), secondary 127 + 1 tie (63.75 %)
    rows = decisions("beta_dpo", 182, 1, 200, judge="gpt-4o-mini") + decisions(
        "beta_dpo", 127, 1, 200, judge="gemini-2.0-flash", unparseable=3
    )
    table = judge_table(
        rows, judge_labels={"gpt-4o-mini": "Primary", "gemini-2.0-flash": "Secondary"}, show_interval=False
    )
    assert table.columns == ["Method", "Primary", "Secondary", "Aggregated"]
    # pooled by hand: (182.5 + 127.5) / 400 = 77.5 %
    assert table.rows == [["vs. Beta-DPO", "91.3%", "63.8%", "77.5%"]]
    assert table.notes == ["3 unparseable decision(s) left out."]
    assert "3 unparseable" in table.to_markdown()


def test_latex_escapes_special_characters():
    table = judge_table(decisions("my_model & co", 3, 0, 4))
    assert r"vs. my\_model \& co" in table.to_latex()


def test_latex_escapes_each_special_character_once_in_cells_and_caption():
    text = r"a\b^c~d_e%f&g#h{i}j$k β"
    escaped = r"a\textbackslash{}b\textasciicircum{}c\textasciitilde{}d\_e\%f\&g\#h\{i\}j\$k β"
    latex = Table(["System", "Win rate"], [[text, "50.0%"]], caption=f"On {text}.").to_latex()
    assert rf"{escaped} & 50.0\% \\" in latex
    assert rf"\caption{{On {escaped}.}}" in latex
    assert r"\textbackslash\{" not in latex  # the braces of \textbackslash{} are not escaped again


def _is_png(path):
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _is_pdf(path):
    return path.read_bytes()[:5] == b"%PDF-"


def test_win_rate_figure_bars_are_the_decisions_win_rates(table_1_file, tmp_path):
    backend = matplotlib.get_backend()
    figure = win_rate_figure(load_decisions(table_1_file))
    heights = [patch.get_height() for patch in figure.axes[0].patches]
    assert heights == pytest.approx([87.0, 86.25, 86.0])
    png, pdf = save_figure(figure, tmp_path / "figures" / "win_rates")
    assert _is_png(png) and _is_pdf(pdf)
    assert matplotlib.get_backend() == backend  # no global backend change


def _write_history(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_trajectory_figure_plots_the_logged_values(tmp_path):
    dualloop = _write_history(
        tmp_path / "dualloop.jsonl",
        [
            {
                "step": s,
                "beta": 0.1 + 0.01 * s,
                "beta/base": 0.1 + 0.005 * s,
                "entropy": 0.9 - 0.1 * s,
                "kl": 0.01 * s,
                "kl_ema": 0.008 * s,
            }
            for s in range(1, 6)
        ]
        + [{"step": 5, "eval_loss": 0.3}],
    )
    static = _write_history(tmp_path / "static.jsonl", [{"step": s, "beta": 0.2, "kl": 0.02 * s} for s in range(1, 6)])
    annealed = _write_history(
        tmp_path / "annealed.jsonl",  # no controller KL: the trainer's estimator stands in
        [{"step": s, "beta": 0.2 - 0.01 * s, "kl/logratio": 0.03 * s} for s in range(1, 6)],
    )
    figure = trajectory_figure({"DualLoop-DPO": dualloop, "Static": static, "Annealed": annealed}, kl_target=0.04)
    beta_axis, kl_axis, entropy_axis = figure.axes
    lines = {line.get_label(): line for line in beta_axis.get_lines()}
    assert set(lines) == {"DualLoop-DPO", "DualLoop-DPO (beta/base)", "Static", "Annealed"}
    assert list(lines["DualLoop-DPO"].get_ydata()) == pytest.approx([0.11, 0.12, 0.13, 0.14, 0.15])
    assert lines["DualLoop-DPO (beta/base)"].get_linestyle() == "--"
    kl_lines = {line.get_label(): line for line in kl_axis.get_lines()}
    assert set(kl_lines) == {"DualLoop-DPO", "DualLoop-DPO (kl_ema)", "Static", "Annealed (kl/logratio)", "KL target"}
    assert list(kl_lines["Annealed (kl/logratio)"].get_ydata()) == pytest.approx([0.03, 0.06, 0.09, 0.12, 0.15])
    assert [line.get_label() for line in entropy_axis.get_lines()] == ["DualLoop-DPO"]
    png, pdf = save_figure(figure, tmp_path / "trajectories")
    assert _is_png(png) and _is_pdf(pdf)


def test_final_kl_is_the_mean_of_the_last_logged_values(tmp_path):
    history = _write_history(tmp_path / "h.jsonl", [{"step": s, "kl": float(s)} for s in range(1, 21)])
    assert final_kl(history, last=4) == pytest.approx((17 + 18 + 19 + 20) / 4)


def test_bad_results_files_are_named(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_text('{"step": 1}\n{oops\n')
    with pytest.raises(ValueError, match="history.jsonl, line 2"):
        read_history(path)
    with pytest.raises(FileNotFoundError, match="no decisions file"):
        load_decisions(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="no row logs 'kl'"):
        final_kl(_write_history(tmp_path / "empty.jsonl", [{"step": 1, "beta": 0.1}]))


def test_reliability_table_pairs_the_judges_on_the_same_items():
    primary = decisions("static", 6, 0, 10, judge="gpt")  # items 0-5 won, 6-9 lost
    secondary = decisions(
        "static", 4, 2, 10, judge="gemini", unparseable=1
    )  # 0-3 won, 4-5 tied, 6-9 lost, 10 unparseable
    table = reliability_table(primary + secondary, [("gpt", "gemini")])
    # aligned on items 0-9 (10 is only the secondary's, and unparseable): agree on 0-3 and 6-9 = 8 / 10.
    # kappa by hand: categories a, b, tie; gpt (a 6, b 4), gemini (a 4, tie 2, b 4):
    # p_e = 0.6 * 0.4 + 0.4 * 0.4 = 0.40, kappa = (0.8 - 0.4) / 0.6
    assert table.rows == [["gpt / gemini", "80.0%", f"{0.4 / 0.6:.2f}", "10"]]
    with pytest.raises(ValueError, match="no decision by judge 'claude'"):
        reliability_table(primary, [("gpt", "claude")])


def test_flip_table_lists_each_entropy_bucket():
    buckets = flip_rate_by_entropy([["a", "a", "b"], ["b", "b", "b"]], [0.2, 0.8], edges=[0.0, 0.5, 1.0])
    assert flip_table(buckets).rows == [
        ["[0.00, 0.50]", "1", "2", "1", "50.0%"],
        ["[0.50, 1.00]", "1", "2", "0", "0.0%"],
    ]


def test_accuracy_kl_figure_gives_each_run_its_own_point_and_merges_runs_that_coincide():
    def system(run, kl, accuracy):
        return {"run": run, "kl": kl, "strict_accuracy": accuracy, "strict_ci": [accuracy - 0.05, accuracy + 0.05]}

    phase_3 = {
        "systems": {
            "base": {"run": None, "kl": 0.0, "strict_accuracy": 0.225, "strict_ci": [0.17, 0.29]},
            "dualloop": system("a", 0.437, 0.29),
            "dualloop-no-clip": system("b", 0.437, 0.29),  # a switch that never acted: the same run's numbers
            "dualloop-no-deadband": system("a", 0.437, 0.29),  # the full run, reused under the ablation's name
            "static-0.1": system("c", 0.655, 0.34),
        }
    }
    phase_5 = {"systems": {"dualloop": system("a", 0.437, 0.29), "beta-dpo": system("d", 0.83, 0.295)}}
    figure = accuracy_kl_figure([phase_3, phase_5], names={"dualloop": "DualLoop-DPO"})
    axis = figure.axes[0]
    labels = [text.get_text() for text in axis.get_legend().get_texts()]
    assert labels == ["Base", "DualLoop-DPO = dualloop-no-clip = dualloop-no-deadband", "static-0.1", "beta-dpo"]
    lines = [container.lines[0] for container in axis.containers]
    assert [(line.get_xdata()[0], line.get_ydata()[0]) for line in lines] == [
        (0.0, 22.5),
        (0.437, pytest.approx(29.0)),
        (0.655, 34.0),
        (0.83, 29.5),
    ]
    styles = {(line.get_color(), line.get_marker()) for line in lines}
    assert len(styles) == len(lines)  # no two points look alike


def test_seed_trajectory_figure_draws_one_row_per_seed_with_the_deadband(tmp_path):
    from dualloop.report import seed_trajectory_figure

    histories = {
        seed: {
            "DualLoop-DPO": _write_history(
                tmp_path / f"dualloop-{seed}.jsonl",
                [{"step": s, "beta": 0.1, "beta/base": 0.1, "kl": 0.1 * s + seed, "kl_ema": 0.1 * s} for s in (1, 2)],
            ),
            "Static": _write_history(
                tmp_path / f"static-{seed}.jsonl", [{"step": s, "beta": 0.2, "kl": 0.2} for s in (1, 2)]
            ),
        }
        for seed in (0, 1)
    }
    figure = seed_trajectory_figure(histories, kl_target=0.5, deadband=0.1)
    assert len(figure.axes) == 6
    kl_row_two = figure.axes[4]
    lines = {line.get_label(): line for line in kl_row_two.get_lines()}
    assert list(lines["DualLoop-DPO"].get_ydata()) == pytest.approx([1.1, 1.2])  # seed 1's own log
    band = [patch for patch in kl_row_two.patches if patch.get_label() == "dead-band"]
    assert len(band) == 1 and (band[0].get_y(), band[0].get_height()) == pytest.approx((0.45, 0.1))


def test_controller_table_lists_each_run_per_seed_and_reuse_notes_name_reused_ablations():
    from dualloop.controller_facts import controller_facts
    from dualloop.report import controller_table, reuse_notes

    dual_rows = [
        {
            "step": 1,
            "beta/base": 0.1,
            "beta/min": 0.2,
            "beta/max": 0.5,
            "kl_ema": 0.47,
            "controller/deadband_held": 1,
            "controller/clip_acted": 0,
        },
        {
            "step": 2,
            "beta/base": 0.2,
            "beta/min": 0.2,
            "beta/max": 0.6,
            "kl_ema": 0.7,
            "controller/deadband_held": 1,
            "controller/clip_acted": 1,
        },
    ]
    static_rows = [{"step": s, "beta/base": 0.1, "beta/min": 0.1, "beta/max": 0.1} for s in (1, 2)]
    summary = {
        "seeds": [0, 1],
        "systems": {
            "dualloop": {"runs": ["r0", "r1"], "controller": {"0": controller_facts(dual_rows, kl_target=0.5)}},
            "dualloop-no-clip": {"runs": ["x0", "r1"]},
            "static-0.1": {"runs": ["s0", "s1"], "controller": {"1": controller_facts(static_rows)}},
            "base": {"runs": [None, None]},
        },
    }
    table = controller_table(summary)
    assert table.rows == [
        ["DualLoop-DPO", "0", "0.1 → 0.2", "100%, ×2", "0.2–0.6", "0.7 / 0.5", "1 of 2", "1", "1"],
        ["static-0.1", "1", "0.1 → 0.1", "0%, ×1 (≈ static)", "0.1–0.1", "-", "-", "-", "-"],
    ]
    (note,) = reuse_notes(summary, "dualloop")
    assert note.startswith("dualloop-no-clip: its switch never acted in the full run (seed 1)")


def test_how_far_beta_moved_is_rounded_once_half_up_in_the_table_and_the_facts_line():
    from dualloop.controller_facts import facts_line
    from dualloop.report import controller_table

    cases = (
        (0.06508, "7"),
        (0.065, "7"),
        (0.0649, "6"),
        (0.0551, "6"),
        (100.0, "1e+04"),
        (99.995, "10000"),
        (2.2555e16, "2.3e+18"),
    )
    for relative_range, shown in cases:
        facts = {
            "beta_base_first": 0.1,
            "beta_base_last": 0.0935,
            "beta_relative_range": relative_range,
            "largest_step_change": 1.01,
            "static_like": True,
            "beta_used_range": [0.0933, 0.101],
        }
        (row,) = controller_table({"systems": {"epsilon-dpo": {"controller": {"2": facts}}}}).rows
        assert row[3] == f"{shown}%, ×1.01 (≈ static)"  # 6.508 was once rounded to 6.5, then to an even 6
        assert f"(moved {shown} %," in facts_line(facts)


def test_an_adaptive_method_whose_beta_did_not_move_is_marked_static_like_in_the_tables():
    from dualloop.report import summary_comparison_table

    def facts(static_like, controller="epsilon-dpo"):
        return {"static_like": static_like, "controller": controller}

    entry = {"a": "dualloop", "judge": "gold-checker", "n": 2, "wins": 1, "losses": 0, "ties": 1, "accuracy": None}
    summary = {
        "systems": {
            "epsilon-dpo": {"controller": {"0": facts(True), "1": facts(True)}},
            "beta-dpo": {"controller": {"0": facts(True), "1": facts(False)}},
            "static-0.1": {"controller": {"0": facts(True, "static")}},
            "adadpo": {"controller": {"0": facts(True, "static")}},
        },
        "comparisons": [{**entry, "b": name} for name in ("epsilon-dpo", "beta-dpo", "static-0.1", "adadpo")],
    }
    labels = [row[0] for row in summary_comparison_table(summary).rows]
    assert labels == [
        "DualLoop-DPO vs. epsilon-dpo (β ≈ static)",  # static-like in every seed
        "DualLoop-DPO vs. beta-dpo",
        "DualLoop-DPO vs. static-0.1",  # static by design
        "DualLoop-DPO vs. AdaDPO",  # AdaDPO's loss under the static controller
    ]


def test_difference_figure_draws_the_pooled_interval_and_every_seed():
    from dualloop.report import difference_figure

    entry = {
        "a": "dualloop",
        "b": "base",
        "accuracy": "strict",
        "accuracy_diff": 0.05,
        "accuracy_diff_ci": [0.01, 0.09],
    }
    seeds = [{"seed": s, "accuracy_diff": d} for s, d in ((0, 0.1), (1, -0.02), (2, 0.07))]
    figure = difference_figure({"seeds": [0, 1, 2], "comparisons": [{**entry, "by_seed": seeds}]})
    (axis,) = figure.axes
    (bar,) = axis.patches
    assert bar.get_height() == pytest.approx(5.0)
    from matplotlib.collections import PathCollection

    (dots,) = [c for c in axis.collections if isinstance(c, PathCollection)]
    assert [y for _, y in dots.get_offsets()] == pytest.approx([10.0, -2.0, 7.0])
    assert "dots: seeds 0, 1, 2" in axis.get_ylabel()
