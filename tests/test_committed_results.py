"""What the project commits as its results agrees with itself: README's quoted numbers equal the phase
summaries they come from (the headline table row by row, each pooled difference its bullets quote), and each
committed table equals its rendering from the committed summary, and every difference interval README.md and
figures/README.md quote in prose is one of a committed summary's. A re-render without the other fails here."""

import json
import re
from functools import cache
from pathlib import Path

import pytest

from dualloop import report
from dualloop.config import REPO_ROOT

FIGURES = REPO_ROOT / "figures"
SEVEN_SEEDS_02 = FIGURES / "seven_seeds" / "results" / "02_main_comparison.json"  # 16 steps, seeds 0-6
THREE_SEEDS_02 = FIGURES / "results" / "02_main_comparison.json"  # 16 steps, seeds 0-2 (make reproduce)
THREE_SEEDS_05 = FIGURES / "results" / "05_dynamic_baselines.json"
LONG_02 = FIGURES / "schedule_48" / "02_main_comparison.json"  # 48 steps (make schedule-48)
LONG_05 = FIGURES / "schedule_48" / "05_dynamic_baselines.json"
LONG_03 = FIGURES / "ablations_48" / "03_ablations.json"  # 48 steps (make ablations-48)

# Headline table: the system of each row and the summary it comes from.
HEADLINE_ROWS = {
    "base model": (SEVEN_SEEDS_02, "base"),
    "static β = 0.1": (SEVEN_SEEDS_02, "static-0.1"),
    "annealed β": (SEVEN_SEEDS_02, "annealed"),
    "β-DPO (3 seeds)": (THREE_SEEDS_05, "beta-dpo"),
    "ε-DPO (3 seeds)": (THREE_SEEDS_05, "epsilon-dpo"),
}

# Pooled strict differences quoted in the headline's bullets: (README text, summary, a, b).
BULLET_QUOTES = [
    ("static β +11.6 [+1.0, +22.2] points", SEVEN_SEEDS_02, "static-0.1", "base"),
    ("annealed β looked\n  resolved (−0.2 [−3.4, +3.1])", THREE_SEEDS_02, "dualloop", "annealed"),
    ("DualLoop-DPO − static β −1.3 [−4.8, +2.2]", LONG_02, "dualloop", "static-0.1"),
    ("− annealed −0.4 [−3.9, +3.1]", LONG_02, "dualloop", "annealed"),
    ("ε-DPO −1.8 [−5.4, +1.8]", LONG_05, "dualloop", "epsilon-dpo"),
    ("− β-DPO +2.0 [−10.0, +14.0]", LONG_05, "dualloop", "beta-dpo"),
    ("no dead-band −1.1 [−4.7, +2.5]", LONG_03, "dualloop-no-deadband", "static-0.1"),
    ("no EMA −2.0 [−6.2, +2.2]", LONG_03, "dualloop-no-ema", "static-0.1"),
]


@cache
def readme() -> str:
    return (REPO_ROOT / "README.md").read_text(encoding="utf-8")


