"""Pilot: static-β DPO under a few schedules on the offline set; held-out accuracy and KL per schedule.

    python benchmarks/pilot.py --profile cpu --grid max_steps=16,24 learning_rate=5e-4,1e-3 beta=0.1 \\
        [--also beta=0.05,0.3] [--also augmented=false] [--prompts 200:250] [--seeds 0 1 2] [--out runs/pilot]

Each schedule is one static-β training run (the profile's settings with the grid's values; runs
are kept in the registry of ``--out``, so a rerun trains nothing new), answered greedily on the
held-out prompts ``--prompts START:END`` (by default the 50 prompts after the 200 that the phases
evaluate, so the schedule is not chosen on the prompts it is then judged on), checked strictly
and loosely. The base model is scored on the same prompts. Printed and written to
``OUT/pilot.md`` and ``OUT/pilot.json``: per schedule the strict and loose accuracy with 95 %
Wilson intervals, the paired strict difference to the base model with its exact McNemar-based
interval, and the final KL (mean of the last 4 logged values of the exact token KL ``kl/token``,
nats per token, and of the log-ratio estimate ``kl/logratio``) and training loss; and the figure
``OUT/pilot_accuracy_kl.{png,pdf}``: strict accuracy against the token KL of each schedule.

``--seeds 0 1 2`` trains every schedule under each seed (each its own run) and adds, per schedule, the
gain over the base model pooled over seeds and prompts (``dualloop.stats.pooled_over_seeds``) with each
seed's gain: a schedule is chosen for a gain that holds across seeds, not for one seed's.

``--grid`` is a product of values; each ``--also`` adds the schedules of the first grid point with
those values changed. Keys: ``max_steps`` (integer >= 1), ``learning_rate`` and ``beta`` (> 0),
``augmented`` (true/false: train with or without the augmented pairs). An impossible value is
refused before anything trains, naming the key and the value.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

GRID_KEYS = {"max_steps": "training", "learning_rate": "training", "beta": "training", "augmented": "data"}


def _value(key: str, text: str):
    """A grid value, checked: a clear error naming the key and value when impossible."""
    if key not in GRID_KEYS:
        raise ValueError(f"pilot grid: unknown key {key!r}; use {', '.join(GRID_KEYS)}")
    try:
        if key == "max_steps":
            value = int(text)
            if value < 1:
                raise ValueError
            return value
        if key == "augmented":
            if text.lower() not in ("true", "false"):
                raise ValueError
            return text.lower() == "true"
        value = float(text)
        if not math.isfinite(value) or value <= 0:
            raise ValueError
        return value
    except ValueError:
        need = {"max_steps": "an integer >= 1", "augmented": "true or false"}.get(key, "a finite number > 0")
        raise ValueError(f"pilot grid: {key}={text!r} is impossible: need {need}") from None


def parse_assignments(items: list[str]) -> dict[str, list]:
    """``["max_steps=16,24", "beta=0.1"]`` -> {"max_steps": [16, 24], "beta": [0.1]}."""
    grid: dict[str, list] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not values:
            raise ValueError(f"pilot grid: {item!r} is not KEY=V1,V2,...")
        grid[key.strip()] = [_value(key.strip(), v.strip()) for v in values.split(",")]
    return grid


def schedules(grid: dict[str, list], also: list[dict[str, list]]) -> list[dict]:
    """The grid's product, then each ``--also`` variation of its first point."""
    keys = list(grid)
    points = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    for variation in also:
        for values in itertools.product(*variation.values()):
            point = {**points[0], **dict(zip(variation, values))}
            if point not in points:
                points.append(point)
    return points


def _label(point: dict) -> str:
    return " ".join(
        f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}" for key, value in point.items()
    )


