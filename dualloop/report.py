"""Tables and figures of the papers, rendered only from saved results files.

Inputs are files the pipeline wrote: decisions files (JSONL, schema in dualloop.judges) and
training logs ``history.jsonl`` (one JSON object per logged step with "step" and keys such as
"beta", "beta/base", "entropy", "kl", "kl_ema"). Nothing here trains, generates or judges: a
table or figure can be re-drawn from the files alone.

Tables (Markdown and LaTeX, ``Table.to_markdown()/to_latex()``, ``write_table``):
- ``summary_comparison_table``: DualLoop-DPO Table 1 — one row per comparison of a phase summary
  (dualloop.summary), win rate and interval per judge, accuracy difference, per seed and pooled.
- ``judge_table``: Table 3 — one row per opponent, one column per judge, and the aggregate
  (the pooled decisions of all judges).
- ``reliability_table`` (agreement and Cohen's kappa per judge pair) and ``flip_table`` (flip
  rate per entropy bucket): the judge diagnostics of DualLoop-DPO's text and limitations.
Win rates count ties as half (dualloop.stats); unparseable decisions are left out and counted in
the table's notes.

Figures (``matplotlib.figure.Figure`` objects, saved as PNG and PDF by ``save_figure``; no pyplot
state and no global backend change, so they render headless and still display in a notebook):
- ``win_rate_figure``: bars with interval whiskers per comparison.
- ``trajectory_figure``: beta, KL and entropy per training step, one line per method.
- ``accuracy_kl_figure``: held-out accuracy against the KL each run reached (eq. (1)'s trade-off).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dualloop.controller_facts import percent_moved
from dualloop.judges import Decision, read_decisions
from dualloop.stats import WinRate, pool, round_half_up, win_rate, win_rate_of

DISPLAY_NAMES = {
    "dualloop": "DualLoop-DPO",
    "base": "Base",
    "static": "Static",
    "annealed": "Annealed",
    "beta_dpo": "Beta-DPO",
    "epsilon_dpo": "Epsilon-DPO",
    "adadpo": "AdaDPO",
    "dpo": "DPO",
}


def display_name(system: str, names: Mapping[str, str] | None = None) -> str:
    """The paper's name of a system ("dualloop" -> "DualLoop-DPO"); unknown names are kept."""
    return {**DISPLAY_NAMES, **(names or {})}.get(system, system)


@dataclass
class Table:
    """A rendered table: a header row, body rows of strings, a caption and notes."""

    columns: list[str]
    rows: list[list[str]]
    caption: str = ""
    notes: list[str] = field(default_factory=list)

    def to_markdown(self) -> str:
        lines = ["| " + " | ".join(self.columns) + " |", "| " + " | ".join("---" for _ in self.columns) + " |"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        text = "\n".join(lines) + "\n"
        if self.caption or self.notes:
            text += "\n" + " ".join([self.caption] + self.notes).strip() + "\n"
        return text

    def to_latex(self) -> str:
        spec = "l" + "c" * (len(self.columns) - 1)
        body = [" & ".join(latex_escape(c) for c in self.columns) + r" \\", r"\midrule"]
        body += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in self.rows]
        caption = " ".join([self.caption] + self.notes).strip()
        return (
            "\n".join(
                [
                    r"\begin{table}[t]",
                    r"\centering",
                    rf"\begin{{tabular}}{{{spec}}}",
                    r"\toprule",
                    *body,
                    r"\bottomrule",
                    r"\end{tabular}",
                    rf"\caption{{{latex_escape(caption)}}}",
                    r"\end{table}",
                ]
            )
            + "\n"
        )


LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "^": r"\textasciicircum{}",
    "~": r"\textasciitilde{}",
    **{char: "\\" + char for char in "&%$#_{}"},
}
_LATEX_SPECIAL = re.compile("[" + re.escape("".join(LATEX_SPECIALS)) + "]")


def latex_escape(text: str) -> str:
    """``text`` as LaTeX prints it: each of ``\\ ^ ~ & % $ # _ { }`` replaced in one pass (so no replacement is
    escaped again) by the command or escape that prints it; other characters are kept."""
    return _LATEX_SPECIAL.sub(lambda match: LATEX_SPECIALS[match.group()], text)