@cache
def summary(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def points(share: float) -> str:
    """A share as README writes a signed number of points: one decimal, a true minus sign."""
    return f"{100 * share:+.1f}".replace("-", "−")


def strict_comparison(path: Path, a: str, b: str) -> dict:
    rows = [c for c in summary(path)["comparisons"] if (c["a"], c["b"], c["accuracy"]) == (a, b, "strict")]
    assert len(rows) == 1, f"{path.name}: {len(rows)} strict rows for {a} − {b}"
    return rows[0]


def difference(row: dict) -> str:
    low, high = row["accuracy_diff_ci"]
    return f"{points(row['accuracy_diff'])} [{points(low)}, {points(high)}]"


def headline_rows() -> list[list[str]]:
    section = readme().split("## Headline result", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]


def test_the_headline_table_has_a_row_for_every_system():
    assert [row[0] for row in headline_rows()] == list(HEADLINE_ROWS)


@pytest.mark.parametrize("label", list(HEADLINE_ROWS))
def test_each_headline_row_equals_its_pooled_summary_rows(label):
    path, system = HEADLINE_ROWS[label]
    row = next(cells for cells in headline_rows() if cells[0] == label)
    pair = next(p for p in summary(path)["pairs"] if (p["a"], p["b"]) == ("dualloop", system))
    low, high = pair["ci"]
    assert row[1] == f"{100 * pair['win_rate']:.1f} % [{100 * low:.1f}, {100 * high:.1f}]", label
    strict = strict_comparison(path, "dualloop", system)
    assert row[2] == difference(strict), label
    assert row[3] == " / ".join(points(seed["accuracy_diff"]) for seed in strict["by_seed"]), label


@pytest.mark.parametrize(("quote", "path", "a", "b"), BULLET_QUOTES, ids=[q[0] for q in BULLET_QUOTES])
def test_each_difference_the_bullets_quote_equals_its_summary(quote, path, a, b):
    assert quote in readme(), f"README no longer says {quote!r}"
    expected = difference(strict_comparison(path, a, b))
    assert expected in quote, (quote, expected)


# Committed tables rendered by a phase notebook straight from its summary: (table, summary, renderer).
RENDERED_TABLES = [
    (FIGURES / "tables" / "table1_controllers.md", THREE_SEEDS_02, "controller_table"),
    (FIGURES / "tables" / "table3_controllers.md", THREE_SEEDS_05, "controller_table"),
    (
        FIGURES / "tables" / "table_ablations_controllers.md",
        FIGURES / "results" / "03_ablations.json",
        "controller_table",
    ),
    (FIGURES / "tables" / "table1_accuracy.md", THREE_SEEDS_02, "accuracy_table"),
    (FIGURES / "seven_seeds" / "tables" / "table1_controllers.md", SEVEN_SEEDS_02, "controller_table"),
    (FIGURES / "seven_seeds" / "tables" / "table1_accuracy.md", SEVEN_SEEDS_02, "accuracy_table"),
    (FIGURES / "schedule_48" / "table1_controllers.md", LONG_02, "controller_table"),
    (FIGURES / "schedule_48" / "table1_accuracy.md", LONG_02, "accuracy_table"),
    (FIGURES / "schedule_48" / "table3_controllers.md", LONG_05, "controller_table"),
    (FIGURES / "ablations_48" / "table_ablations_controllers.md", LONG_03, "controller_table"),
]


def table_rows(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| ---")]


@pytest.mark.parametrize(
    ("table", "path", "renderer"), RENDERED_TABLES, ids=[str(t[0].relative_to(FIGURES)) for t in RENDERED_TABLES]
)
def test_each_committed_table_equals_its_rendering_from_the_committed_summary(table, path, renderer):
    rendered = getattr(report, renderer)(summary(path)).to_markdown()
    assert table_rows(table.read_text(encoding="utf-8")) == table_rows(rendered)


def test_the_tables_figures_readme_shows_are_the_committed_ones():
    page = (FIGURES / "README.md").read_text(encoding="utf-8")
    committed = {row for table in (FIGURES / "tables").glob("*.md") for row in table_rows(table.read_text("utf-8"))}
    shown = [row for row in table_rows(page.split("## Results files", 1)[0]) if row.count("|") > 5]
    embedded = [row for row in shown if row in committed]
    assert len(embedded) > 50  # the page's copies of the rendered tables
    for table in (FIGURES / "tables").glob("*controllers.md"):
        for row in table_rows(table.read_text("utf-8"))[1:]:
            cells = row.split(" | ")[:2]
            twin = [line for line in shown if line.split(" | ")[:2] == cells and line.count("|") == row.count("|")]
            assert all(line == row for line in twin), (table.name, row, twin)


def every_committed_difference() -> set[str]:
    """Each accuracy-difference interval of every committed summary, pooled and per seed, as the pages write it."""
    quoted = set()
    for path in FIGURES.glob("**/*.json"):
        data = summary(path)
        if not isinstance(data, dict) or "comparisons" not in data:
            continue
        for source in (data, *data.get("by_seed", {}).values()):
            for row in source.get("comparisons", []):
                for entry in (row, *row.get("by_seed", [])):
                    if entry.get("accuracy_diff_ci"):
                        quoted.add(difference(entry))
    return quoted


@pytest.mark.parametrize("page", ["README.md", "figures/README.md"])
def test_every_difference_interval_the_prose_quotes_is_one_of_a_committed_summary(page):
    prose = (REPO_ROOT / page).read_text(encoding="utf-8").split("## Results files", 1)[0]
    quotes = re.findall(r"[+−]\d+\.\d \[[+−]\d+\.\d, [+−]\d+\.\d\]", prose)
    assert len(quotes) > 10
    known = every_committed_difference()
    assert [quote for quote in quotes if quote not in known] == []
