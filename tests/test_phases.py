"""Every phase notebook on the smoke profile, through the runner, as a user runs them.

One module-scoped run of ``reproduce --profile smoke`` (a few minutes on 2 cores) feeds the
checks below: executed notebooks, Tables 1–3 with their rows, the other tables and the figures.
"""

import json
import math
import os
import re
import subprocess
import sys

import nbformat
import pytest

from dualloop.config import REPO_ROOT
from dualloop.pipeline import discover_phases

FAKE_KEY = "sk-dualloop-test-" + "k" * 32


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke-run")
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "OPENAI_API_KEY": FAKE_KEY, "GEMINI_API_KEY": FAKE_KEY}
    result = subprocess.run(
        [sys.executable, "-m", "dualloop", "reproduce", "--profile", "smoke", "--out", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        env=environment,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result.stdout


def test_reproduce_executes_every_phase_notebook(smoke_run):
    out, stdout = smoke_run
    executed = sorted(p.name for p in (out / "notebooks").glob("*.ipynb"))
    assert executed == sorted(p.notebook.name for p in discover_phases(REPO_ROOT / "notebooks"))
    assert len(executed) >= 8
    for name in executed:
        assert f"({name[:-6]}): done" in stdout
        notebook = nbformat.read(out / "notebooks" / name, as_version=4)
        errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
        assert not errors, f"{name}: {errors[:1]}"


def test_executed_notebooks_show_their_figures_and_tables_and_no_library_noise(smoke_run):
    out, _ = smoke_run
    for path in sorted((out / "notebooks").glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
        saved = sum(c.source.count("save_figure(") for c in notebook.cells if c.cell_type == "code")
        images = [o for o in outputs if "image/png" in o.get("data", {})]
        assert len(images) == saved, f"{path.name}: {len(images)} inline figures for {saved} saved"
        if "display(" in "".join(c.source for c in notebook.cells):
            assert any({"text/markdown", "text/html"} & set(o.get("data", {})) for o in outputs), path.name
        text = "".join(
            o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
            for o in outputs
            if "image/png" not in o.get("data", {})
        )
        for noise in ("<Figure size", "PosixPath(", "IProgress", "FutureWarning", "DeprecationWarning", "it/s]"):
            assert noise not in text, f"{path.name}: {noise!r} in its outputs"
        own = str(REPO_ROOT / "dualloop") + os.sep  # dualloop's own warnings (e.g. prompts skipped) are the phase's
        library = [o.text for o in outputs if o.get("name") == "stderr" and not o.text.startswith(own)]
        assert not library, f"{path.name}: {library[:1]}"


@pytest.mark.parametrize(
    "table,rows",
    [
        # on smoke DualLoop-DPO's β barely moves in 2 steps: its rows read "DualLoop-DPO (β ≈ static) vs. …"
        ("table1", ["| DualLoop-DPO", " vs. Base", " vs. static-", " vs. Annealed", "Δ strict by seed (0, 1)"]),
        ("table2", ["ifbench", "mt-bench", "sycophancy-rho", "refusal-rho"]),
        ("table3", ["vs. beta-dpo", "vs. epsilon-dpo"]),
        ("table_phase1_beta_sweep", ["static-0.05 vs. Base", "static-0.1 vs. Base", "static-0.2 vs. Base"]),
        ("table_ablations", ["dualloop-no-ema", "dualloop-no-fast-loop", "dualloop-no-clip", "dualloop-no-deadband"]),
        ("table_adadpo_grid", ["0.001 | 0.1"]),
        ("table_adadpo_clip", ["adadpo-C1.5 vs.", "| dualloop+adadpo"]),
        ("table_judge_agreement", ["gold-checker / local:smoke"]),
        ("table_flip_rate", ["Entropy bucket"]),
    ],
)
def test_tables_are_written_as_markdown_and_latex_with_their_rows(smoke_run, table, rows):
    out, _ = smoke_run
    markdown = (out / "tables" / f"{table}.md").read_text()
    for row in rows:
        assert row in markdown
    assert re.search(r"\d+\.\d%", markdown) or table == "table_flip_rate"
    assert "\\begin{tabular}" in (out / "tables" / f"{table}.tex").read_text()


def test_phase2_keeps_each_seeds_decisions_and_checks_and_pools_them(smoke_run):
    out, _ = smoke_run  # smoke: phase 02 under seeds 0 and 1
    assert (out / "results" / "decisions" / "verifiable-heldout__dualloop__vs__base.jsonl").is_file()
    assert (out / "results" / "decisions" / "seed-1" / "verifiable-heldout__dualloop__vs__base.jsonl").is_file()
    assert (out / "results" / "accuracy" / "seed-1" / "verifiable-heldout__dualloop.jsonl").is_file()
    result = json.loads((out / "results" / "02_main_comparison.json").read_text())
    assert result["seeds"] == [0, 1] and sorted(result["by_seed"]) == ["0", "1"]
    runs = result["systems"]["dualloop"]["runs"]
    assert len(set(runs)) == 2 and set(result["systems"]["dualloop"]["controller"]) == {"0", "1"}


def test_figures_are_written_as_png_and_pdf(smoke_run):
    out, _ = smoke_run
    for stem in (
        "walkthrough_controllers",
        "phase1_accuracy_kl",
        "phase2_trajectories",
        "table1_win_rates",
        "phase3_trajectories",
        "phase5_trajectories",
        "accuracy_kl_all_methods",
        "phase6_adadpo_dynamics",
    ):
        for suffix in (".png", ".pdf"):
            assert (out / "figures" / f"{stem}{suffix}").stat().st_size > 1000


@pytest.mark.parametrize(
    "phase",
    [
        "01_beta_sweep",
        "02_main_comparison",
        "03_ablations",
        "05_dynamic_baselines",
        "06_adadpo",
        "07_judge_reliability",
    ],
)
def test_each_phase_writes_its_summary_with_accuracies_and_paired_differences(smoke_run, phase):
    from dualloop.summary import COMPARISON_FIELDS, SYSTEM_FIELDS, read_summary

    out, _ = smoke_run
    summary = read_summary(out / "results" / f"{phase}.json")
    assert summary["phase"] == phase and summary["profile"] == "smoke"
    assert summary["systems"] and summary["comparisons"]
    for entry in summary["systems"].values():
        assert set(SYSTEM_FIELDS) <= set(entry) and 0 <= entry["strict_accuracy"] <= entry["loose_accuracy"] <= 1
        assert entry["strict_ci"][0] <= entry["strict_accuracy"] <= entry["strict_ci"][1]
    for entry in summary["comparisons"]:
        assert set(COMPARISON_FIELDS) <= set(entry)
        assert entry["wins"] + entry["losses"] + entry["ties"] == entry["n"]
        if entry["judge"].startswith("gold"):
            low, high = entry["accuracy_diff_ci"]
            assert low <= entry["accuracy_diff"] <= high


def test_phase6_evaluates_only_the_dynamics_runs_and_all_train_without_the_pairs_set_aside(smoke_run):
    out, _ = smoke_run
    phase6 = {
        p.parent: json.loads(p.read_text())
        for p in (out / "registry").glob("*/config.json")
        if json.loads(p.read_text())["data"].get("eval_pairs")
    }
    assert len(phase6) == 6  # DPO, AdaDPO (C = 2 and 1.5), DualLoop + AdaDPO, Table 2: simpo, adaptive-simpo
    evaluated = 0
    for run, config in phase6.items():
        rows = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
        eval_steps = [row["step"] for row in rows if "eval_loss" in row]
        if config["training"].get("eval_strategy") == "no":
            assert eval_steps == []
        else:  # the dynamics figure's two runs
            evaluated += 1
            assert eval_steps == [1, 2]  # eval_steps 1 on smoke
            assert all(math.isfinite(row["eval_rewards/accuracies"]) for row in rows if "eval_loss" in row)
    assert evaluated == 2


def test_phases_share_trained_runs_through_the_registry(smoke_run):
    out, _ = smoke_run
    phase2 = (out / "notebooks" / "02_main_comparison.ipynb").read_text()
    assert "is complete; reusing" in phase2  # phase 2 reuses phase 1's static run
    best = json.loads((out / "results" / "best_static_beta.json").read_text())["best_static_beta"]
    assert f"static-{best:g}" in (out / "tables" / "table1.md").read_text()
    configs = [json.loads(p.read_text()) for p in (out / "registry").glob("*/config.json")]
    assert len(configs) == len({json.dumps(c, sort_keys=True) for c in configs})


def test_no_api_key_lands_in_any_file_of_the_run(smoke_run):
    out, stdout = smoke_run
    assert FAKE_KEY not in stdout
    for path in out.rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path