def _tail_mean(history: Path, key: str, last: int = 4) -> float | None:
    from dualloop.report import final_kl

    try:
        return final_kl(history, key, last)
    except ValueError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--grid", nargs="+", required=True, metavar="KEY=V1,V2")
    parser.add_argument("--also", nargs="+", action="append", default=[], metavar="KEY=V1,V2")
    parser.add_argument("--prompts", default="200:250", help="START:END of the held-out prompts")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=None, help="seeds of every schedule (default: the profile's)"
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "pilot")
    args = parser.parse_args(argv)
    try:
        grid = parse_assignments(args.grid)
        also = [parse_assignments(items) for items in args.also]
        start, _, end = args.prompts.partition(":")
        first, last = int(start), int(end)
        if not 0 <= first < last:
            raise ValueError(f"--prompts {args.prompts!r}: need 0 <= START < END")
    except ValueError as error:
        print(f"pilot: {error}", file=sys.stderr)
        return 2

    from dualloop.__main__ import experiment_from_profile
    from dualloop.data import load_verifiable_heldout
    from dualloop.stats import accuracy, paired_accuracy_difference, pooled_over_seeds
    from dualloop.summary import read_scores

    available = len(load_verifiable_heldout())
    if last > available:
        print(f"pilot: --prompts {args.prompts}: the held-out set holds {available} prompts", file=sys.stderr)
        return 2
    points = schedules(grid, also)
    print(f"pilot: {len(points)} schedules on held-out prompts {first}:{last} -> {args.out}", flush=True)
    overrides = [
        f"evaluation.n_prompts={last - first}",
        f"evaluation.first_prompt={first}",
        "training.log_token_kl=true",
    ]
    base_experiment = experiment_from_profile(args.profile, args.out, overrides)
    base_scores = read_scores(base_experiment.instruction_scores("base", "verifiable-heldout"))
    seeds = args.seeds or [base_experiment.seed]
    rows, per_seed_passes = [], {}
    for point, seed in itertools.product(points, seeds):
        sets = [f"{GRID_KEYS[key]}.{key}={value}" for key, value in point.items()]
        experiment = experiment_from_profile(args.profile, args.out, overrides + sets, seed=seed)
        training = {k: v for k, v in point.items() if GRID_KEYS[k] == "training"}
        run = experiment.train("static", **training)
        name = f"pilot-{run.id}"
        scores = read_scores(experiment.instruction_scores(name, "verifiable-heldout", run))
        per_seed_passes.setdefault(_label(point), []).append([scores[p]["strict"] for p in base_scores])
        strict = accuracy([scores[p]["strict"] for p in base_scores])
        loose = accuracy([scores[p]["loose"] for p in base_scores])
        gain = paired_accuracy_difference(
            [scores[p]["strict"] for p in base_scores], [base_scores[p]["strict"] for p in base_scores]
        )
        rows.append(
            {
                "schedule": point,
                "seed": seed,
                "run": run.id,
                "n": strict.n,
                "strict_accuracy": strict.rate,
                "strict_ci": [strict.low, strict.high],
                "loose_accuracy": loose.rate,
                "loose_ci": [loose.low, loose.high],
                "strict_gain_vs_base": gain.difference,
                "strict_gain_ci": [gain.low, gain.high],
                "kl_token": _tail_mean(run.history_path, "kl/token"),
                "kl_logratio": _tail_mean(run.history_path, "kl/logratio"),
                "final_loss": _tail_mean(run.history_path, "loss"),
            }
        )
        print(
            f"pilot: {_label(point)} seed {seed}: strict {strict.rate:.3f}, gain {gain.difference:+.3f} "
            f"[{gain.low:+.3f}, {gain.high:+.3f}], token KL {rows[-1]['kl_token']}",
            flush=True,
        )
    base_strict = accuracy([row["strict"] for row in base_scores.values()])
    base_loose = accuracy([row["loose"] for row in base_scores.values()])
    lines = [
        "| schedule | strict accuracy | loose accuracy | Δ strict vs base | token KL | log-ratio KL | loss |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| base model | {_cell(base_strict.rate, base_strict.low, base_strict.high)} | "
        f"{_cell(base_loose.rate, base_loose.low, base_loose.high)} | – | 0 | 0 | – |",
    ]
    several = len(seeds) > 1
    for row in rows:
        seed_label = f" seed={row['seed']}" if several else ""
        lines.append(
            f"| {_label(row['schedule'])}{seed_label} | {_cell(row['strict_accuracy'], *row['strict_ci'])} | "
            f"{_cell(row['loose_accuracy'], *row['loose_ci'])} | "
            f"{_cell(row['strict_gain_vs_base'], *row['strict_gain_ci'], signed=True)} | "
            f"{_number(row['kl_token'])} | {_number(row['kl_logratio'])} | {_number(row['final_loss'])} |"
        )
    pooled = []
    if several:  # each schedule's gain over the base model, pooled over seeds and prompts (crossed)
        base_passes = [base_scores[p]["strict"] for p in base_scores]
        for label, by_seed in per_seed_passes.items():
            gain = pooled_over_seeds([[float(a) - float(b) for a, b in zip(passes, base_passes)] for passes in by_seed])
            pooled.append(
                {
                    "schedule": label,
                    "seeds": seeds,
                    "strict_gain_vs_base": gain.estimate,
                    "strict_gain_ci": [gain.low, gain.high],
                    "gain_by_seed": list(gain.by_seed),
                }
            )
            by_seed_text = " / ".join(f"{100 * g:+.1f}" for g in gain.by_seed)
            lines.append(
                f"| {label} pooled over seeds {', '.join(map(str, seeds))} (per seed {by_seed_text}) | – | – | "
                f"{_cell(gain.estimate, gain.low, gain.high, signed=True)} | – | – | – |"
            )
    table = "\n".join(lines) + "\n"
    print(table, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pilot.md").write_text(table, encoding="utf-8")
    (args.out / "pilot.json").write_text(
        json.dumps(
            {
                "profile": args.profile,
                "prompts": [first, last],
                "seeds": seeds,
                "base": {"strict_accuracy": base_strict.rate, "loose_accuracy": base_loose.rate},
                "schedules": rows,
                "pooled": pooled,
            },
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
    save_figure(args.out / "pilot.json", args.out / "pilot_accuracy_kl")
    return 0


def save_figure(pilot_json: Path, path_stem: Path) -> None:
    """Held-out strict accuracy against the token KL of each schedule (and the base model at 0),
    rendered from ``pilot.json`` by :func:`dualloop.report.accuracy_kl_figure`."""
    from dualloop import report
    from dualloop.stats import accuracy

    pilot = json.loads(pilot_json.read_text(encoding="utf-8"))
    n = pilot["schedules"][0]["n"]
    base = accuracy(
        [True] * round(pilot["base"]["strict_accuracy"] * n)
        + [False] * (n - round(pilot["base"]["strict_accuracy"] * n))
    )
    systems = {"base model": {"strict_accuracy": base.rate, "strict_ci": [base.low, base.high], "kl": 0.0}}
    systems.update(
        {
            _label(row["schedule"]) + (f" seed={row['seed']}" if len(pilot.get("seeds", [])) > 1 else ""): {
                "strict_accuracy": row["strict_accuracy"],
                "strict_ci": row["strict_ci"],
                "kl": row["kl_token"],
                "run": row["run"],
            }
            for row in pilot["schedules"]
        }
    )
    figure = report.accuracy_kl_figure(
        [{"systems": systems}],
        title=f"Pilot: static-β DPO, held-out prompts {pilot['prompts'][0]}:{pilot['prompts'][1]}",
    )
    report.save_figure(figure, path_stem)


def _cell(value: float, low: float, high: float, *, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{100 * value:{sign}.1f}% [{100 * low:{sign}.1f}, {100 * high:{sign}.1f}]"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    raise SystemExit(main())
