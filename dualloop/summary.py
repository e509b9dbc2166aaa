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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dualloop.judges import Decision
from dualloop.stats import OUTCOME_SCORES, accuracy, paired_accuracy_difference, pooled_over_seeds, win_rate

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


def _prompt_scores(decisions: Sequence[Decision]) -> dict[str, float]:
    """prompt id -> mean win score of system A over the prompt's parseable decisions (ties ½)."""
    by_prompt: dict[str, list[float]] = {}
    for decision in decisions:
        outcome = decision.outcome()
        if outcome is not None:
            by_prompt.setdefault(decision.prompt_id, []).append(OUTCOME_SCORES[outcome])
    return {prompt: sum(values) / len(values) for prompt, values in by_prompt.items()}


def _common_prompts(keys_by_seed: Mapping[int, Iterable[str]]) -> list[str]:
    """The prompt ids every seed has, sorted."""
    return sorted(set.intersection(*(set(keys) for keys in keys_by_seed.values())))


def seeds_summary(
    phase: str,
    profile: str,
    prompt_set: str,
    per_seed: Mapping[int, tuple[Sequence[Decision], Mapping[str, str | Path]]],
    *,
    method: str = "wald",
    alpha: float = 0.05,
) -> dict[str, Any]:
    """The summary of a phase run under several seeds: ``per_seed`` maps each seed to its
    (decisions, score files) as :func:`phase_summary` takes them.

    One seed: exactly :func:`phase_summary`, plus ``"seeds": [seed]``. Several: ``"by_seed"`` holds
    each seed's own summary, and ``systems`` / ``comparisons`` hold the pooled rows — the same fields,
    with the estimate the mean over seeds and prompts and the interval of
    :func:`dualloop.stats.pooled_over_seeds` (seeds × prompts crossed), plus the per-seed values
    (``strict_by_seed``, ``loose_by_seed``, ``strict_spread``: max − min over seeds; per comparison
    ``by_seed``: each seed's win rate and paired difference with their one-seed intervals) and the
    variance components. ``pairs`` pools the judges of each (a, b) the same way (a prompt's score is
    the mean over its judges' decisions), for tables that show one win rate per comparison.
    """
    if not per_seed:
        raise ValueError("seeds_summary: no seed")
    seeds = sorted(per_seed)
    by_seed = {
        seed: phase_summary(phase, profile, prompt_set, decisions, files, method=method, alpha=alpha)
        for seed, (decisions, files) in per_seed.items()
    }
    if len(seeds) == 1:
        return {**by_seed[seeds[0]], "seeds": seeds}
    scores = {
        seed: {system: read_scores(path) for system, path in files.items()} for seed, (_, files) in per_seed.items()
    }
    systems = {}
    for system in by_seed[seeds[0]]["systems"]:
        if not all(system in scores[seed] for seed in seeds):
            continue
        prompts = _common_prompts({seed: list(scores[seed][system]) for seed in seeds})
        if len(prompts) < 2 or any(len(scores[seed][system]) != len(prompts) for seed in seeds):
            raise ValueError(f"system {system}: the seeds {seeds} did not score the same ≥ 2 prompts")
        entry: dict[str, Any] = {"n": len(prompts), "seeds": seeds}
        for criterion in ("strict", "loose"):
            table = [[scores[s][system][p][criterion] for p in prompts] for s in seeds]
            pooled = pooled_over_seeds(table, alpha, (0.0, 1.0))
            entry.update(
                {
                    f"{criterion}_accuracy": pooled.estimate,
                    f"{criterion}_ci": [pooled.low, pooled.high],
                    f"{criterion}_by_seed": list(pooled.by_seed),
                    f"{criterion}_spread": max(pooled.by_seed) - min(pooled.by_seed),
                }
            )
        systems[system] = entry
    groups: dict[tuple[str, str, str], dict[int, list[Decision]]] = {}
    for seed, (decisions, _) in per_seed.items():
        for decision in decisions:
            key = (decision.system_a, decision.system_b, decision.judge)
            groups.setdefault(key, {}).setdefault(seed, []).append(decision)
    comparisons = [
        _pooled_comparison(key, by_judge, scores, by_seed, alpha)
        for key, by_judge in groups.items()
        if len(by_judge) == len(seeds)
    ]
    pairs: dict[tuple[str, str], dict[int, list[Decision]]] = {}
    for (a, b, _), by_judge in groups.items():
        for seed, decisions in by_judge.items():
            pairs.setdefault((a, b), {}).setdefault(seed, []).extend(decisions)
    return {
        "phase": phase,
        "profile": profile,
        "prompt_set": prompt_set,
        "seeds": seeds,
        "estimator": "crossed-random-effects",
        "systems": systems,
        "comparisons": comparisons,
        "pairs": [
            _pooled_win_rate(a, b, decisions, alpha)
            for (a, b), decisions in pairs.items()
            if len(decisions) == len(seeds)
        ],
        "by_seed": {str(seed): by_seed[seed] for seed in seeds},
    }


