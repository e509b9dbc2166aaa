"""Machine-readable phase summaries: ``results/<notebook name>.json``, what tables and figures read.

A phase summary holds, per system, its IFEval prompt-level strict and loose accuracy with 95 %
Wilson intervals (on prompt sets with a checker), and per comparison and judge the pairwise
counts, the win rate with ties as half and its interval (DualLoop-DPO's statistic, Wald by
default), next to the paired accuracy difference with its exact McNemar-based interval
(:func:`dualloop.stats.paired_accuracy_difference`)::

    {"phase": "02_main_comparison", "profile": "cpu", "prompt_set": "verifiable-heldout",
     "systems": {"dualloop": {"n", "strict_accuracy", "strict_ci", "loose_accuracy", "loose_ci"}, ...},
     "comparisons": [{"a", "b", "judge", "n", "wins", "losses", "ties", "unparseable", "win_rate", "ci",
                      "accuracy", "accuracy_diff", "accuracy_diff_ci"}, ...]}

Fractions are in [0, 1]; intervals are ``[low, high]``. ``accuracy`` names the criterion of the
difference: ``"loose"`` for the gold-loose judge's rows, ``"strict"`` for every other judge's;
the accuracy fields are ``null`` where the prompt set has no checker. Inputs are the files the
experiment wrote: per-prompt instruction scores (``results/accuracy/*.jsonl``,
:meth:`dualloop.experiment.Experiment.instruction_scores`) and decisions files.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dualloop.judges import Decision
from dualloop.stats import accuracy, paired_accuracy_difference, win_rate

SYSTEM_FIELDS = ("n", "strict_accuracy", "strict_ci", "loose_accuracy", "loose_ci")
COMPARISON_FIELDS = (
    "a",
    "b",
    "judge",
    "n",
    "wins",
    "losses",
    "ties",
    "win_rate",
    "ci",
    "accuracy_diff",
    "accuracy_diff_ci",
)
LOOSE_JUDGES = ("gold-loose",)


def read_scores(path: str | Path) -> dict[str, dict[str, Any]]:
    """Per-prompt instruction scores (prompt id -> row) of one system; a bad line raises naming it."""
    path = Path(path)
    rows = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows[row["prompt_id"]] = {"strict": all(row["strict"]), "loose": all(row["loose"])}
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path}, line {number}: not an instruction-score row ({error!r})") from None
    if not rows:
        raise ValueError(f"{path}: no instruction scores")
    return rows


def _interval(low: float, high: float) -> list[float]:
    return [low, high]


def system_entry(scores: Mapping[str, Mapping[str, bool]], alpha: float = 0.05) -> dict[str, Any]:
    """{"n", "strict_accuracy", "strict_ci", "loose_accuracy", "loose_ci"} of one system's scores."""
    strict = accuracy([row["strict"] for row in scores.values()], alpha)
    loose = accuracy([row["loose"] for row in scores.values()], alpha)
    return {
        "n": strict.n,
        "strict_accuracy": strict.rate,
        "strict_ci": _interval(strict.low, strict.high),
        "loose_accuracy": loose.rate,
        "loose_ci": _interval(loose.low, loose.high),
    }


def comparison_entry(
    decisions: Sequence[Decision],
    scores: Mapping[str, Mapping[str, Mapping[str, bool]]],
    *,
    method: str = "wald",
    alpha: float = 0.05,
) -> dict[str, Any]:
    """The summary row of one (a, b, judge): counts, win rate with ties as half and its interval,
    and — when both systems have scores — the paired accuracy difference on the judged prompts."""
    first = decisions[0]
    a, b, judge = first.system_a, first.system_b, first.judge
    if any((d.system_a, d.system_b, d.judge) != (a, b, judge) for d in decisions):
        raise ValueError("comparison_entry takes the decisions of one (system_a, system_b, judge)")
    outcomes = [d.outcome() for d in decisions]
    wins, losses, ties = (outcomes.count(o) for o in ("win", "loss", "tie"))
    decided = wins + losses + ties
    entry: dict[str, Any] = {
        "a": a,
        "b": b,
        "judge": judge,
        "n": decided,
        "wins": wins,
        "losses": losses,
        "ties": ties,
        "unparseable": len(outcomes) - decided,
        "win_rate": None,
        "ci": None,
    }
    if decided:
        rate = win_rate(wins + ties / 2, decided, method, alpha, ties=ties)
        entry.update(win_rate=rate.rate, ci=_interval(rate.low, rate.high))
    criterion = "loose" if judge in LOOSE_JUDGES else "strict"
    entry.update(accuracy=None, accuracy_diff=None, accuracy_diff_ci=None)
    if a in scores and b in scores:
        prompt_ids = sorted({d.prompt_id for d in decisions})
        missing = [p for p in prompt_ids if p not in scores[a] or p not in scores[b]]
        if missing:
            raise ValueError(f"{a} vs {b}: no instruction scores for judged prompt {missing[0]!r}")
        difference = paired_accuracy_difference(
            [scores[a][p][criterion] for p in prompt_ids], [scores[b][p][criterion] for p in prompt_ids], alpha
        )
        entry.update(
            accuracy=criterion,
            accuracy_diff=difference.difference,
            accuracy_diff_ci=_interval(difference.low, difference.high),
        )
    return entry


def phase_summary(
    phase: str,
    profile: str,
    prompt_set: str,
    decisions: Sequence[Decision],
    score_files: Mapping[str, str | Path] | None = None,
    *,
    method: str = "wald",
    alpha: float = 0.05,
) -> dict[str, Any]:
    """The summary of a phase from its decisions and its systems' score files (system -> path)."""
    scores = {system: read_scores(path) for system, path in (score_files or {}).items()}
    groups: dict[tuple[str, str, str], list[Decision]] = {}
    for decision in decisions:
        groups.setdefault((decision.system_a, decision.system_b, decision.judge), []).append(decision)
    return {
        "phase": phase,
        "profile": profile,
        "prompt_set": prompt_set,
        "systems": {system: system_entry(rows, alpha) for system, rows in scores.items()},
        "comparisons": [comparison_entry(group, scores, method=method, alpha=alpha) for group in groups.values()],
    }


def write_summary(results_dir: str | Path, summary: Mapping[str, Any]) -> Path:
    """Write ``results_dir/<phase>.json``; returns its path."""
    path = Path(results_dir) / f"{summary['phase']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    return path


def final_token_kl(history: str | Path, last: int = 4) -> float | None:
    """The KL a run reached: the mean of the last ``last`` logged values of the exact token KL
    ``kl/token`` (nats per token; logged with ``log_token_kl`` or a token-KL controller), else of
    the controller's ``kl``; None when the run logged neither."""
    from dualloop.report import final_kl

    for key in ("kl/token", "kl"):
        try:
            return final_kl(history, key, last)
        except ValueError:
            continue
    return None


def read_summary(path: str | Path) -> dict[str, Any]:
    """A phase summary; a missing field raises naming the file and the field."""
    path = Path(path)
    summary = json.loads(path.read_text(encoding="utf-8"))
    for key in ("phase", "profile", "systems", "comparisons"):
        if key not in summary:
            raise ValueError(f"{path}: no {key!r} field: not a phase summary")
    for name, entry in summary["systems"].items():
        for key in SYSTEM_FIELDS:
            if key not in entry:
                raise ValueError(f"{path}: systems.{name} has no {key!r}")
    for index, entry in enumerate(summary["comparisons"]):
        for key in COMPARISON_FIELDS:
            if key not in entry:
                raise ValueError(f"{path}: comparisons[{index}] has no {key!r}")
    return summary