def write_table(table: Table, path_stem: str | Path) -> list[Path]:
    """Write table as path_stem.md and path_stem.tex; returns the two paths."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".md"), stem.with_suffix(".tex")]
    paths[0].write_text(table.to_markdown())
    paths[1].write_text(table.to_latex())
    return paths


def load_decisions(sources: Sequence[str | Path] | str | Path) -> list[Decision]:
    """Decisions from one or more decisions files."""
    if isinstance(sources, (str, Path)):
        sources = [sources]
    return [d for source in sources for d in read_decisions(source)]


def _win_rate(decisions: Sequence[Decision], method: str, alpha: float) -> tuple[WinRate, int]:
    outcomes = [d.outcome() for d in decisions]
    parsed = [o for o in outcomes if o is not None]
    if not parsed:
        raise ValueError(f"no parseable decision among {len(outcomes)}: no win rate")
    return win_rate_of(parsed, method, alpha), len(outcomes) - len(parsed)


def _percent(result: WinRate) -> str:
    return f"{result.percent()[0]:.1f}%"


def _interval(result: WinRate) -> str:
    _, low, high = result.percent()
    return f"[{low:.1f}, {high:.1f}]"


def _group(decisions: Sequence[Decision], key) -> dict:
    groups: dict = {}
    for d in decisions:
        groups.setdefault(key(d), []).append(d)
    return groups


def win_rates(
    decisions: Sequence[Decision], *, method: str = "wald", alpha: float = 0.05
) -> dict[tuple[str, str], WinRate]:
    """Win rate of system_a over system_b for each comparison in the decisions (judges pooled)."""
    return {
        pair: _win_rate(group, method, alpha)[0]
        for pair, group in _group(decisions, lambda d: (d.system_a, d.system_b)).items()
    }


def _cell(result: WinRate, show_interval: bool) -> str:
    """A table cell: the win rate, with its interval when asked."""
    return _percent(result) + (f" {_interval(result)}" if show_interval else "")


def _unparseable_note(count: int) -> list[str]:
    return [f"{count} unparseable decision(s) left out."] if count else []


def judge_table(
    decisions: Sequence[Decision],
    *,
    method: str = "wald",
    alpha: float = 0.05,
    judge_labels: Mapping[str, str] | None = None,
    show_interval: bool = True,
    names: Mapping[str, str] | None = None,
    caption: str = "",
    summary: Mapping | None = None,
) -> Table:
    """DualLoop-DPO's Table 3: one row per opponent, one column per judge (in order of appearance,
    relabelled by judge_labels, e.g. {"gpt-4o-mini": "Primary"}), and "Aggregated": the pooled
    decisions of all judges (dualloop.stats.pool). With a phase ``summary`` (dualloop.summary) that
    has accuracy differences, a last column gives the paired strict accuracy difference of each row.
    A summary of several seeds gives every cell pooled over seeds and prompts (:func:`_seeded_judge_table`)."""
    if summary is not None and _pooled_seeds(summary):
        return _seeded_judge_table(summary, judge_labels=judge_labels, names=names, caption=caption)
    judges: list[str] = []
    for d in decisions:
        if d.judge not in judges:
            judges.append(d.judge)
    differences = {(e["a"], e["b"]): e for e in (summary or {}).get("comparisons", []) if e.get("accuracy") == "strict"}
    rows, unparseable = [], 0
    for opponent, group in _group(decisions, lambda d: d.system_b).items():
        by_judge = _group(group, lambda d: d.judge)
        row, per_judge = [f"vs. {_system_label(summary or {}, opponent, names)}"], []
        for judge in judges:
            if judge not in by_judge:
                row.append("-")
                continue
            result, skipped = _win_rate(by_judge[judge], method, alpha)
            unparseable += skipped
            per_judge.append(result)
            row.append(_cell(result, show_interval))
        aggregated = pool(per_judge)
        row.append(_cell(aggregated, show_interval))
        if differences:
            entry = differences.get((group[0].system_a, opponent))
            row.append(_fraction_cell(entry["accuracy_diff"], entry["accuracy_diff_ci"], signed=True) if entry else "-")
        rows.append(row)
    columns = ["Method"] + [(judge_labels or {}).get(j, j) for j in judges] + ["Aggregated"]
    columns += ["Δ strict accuracy"] if differences else []
    return Table(columns, rows, caption, _unparseable_note(unparseable))


def _seeded_judge_table(
    summary: Mapping, *, judge_labels: Mapping[str, str] | None, names: Mapping[str, str] | None, caption: str
) -> Table:
    """:func:`judge_table` from a several-seed summary: per judge the pooled win rate of its comparison
    row, "Aggregated" the judges pooled per prompt (``pairs``), the pooled strict difference and each
    seed's."""
    judges = list(dict.fromkeys(e["judge"] for e in summary["comparisons"]))
    entries = {(e["a"], e["b"], e["judge"]): e for e in summary["comparisons"]}
    pairs = {(p["a"], p["b"]): p for p in summary.get("pairs", [])}
    rows = []
    for a, b in dict.fromkeys((e["a"], e["b"]) for e in summary["comparisons"]):
        cells = [
            _fraction_cell(entries[(a, b, j)]["win_rate"], entries[(a, b, j)]["ci"]) if (a, b, j) in entries else "-"
            for j in judges
        ]
        strict = next(
            (entries[(a, b, j)] for j in judges if entries.get((a, b, j), {}).get("accuracy") == "strict"), None
        )
        rows.append(
            [
                f"vs. {_system_label(summary, b, names)}",
                *cells,
                _fraction_cell(pairs[(a, b)]["win_rate"], pairs[(a, b)]["ci"]),
                _fraction_cell(strict["accuracy_diff"], strict["accuracy_diff_ci"], signed=True) if strict else "-",
                _by_seed_cell([row["accuracy_diff"] for row in strict["by_seed"]], signed=True) if strict else "-",
            ]
        )
    seeds = summary["seeds"]
    columns = ["Method"] + [(judge_labels or {}).get(j, j) for j in judges]
    columns += ["Aggregated", "Δ strict accuracy", f"Δ strict by seed ({', '.join(map(str, seeds))})"]
    return Table(columns, rows, caption, [_seeds_note(seeds) + " Win rates count ties as half."])