def _pooled_win_rate(a: str, b: str, decisions: Mapping[int, Sequence[Decision]], alpha: float) -> dict[str, Any]:
    """The win rate of a over b pooled over seeds and prompts (each prompt's score: the mean over its
    parseable decisions) on the prompts every seed decided (``n_prompts``; ``prompts_dropped`` counts
    the others); None, as with one seed, where fewer than 2 prompts were decided in every seed."""
    seeds = sorted(decisions)
    prompt_scores = {seed: _prompt_scores(decisions[seed]) for seed in seeds}
    prompts = _common_prompts({seed: prompt_scores[seed] for seed in seeds})
    judged = set().union(*({d.prompt_id for d in decisions[seed]} for seed in seeds))
    outcomes = [d.outcome() for seed in seeds for d in decisions[seed]]
    entry: dict[str, Any] = {
        "a": a,
        "b": b,
        "n": sum(o is not None for o in outcomes),
        "ties": outcomes.count("tie"),
        "n_prompts": len(prompts),
        "prompts_dropped": len(judged) - len(prompts),
        "win_rate": None,
        "ci": None,
        "win_rate_by_seed": None,
    }
    if len(prompts) >= 2:
        pooled = pooled_over_seeds([[prompt_scores[s][p] for p in prompts] for s in seeds], alpha, (0.0, 1.0))
        entry.update(win_rate=pooled.estimate, ci=[pooled.low, pooled.high], win_rate_by_seed=list(pooled.by_seed))
    return entry


def _pooled_comparison(
    key: tuple[str, str, str],
    decisions: Mapping[int, Sequence[Decision]],
    scores: Mapping[int, Mapping[str, Mapping[str, Mapping[str, bool]]]],
    by_seed: Mapping[int, Mapping[str, Any]],
    alpha: float,
) -> dict[str, Any]:
    """One (a, b, judge) row pooled over seeds: summed counts, pooled win rate and paired difference
    (on the prompts every seed judged, unparseable verdicts included: the accuracies do not depend on them)."""
    a, b, judge = key
    seeds = sorted(decisions)
    rows = {
        seed: next(e for e in by_seed[seed]["comparisons"] if (e["a"], e["b"], e["judge"]) == key) for seed in seeds
    }
    win = _pooled_win_rate(a, b, decisions, alpha)
    entry: dict[str, Any] = {
        "a": a,
        "b": b,
        "judge": judge,
        **{field: sum(rows[s][field] for s in seeds) for field in ("n", "wins", "losses", "ties", "unparseable")},
        "win_rate": win["win_rate"],
        "ci": win["ci"],
        "accuracy": rows[seeds[0]]["accuracy"],
        "accuracy_diff": None,
        "accuracy_diff_ci": None,
        "seeds": seeds,
        "by_seed": [
            {"seed": s, **{f: rows[s][f] for f in ("n", "win_rate", "ci", "accuracy_diff", "accuracy_diff_ci")}}
            for s in seeds
        ],
    }
    criterion = entry["accuracy"]
    if criterion is not None:
        judged = _common_prompts({s: [d.prompt_id for d in decisions[s]] for s in seeds})
        if len(judged) < 2:
            raise ValueError(f"{a} vs {b}: the seeds {seeds} judged {len(judged)} prompts in common; need ≥ 2")
        pooled = pooled_over_seeds(
            [[float(scores[s][a][p][criterion]) - float(scores[s][b][p][criterion]) for p in judged] for s in seeds],
            alpha,
            (-1.0, 1.0),
        )
        entry.update(
            accuracy_diff=pooled.estimate,
            accuracy_diff_ci=[pooled.low, pooled.high],
            accuracy_diff_df=pooled.df,
            accuracy_diff_n_prompts=pooled.n_prompts,
            accuracy_diff_variance_components={
                "seed": pooled.var_seed,
                "prompt": pooled.var_prompt,
                "residual": pooled.var_residual,
            },
        )
    return entry


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