def reliability_table(
    decisions: Sequence[Decision], judge_pairs: Sequence[tuple[str, str]], *, caption: str = ""
) -> Table:
    """Cross-judge agreement and Cohen's kappa per pair of judges on the pairs both judged
    (DualLoop-DPO: 83.3 % agreement in Phase 2, kappa ~ 0.38 overall)."""
    from dualloop.judges import paired_winners
    from dualloop.stats import agreement, cohens_kappa

    rows = []
    for first, second in judge_pairs:
        a, b = paired_winners(decisions, first, second)
        rows.append([f"{first} / {second}", f"{100 * agreement(a, b):.1f}%", f"{cohens_kappa(a, b):.2f}", str(len(a))])
    return Table(["Judges", "Agreement", "Cohen's kappa", "N"], rows, caption)


def flip_table(buckets: Sequence, *, caption: str = "") -> Table:
    """Flip rate on re-judging per entropy bucket (dualloop.stats.flip_rate_by_entropy's buckets;
    DualLoop-DPO's limitation study: ~7 % in every bucket)."""
    rows = [
        [
            f"[{b.low:.2f}, {b.high:.2f}]",
            str(b.items),
            str(b.rejudgments),
            str(b.flips),
            f"{100 * b.flip_rate:.1f}%" if b.rejudgments else "-",
        ]
        for b in buckets
    ]
    return Table(["Entropy bucket", "Items", "Re-judgments", "Flips", "Flip rate"], rows, caption)


def _fraction_cell(value: float | None, interval: Sequence[float] | None, *, signed: bool = False) -> str:
    """A percentage with its interval ("31.0% [24.9, 37.8]"); "-" where there is no value."""
    if value is None:
        return "-"
    assert interval is not None  # a value always comes with its interval (dualloop.summary)
    sign = "+" if signed else ""
    low, high = (round_half_up(100 * v) for v in interval)
    return f"{round_half_up(100 * value):{sign}.1f}% [{low:{sign}.1f}, {high:{sign}.1f}]"


def accuracy_table(summary: Mapping, *, names: Mapping[str, str] | None = None, caption: str = "") -> Table:
    """IFEval prompt-level strict and loose accuracy of every system of a phase summary
    (dualloop.summary), with 95 % Wilson intervals; a several-seed summary's pooled values with their
    intervals, each seed's strict accuracy and the spread over seeds."""
    seeds = _pooled_seeds(summary)
    several = bool(seeds)
    rows = [
        [
            display_name(system, names),
            str(entry["n"]),
            _fraction_cell(entry["strict_accuracy"], entry["strict_ci"]),
            _fraction_cell(entry["loose_accuracy"], entry["loose_ci"]),
            *(
                [_by_seed_cell(entry["strict_by_seed"]), f"{round_half_up(100 * entry['strict_spread']):.1f}"]
                if several
                else []
            ),
        ]
        for system, entry in summary["systems"].items()
    ]
    columns = ["System", "N", "Strict accuracy", "Loose accuracy"]
    notes = ["95% Wilson intervals."]
    if several:
        columns += [f"Strict by seed ({', '.join(map(str, seeds))})", "Spread (points)"]
        notes = [
            _seeds_note(seeds) + " N is the number of prompts; spread is max − min of the seeds' strict accuracies."
        ]
    return Table(columns, rows, caption, notes)


def _pooled_seeds(summary: Mapping | None) -> list[int]:
    """The seeds of a several-seed phase summary (its rows are pooled); [] for one seed or none."""
    seeds = list((summary or {}).get("seeds") or [])
    return seeds if len(seeds) > 1 else []


def _seed_dots(axis, x: float, values: Sequence[float]) -> None:
    """Each seed's value as a hollow dot beside the pooled bar at ``x``."""
    if values:
        axis.scatter([x + 0.25] * len(values), values, facecolors="none", edgecolors="black", s=20, zorder=3)


def _system_label(summary: Mapping, system: str, names: Mapping[str, str] | None) -> str:
    """The system's display name, marked "(β ≈ static)" when its controller is an adaptive one and its β
    moved less than :data:`dualloop.controller_facts.STATIC_LIKE` in every seed (a method that did not
    adapt; the static controller, also under AdaDPO's loss, is static by design and is not marked)."""
    facts = (summary.get("systems", {}).get(system) or {}).get("controller") or {}
    adaptive = all(f.get("controller") not in (None, "static") for f in facts.values())
    static_like = facts and adaptive and all(f["static_like"] for f in facts.values())
    return display_name(system, names) + (" (β ≈ static)" if static_like else "")


def _by_seed_cell(values: Sequence[float | None], *, signed: bool = False) -> str:
    """Per-seed percentages, e.g. "34.0 / 15.0 / 46.0" (signed: "+4.5 / -5.0")."""
    sign = "+" if signed else ""
    return " / ".join("-" if v is None else f"{round_half_up(100 * v):{sign}.1f}" for v in values)


def _seeds_note(seeds: Sequence[int]) -> str:
    return (
        f"Pooled over seeds {', '.join(map(str, seeds))}: the mean over seeds and prompts with a 95% interval from "
        "the crossed seeds × prompts random-effects variance (dualloop.stats.pooled_over_seeds)."
    )


def summary_comparison_table(
    summary: Mapping,
    *,
    method: str = "wald",
    alpha: float = 0.05,
    names: Mapping[str, str] | None = None,
    caption: str = "",
) -> Table:
    """DualLoop-DPO's Table 1 from a phase summary: per comparison the win rate with ties as half,
    the judges' decisions pooled, with its interval, N and ties, beside the paired strict and
    loose accuracy differences with their exact McNemar-based intervals."""
    grouped: dict[tuple[str, str], list[Mapping]] = {}
    for entry in summary["comparisons"]:
        grouped.setdefault((entry["a"], entry["b"]), []).append(entry)
    seeds = summary.get("seeds") or []
    several = bool(_pooled_seeds(summary))
    pairs = {(p["a"], p["b"]): p for p in summary.get("pairs", [])}
    rows = []
    for (system_a, system_b), entries in grouped.items():
        differences = {e["accuracy"]: e for e in entries if e.get("accuracy")}
        if several:
            pair = pairs[(system_a, system_b)]
            rate, interval, n, ties = pair["win_rate"], pair["ci"], pair["n"], pair["ties"]
        else:
            ties = sum(e["ties"] for e in entries)
            n = sum(e["n"] for e in entries)
            pooled = win_rate(sum(e["wins"] for e in entries) + ties / 2, n, method, alpha, ties=ties)
            rate, interval = pooled.rate, (pooled.low, pooled.high)
        strict = differences.get("strict")
        rows.append(
            [
                f"{_system_label(summary, system_a, names)} vs. {_system_label(summary, system_b, names)}",
                _fraction_cell(rate, interval),
                str(n),
                str(ties),
                *(
                    _fraction_cell(differences[c]["accuracy_diff"], differences[c]["accuracy_diff_ci"], signed=True)
                    if c in differences
                    else "-"
                    for c in ("strict", "loose")
                ),
                *(
                    [_by_seed_cell([row["accuracy_diff"] for row in strict["by_seed"]], signed=True) if strict else "-"]
                    if several
                    else []
                ),
            ]
        )
    level = f"{100 * (1 - alpha):g}%"
    columns = ["Comparison", f"Win rate [{level} CI]", "N", "Ties", "Δ strict accuracy", "Δ loose accuracy"]
    if several:
        columns.append(f"Δ strict by seed ({', '.join(map(str, seeds))})")
        notes = [
            _seeds_note(seeds)
            + " Win rates count ties as half (judges pooled per prompt); N and ties count decisions over all seeds."
        ]
    else:
        notes = [
            (
                f"Win rates count ties as half ({method} interval, judges pooled); accuracy differences are paired "
                f"over the same prompts with exact McNemar-based {level} intervals."
            )
        ]
        notes += [f"One seed ({seeds[0]})."] if seeds else []
    return Table(columns, rows, caption, notes)


def controller_table(summary: Mapping, *, names: Mapping[str, str] | None = None, caption: str = "") -> Table:
    """Per trained system and seed, what its β controller did (``systems.<name>.controller`` of a phase
    summary, :func:`dualloop.controller_facts.controller_facts`): β_base's first and last value, how far
    it moved ("≈ static" under :data:`dualloop.controller_facts.STATIC_LIKE`), the β the loss used, and
    for DualLoop-DPO the final KL EMA against its target, the steps with the EMA inside the dead-band,
    and the steps where the dead-band held β_base and where the clip changed it."""
    rows = []
    for system, entry in summary["systems"].items():
        for seed, facts in (entry.get("controller") or {}).items():
            dualloop = "kl_ema_last" in facts
            moved = f"{percent_moved(facts['beta_relative_range'])}%, ×{facts['largest_step_change']:.3g}" + (
                " (≈ static)" if facts["static_like"] else ""
            )
            rows.append(
                [
                    display_name(system, names),
                    str(seed),
                    f"{facts['beta_base_first']:.3g} → {facts['beta_base_last']:.3g}",
                    moved,
                    "–".join(f"{v:.3g}" for v in facts["beta_used_range"]),
                    f"{facts['kl_ema_last']:.3g} / {facts['kl_target']:.3g}" if dualloop else "-",
                    f"{facts['steps_in_band']} of {facts['steps']}" if dualloop else "-",
                    str(facts["deadband_held"]) if dualloop else "-",
                    str(facts["clip_acted"]) if dualloop else "-",
                ]
            )
    columns = [
        "System",
        "Seed",
        "β_base first → last",
        "β_base moved, largest step",
        "β used",
        "KL EMA end / target",
        "Steps in band",
        "Dead-band held",
        "Clip acted",
    ]
    notes = [
        "From each run's training log. β_base moved: (max − min) / first value over the logged steps, and the largest factor between two consecutive steps; the band is "
        "the dead-band target · (1 ± deadband); dead-band held and clip acted count optimizer steps."
    ]
    return Table(columns, rows, caption, notes)


def reuse_notes(summary: Mapping, full: str) -> list[str]:
    """A note for each system whose run is the run of ``full`` in some seed (an ablation whose switch never
    acted reuses the full run, :func:`dualloop.experiment.train_ablation`): its row is not a result."""
    entries = summary["systems"]
    runs_of = {name: entry.get("runs") or [entry.get("run")] for name, entry in entries.items()}
    seeds = summary.get("seeds") or [None]
    notes = []
    for name, runs in runs_of.items():
        if name == full or full not in runs_of:
            continue
        same = [
            str(seed) for seed, run, full_run in zip(seeds, runs, runs_of[full]) if run is not None and run == full_run
        ]
        if same:
            notes.append(
                f"{name}: its switch never acted in the full run (seed {', '.join(same)}), so its row there is the full "
                "run itself, not an ablation result."
            )
    return notes


def read_history(path: str | Path) -> list[dict]:
    """The rows of a training log history.jsonl; a malformed line raises naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no history.jsonl there")
    rows = []
    for line_number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}, line {line_number}: not JSON ({error})") from None
    return rows


def _series(rows: Sequence[dict], key: str) -> tuple[list[float], list[float]]:
    points = [(row["step"], row[key]) for row in rows if "step" in row and row.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def save_figure(figure, path_stem: str | Path) -> list[Path]:
    """Save figure as path_stem.png (150 dpi) and path_stem.pdf; returns the two paths."""
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    figure.savefig(paths[0], dpi=150, bbox_inches="tight")
    figure.savefig(paths[1], bbox_inches="tight")
    return paths


def _figure(width: float, height: float, ncols: int = 1):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    return figure, axes


def win_rate_figure(
    decisions: Sequence[Decision],
    *,
    method: str = "wald",
    alpha: float = 0.05,
    names: Mapping[str, str] | None = None,
    title: str = "",
    summary: Mapping | None = None,
):
    """Bars of system_a's win rate per comparison with (1 - alpha) interval whiskers and a 50 % line.
    With a several-seed phase ``summary`` the bars are its pooled win rates (``pairs``: seeds and
    prompts crossed) and each seed's win rate is a hollow dot: the decisions of several seeds are not
    independent draws, so they are not pooled as if they were."""
    rates = win_rates(decisions, method=method, alpha=alpha)
    values = [100 * r.rate for r in rates.values()]
    errors = [[100 * (r.rate - r.low) for r in rates.values()], [100 * (r.high - r.rate) for r in rates.values()]]
    seed_dots: list[list[float]] = [[] for _ in rates]
    if summary is not None and _pooled_seeds(summary):
        pairs = {(p["a"], p["b"]): p for p in summary["pairs"]}
        chosen = [pairs[key] for key in rates]
        values = [100 * p["win_rate"] for p in chosen]
        errors = [
            [v - 100 * p["ci"][0] for v, p in zip(values, chosen)],
            [100 * p["ci"][1] - v for v, p in zip(values, chosen)],
        ]
        seed_dots = [[100 * w for w in p["win_rate_by_seed"]] for p in chosen]
    labels = [f"{display_name(a, names)}\nvs. {display_name(b, names)}" for a, b in rates]
    figure, (axis,) = _figure(max(3.0, 1.3 * len(rates) + 1), 3.2)
    axis.bar(range(len(values)), values, yerr=errors, capsize=4, color="#4c72b0")
    for index, dots in enumerate(seed_dots):
        _seed_dots(axis, index, dots)
    axis.axhline(50, color="grey", linestyle=":", linewidth=1)
    axis.set_xticks(range(len(values)), labels, fontsize=8)
    axis.set_ylim(0, 100)
    axis.set_ylabel(f"win rate (%) with {100 * (1 - alpha):g}% CI")
    axis.set_title(title)
    return figure


def difference_figure(
    summary: Mapping, *, criterion: str = "strict", names: Mapping[str, str] | None = None, title: str = ""
):
    """The paired accuracy difference a − b of every comparison of a phase summary under ``criterion``:
    the (pooled) difference with its 95 % interval as a bar and, for a several-seed summary, each seed's
    difference as a hollow dot beside it, and a line at 0 (a claim needs the interval to exclude it)."""
    entries = [e for e in summary["comparisons"] if e.get("accuracy") == criterion]
    figure, (axis,) = _figure(max(3.5, 1.4 * len(entries) + 1), 3.4)
    for index, entry in enumerate(entries):
        value, (low, high) = 100 * entry["accuracy_diff"], (100 * v for v in entry["accuracy_diff_ci"])
        axis.bar([index], [value], yerr=[[value - low], [high - value]], capsize=4, color="#4c72b0")
        _seed_dots(axis, index, [100 * row["accuracy_diff"] for row in entry.get("by_seed", [])])
    axis.axhline(0, color="grey", linewidth=1)
    labels = [f"{display_name(e['a'], names)}\nvs. {display_name(e['b'], names)}" for e in entries]
    axis.set_xticks(range(len(entries)), labels, fontsize=8)
    seeds = _pooled_seeds(summary)
    per_seed = f"; dots: seeds {', '.join(map(str, seeds))}" if seeds else ""
    axis.set_ylabel(f"Δ {criterion} accuracy (points), 95% CI{per_seed}", fontsize=8)
    axis.set_title(title)
    return figure


def trajectory_figure(histories: Mapping[str, str | Path], *, kl_target: float | None = None, title: str = ""):
    """beta, KL and entropy per step, one line per method (histories: method name -> history.jsonl).

    Solid lines: "beta", "kl", "entropy"; dashed: "beta/base" and "kl_ema" where logged; a dotted
    horizontal line at kl_target when given. A run whose controller logs no "kl" (static, annealed)
    shows the trainer's "kl/token", else "kl/logratio", labelled with that key. A panel shows only
    what was logged.
    """
    figure, axes = _figure(11, 3.2, ncols=3)
    _draw_trajectories(axes, histories, kl_target=kl_target)
    figure.suptitle(title)
    return figure


def seed_trajectory_figure(
    histories: Mapping[int, Mapping[str, str | Path]],
    *,
    kl_target: float | None = None,
    deadband: float | None = None,
    title: str = "",
):
    """:func:`trajectory_figure` for every seed, one row of panels per seed (histories: seed ->
    method -> history.jsonl), each method in the same colour in every row; with ``deadband`` the KL
    panel shades DualLoop-DPO's dead-band ``target · (1 ± deadband)`` around ``kl_target``."""
    import matplotlib.figure

    figure = matplotlib.figure.Figure(figsize=(11, 3.0 * len(histories)), layout="constrained")
    axes = figure.subplots(len(histories), 3, squeeze=False)
    for row, (seed, by_method) in zip(axes, histories.items()):
        _draw_trajectories(row, by_method, kl_target=kl_target, deadband=deadband)
        row[0].set_title(f"seed {seed}", fontsize=9, loc="left")
    figure.suptitle(title)
    return figure


def _draw_trajectories(axes, histories: Mapping[str, str | Path], *, kl_target=None, deadband=None) -> None:
    panels = [
        (("beta",), "beta/base", r"$\beta$"),
        (("kl", "kl/token", "kl/logratio"), "kl_ema", "KL (nats/token)"),
        (("entropy",), None, "entropy"),
    ]
    for index, (method, path) in enumerate(histories.items()):
        rows = read_history(path)
        color = f"C{index}"
        for axis, (keys, dashed_key, label) in zip(axes, panels):
            for key in keys:
                steps, values = _series(rows, key)
                if steps:
                    axis.plot(steps, values, color=color, label=method if key == keys[0] else f"{method} ({key})")
                    break
            if dashed_key:
                steps, values = _series(rows, dashed_key)
                if steps:
                    axis.plot(steps, values, color=color, linestyle="--", label=f"{method} ({dashed_key})")
            axis.set_ylabel(label)
            axis.set_xlabel("step")
    if kl_target is not None:
        axes[1].axhline(kl_target, color="grey", linestyle=":", linewidth=1, label="KL target")
        if deadband:
            axes[1].axhspan(
                kl_target * (1 - deadband), kl_target * (1 + deadband), color="grey", alpha=0.2, label="dead-band"
            )
    for axis in axes:
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)


def metrics_figure(histories: Mapping[str, str | Path], keys: Sequence[str], *, title: str = ""):
    """One panel per logged key (e.g. "loss", "rewards/accuracies", "rewards/margins"), one line per
    run (histories: run name -> history.jsonl): AdaDPO (Chen et al.) Figure 2's training dynamics."""
    figure, axes = _figure(3.6 * len(keys), 3.2, ncols=len(keys))
    for index, (name, path) in enumerate(histories.items()):
        rows = read_history(path)
        for axis, key in zip(axes, keys):
            steps, values = _series(rows, key)
            if steps:
                axis.plot(steps, values, color=f"C{index}", label=name)
            axis.set(xlabel="step", ylabel=key)
    for axis in axes:
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize=7)
    figure.suptitle(title)
    return figure


def final_kl(path: str | Path, key: str = "kl", last: int = 10) -> float:
    """Mean of the last `last` logged values of `key` in a history.jsonl (the run's final KL)."""
    _, values = _series(read_history(path), key)
    if not values:
        raise ValueError(f"{path}: no row logs {key!r}")
    tail = values[-last:]
    return sum(tail) / len(tail)


def accuracy_kl_figure(summaries: Sequence[Mapping], *, names: Mapping[str, str] | None = None, title: str = ""):
    """Held-out strict accuracy (95 % Wilson whiskers) against the KL each run reached
    (``systems.<name>.kl`` of phase summaries, dualloop.summary): DualLoop-DPO's eq. (1) trade-off,
    one point per trained run (a run in several summaries is drawn once), the base model at 0; a system
    of a several-seed summary is its pooled point with its interval plus one hollow marker per seed.
    Each point has its own colour and marker; runs that reached the same KL and accuracy, and one run
    under several names (an ablation whose switch never acted reuses the full run), share one point,
    labelled with all their names."""
    points: dict[tuple[float, float], list] = {}
    for summary_values in summaries:
        for system, entry in summary_values["systems"].items():
            if entry.get("kl") is None:
                continue
            at = (round(entry["kl"], 4), round(entry["strict_accuracy"], 4))
            labels, label = points.setdefault(at, [entry, []])[1], display_name(system, names)
            if label not in labels:
                labels.append(label)
    figure, (axis,) = _figure(8.0, 4.0)
    markers = "osD^vP*Xh<>p"
    for index, (entry, labels) in enumerate(points.values()):
        rate, (low, high) = 100 * entry["strict_accuracy"], (100 * v for v in entry["strict_ci"])
        axis.errorbar(
            [entry["kl"]],
            [rate],
            yerr=[[rate - low], [high - rate]],
            fmt=markers[index % len(markers)],
            capsize=3,
            color=f"C{index % 10}",
            label=" = ".join(labels),
        )
        if entry.get("kl_by_seed") and entry.get("strict_by_seed"):  # every seed, hollow, beside the pooled point
            seeds = [(kl, 100 * acc) for kl, acc in zip(entry["kl_by_seed"], entry["strict_by_seed"]) if kl is not None]
            axis.scatter(
                [kl for kl, _ in seeds],
                [acc for _, acc in seeds],
                marker=markers[index % len(markers)],
                facecolors="none",
                edgecolors=f"C{index % 10}",
                s=22,
            )
    axis.set_xlabel("KL(π_θ ‖ π_ref) reached (nats/token, mean of the last logged steps)")
    axis.set_ylabel("held-out strict accuracy (%)")
    if points:
        axis.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    axis.set_title(title)
    return figure


def generalization_table(
    summary: Mapping,
    *,
    unscored: Sequence[str] = (),
    system: str = "dualloop",
    method: str = "wald",
    alpha: float = 0.05,
    names: Mapping[str, str] | None = None,
    caption: str = "",
) -> Table:
    """DualLoop-DPO's Table 2 from a phase summary over several sets
    (dualloop.likelihood.write_phase_summary): one row per set with the measure that set has.

    Per system: IFEval strict prompt-level accuracy on the judged set with a checker, likelihood
    accuracy on answer-pair sets (summary ``"likelihood"``), each with its Wilson interval. Per
    opponent of ``system``: the paired accuracy difference with its exact McNemar-based interval
    and, on judged sets, the win rate with ties as half (judges pooled). ``unscored`` sets (no
    offline judge) get a row saying so. System columns are left out when no row has a per-system
    value (every set judged pairwise only, as on the paper profile)."""
    comparisons = [e for e in summary["comparisons"] if e["a"] == system]
    opponents = list(dict.fromkeys(e["b"] for e in comparisons))
    likelihood = summary.get("likelihood", {})
    judged = list(dict.fromkeys(e["prompt_set"] for e in comparisons if e["judge"] != "likelihood"))
    checked = summary["prompt_set"] if summary["systems"] else None
    systems = [system, *opponents]
    rows: list[list[str]] = []
    kinds: dict[str, list[str]] = {}
    for dataset in [*judged, *likelihood, *unscored]:
        entries = [e for e in comparisons if e["prompt_set"] == dataset]
        judges = ", ".join(dict.fromkeys(e["judge"] for e in entries))
        if dataset in likelihood:
            kind, measure = "likelihood accuracy", "likelihood accuracy"
            values = {s: (v["accuracy"], v["ci"]) for s, v in likelihood[dataset].items()}
        elif dataset == checked:
            kind, measure = "strict accuracy", f"strict accuracy (gold checker); win rate ({judges})"
            values = {s: (v["strict_accuracy"], v["strict_ci"]) for s, v in summary["systems"].items()}
        elif dataset in judged:
            kind, measure, values = "win rate", f"win rate ({judges})", {}
        else:
            kind, measure, values = "no offline judge", "no offline judge (sample answers)", {}
        kinds.setdefault(kind, []).append(dataset)
        versus = [_versus_cell([e for e in entries if e["b"] == opponent], method, alpha) for opponent in opponents]
        rows.append([dataset, measure, *(_fraction_cell(*values[s]) if s in values else "-" for s in systems), *versus])
    has_values = any(cell != "-" for row in rows for cell in row[2 : 2 + len(systems)])
    if not has_values:
        rows = [row[:2] + row[2 + len(systems) :] for row in rows]
    level = f"{100 * (1 - alpha):g}%"
    columns = [
        "Dataset",
        "Measure",
        *([display_name(s, names) for s in systems] if has_values else []),
        *(f"vs. {display_name(o, names)}" for o in opponents),
    ]
    explained = {
        "strict accuracy": "IFEval strict prompt-level accuracy by the gold instruction checker",
        "likelihood accuracy": "likelihood accuracy, the share of items whose truthful (honest) answer has "
        "a higher length-normalized log-likelihood under the model than the "
        "sycophantic (deceptive) one",
        "win rate": "win rate of the judges' pairwise decisions",
        "no offline judge": "no offline judge: no score, sample answers are shown instead",
    }
    notes = [
        "Rows: " + "; ".join(f"{', '.join(sets)}: {explained[kind]}" for kind, sets in kinds.items()) + ".",
        (
            f"System columns: {level} Wilson intervals. vs. columns: {display_name(system, names)} minus that "
            f"system, paired over the same items (Δ, exact McNemar-based {level} interval), and on judged sets "
            f"{display_name(system, names)}'s win rate with ties as half ({method} interval, judges pooled)."
        ),
    ]
    return Table(columns, rows, caption, notes)


def _versus_cell(entries: Sequence[Mapping], method: str, alpha: float) -> str:
    """One opponent's cell of the generalization table: "Δ +x% [..]" and/or "win y% [..]"."""
    parts = []
    difference = next((e for e in entries if e.get("accuracy") in ("strict", "likelihood")), None)
    if difference is not None and difference["accuracy_diff"] is not None:
        parts.append("Δ " + _fraction_cell(difference["accuracy_diff"], difference["accuracy_diff_ci"], signed=True))
    judged = [e for e in entries if e["win_rate"] is not None]
    if judged:
        wins, ties, n = (sum(e[key] for e in judged) for key in ("wins", "ties", "n"))
        pooled = win_rate(wins + ties / 2, n, method, alpha, ties=ties)
        parts.append("win " + _fraction_cell(pooled.rate, (pooled.low, pooled.high)))
    return "; ".join(parts) or "-"


def sample_answers_table(
    path: str | Path,
    systems: Sequence[str],
    *,
    width: int = 160,
    names: Mapping[str, str] | None = None,
    caption: str = "",
) -> Table:
    """A few questions with each system's answer, from a sample-answers file
    (dualloop.offline_sets.write_sample_answers), each text on one line and cut at ``width``
    characters; for the sets no offline judge scores."""
    from dualloop.offline_sets import read_sample_answers

    def cut(text: str) -> str:
        flat = " ".join(text.split()).replace("|", "/")
        return flat if len(flat) <= width else flat[: width - 1].rstrip() + "…"

    rows = [[cut(row["question"]), *(cut(row["answers"][s]) for s in systems)] for row in read_sample_answers(path)]
    return Table(["Question", *(display_name(s, names) for s in systems)], rows, caption)
