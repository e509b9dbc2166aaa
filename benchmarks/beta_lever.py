"""How far β reaches the optimizer: per run, the gradient's scale against β, gradient clipping, and the KL reached.

    python benchmarks/beta_lever.py runs/cpu-48/registry [more registries ...] [--method dualloop static]

Reads only the training logs (``history.jsonl``) and identities (``config.json``) of the finished runs of
a registry; nothing is trained, generated or judged. For each run it prints the β the loss used, the
gradient norm before clipping, the slope of ln ‖g‖ on ln β (steps with ‖g‖ > 0, where β spans at least a
factor of 2), the steps whose gradient norm exceeds ``max_grad_norm`` (then clipped to it), the steps whose
batch-mean reward margin β·M lies beyond x*, and the token KL(π_θ ‖ π_ref) reached at steps 16, 32 and 48 (each the
mean of its last four logged steps; one training batch per step, so it is noisy).

What the columns mean. Eq. 1's gradient for one pair is −β σ(−βM) ∇M, and d/dβ [β σ(−βM)] = σ(−βM) (1 −
βM σ(βM)) is positive while βM < x* = 1 + W(1/e) ≈ 1.2785 (W: Lambert's function), negative margins
included: below x*, a larger β makes a pair's gradient larger. A step whose norm before clipping exceeds
``max_grad_norm`` (transformers' default 1.0) is rescaled to that norm, so on such a step β's overall
scale never reaches the optimizer; only the direction, set by the pairs' relative weights σ(−βM_i), does.
Adam's update is invariant to one constant factor on every gradient, not to a factor that changes from
step to step: a gradient far below its own history gives a proportionally smaller step. The batch mean of
β·M over four pairs is a proxy for saturation: one large pair can carry it past x*.

Settings column: the controller arguments that differ between the listed runs of one method and that this
run sets; "defaults" where it sets none of them (each then has the profile's or the controller's default).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dualloop.registry import Run
from dualloop.report import read_history

# x* with x* σ(x*) = 1, i.e. x* = 1 + W(1/e): where β σ(−βM) stops growing with β (module docstring).
MARGIN_TURNING_POINT = 1.2784645427610738
KL_STEPS = (16, 32, 48)
DEFAULT_MAX_GRAD_NORM = 1.0  # transformers' TrainingArguments default, which the profiles keep


def runs_in(registry: Path) -> list[Path]:
    """The finished runs of a registry folder (:attr:`dualloop.registry.Run.is_complete`)."""
    if not registry.is_dir():
        raise ValueError(f"{registry}: not a registry folder")
    return sorted(path for path in registry.iterdir() if Run(path).is_complete)


def read_config(run: Run) -> dict:
    """The run's method, seed and training settings, from its identity (``config.json``)."""
    try:
        config = run.config
        return {"method": config["method"], "seed": config["seed"], **config["training"]}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        path = run.path / "config.json"
        raise ValueError(f"{path}: not a run identity ({type(error).__name__}: {error})") from None


def log_slope(betas: np.ndarray, norms: np.ndarray) -> float | None:
    """Least-squares slope of ln ‖g‖ on ln β; None where β spans less than a factor of 2."""
    x, y = np.log(betas), np.log(norms)
    if np.ptp(x) < math.log(2):
        return None
    return float(np.polyfit(x, y, 1)[0])


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def lever(path: Path) -> dict:
    """The β lever of the run at ``path``, from its training log (module docstring)."""
    run = Run(path)
    config = read_config(run)
    log = run.history_path
    rows = [row for row in read_history(log) if "step" in row and "grad_norm" in row and "beta" in row]
    if not rows:
        raise ValueError(f"{log}: no training step logs step, beta and grad_norm")
    for row in rows:
        if not (_number(row["beta"]) and row["beta"] > 0):
            raise ValueError(f"{log}, step {row['step']}: beta = {row['beta']!r} is not a number > 0")
        if not (_number(row["grad_norm"]) and row["grad_norm"] >= 0):
            raise ValueError(f"{log}, step {row['step']}: grad_norm = {row['grad_norm']!r} is not a number ≥ 0")
        for key in ("rewards/margins", "kl/token"):
            if row.get(key) is not None and not _number(row[key]):
                raise ValueError(f"{log}, step {row['step']}: {key} = {row[key]!r} is not a finite number")
    betas = np.array([row["beta"] for row in rows], dtype=float)
    norms = np.array([row["grad_norm"] for row in rows], dtype=float)
    ceiling = config.get("max_grad_norm", DEFAULT_MAX_GRAD_NORM)
    margins = [row["rewards/margins"] for row in rows if row.get("rewards/margins") is not None]
    kl_by_step = {row["step"]: row["kl/token"] for row in rows if row.get("kl/token") is not None}
    token_kl = {}
    for step in KL_STEPS:
        window = [kl_by_step[s] for s in range(step - 3, step + 1) if s in kl_by_step]
        token_kl[step] = sum(window) / len(window) if len(window) == 4 else None
    return {
        "run": run.id,
        "config": config,
        "steps": len(rows),
        "beta": (float(betas.min()), float(betas.max())),
        "grad_norm": (float(norms.min()), float(norms.max())),
        "slope": log_slope(betas[norms > 0], norms[norms > 0]),  # a step whose pairs all saturate has ‖g‖ = 0
        "clipped": int((norms > ceiling).sum()) if ceiling else 0,
        "beyond": sum(m > MARGIN_TURNING_POINT for m in margins) if margins else None,
        "token_kl": token_kl,
    }


def differing_settings(levers: Sequence[dict]) -> dict[str, str]:
    """Run name → the controller arguments that differ between the listed runs of its method."""
    by_method: dict[str, list[dict]] = {}
    for entry in levers:
        by_method.setdefault(entry["config"]["method"], []).append(entry)
    labels = {}
    for entries in by_method.values():
        kwargs = [entry["config"].get("controller_kwargs") or {} for entry in entries]
        keys = sorted({key for arguments in kwargs for key in arguments})
        varying = [key for key in keys if len({json.dumps(arguments.get(key)) for arguments in kwargs}) > 1]
        for entry, arguments in zip(entries, kwargs):
            shown = [f"{key}={arguments[key]}" for key in varying if key in arguments]
            labels[entry["run"]] = ", ".join(shown) or ("defaults" if varying else "–")
    return labels


def _range(pair: tuple[float, float]) -> str:
    low, high = pair
    return f"{low:.2g}" if low == high else f"{low:.2g}–{high:.2g}"


def table(levers: Sequence[dict]) -> str:
    labels = differing_settings(levers)
    head = [
        "| run | method | seed | settings | β used | ‖g‖ before clipping | slope ln‖g‖ / ln β | steps clipped | "
        "steps with batch β·M > x* | " + " | ".join(f"token KL, step {step}" for step in KL_STEPS) + " |",
        "| --- " * (9 + len(KL_STEPS)) + "|",
    ]
    body = []
    ordered = sorted(levers, key=lambda e: (e["config"]["method"], labels[e["run"]], e["config"]["seed"]))
    for entry in ordered:
        slope = "–" if entry["slope"] is None else f"{entry['slope']:.2f}"
        beyond = "–" if entry["beyond"] is None else f"{entry['beyond']} of {entry['steps']}"
        kls = [("–" if entry["token_kl"][step] is None else f"{entry['token_kl'][step]:.3f}") for step in KL_STEPS]
        cells = [entry["run"], entry["config"]["method"], str(entry["config"]["seed"]), labels[entry["run"]]]
        cells += [_range(entry["beta"]), _range(entry["grad_norm"]), slope, f"{entry['clipped']} of {entry['steps']}"]
        body.append("| " + " | ".join([*cells, beyond, *kls]) + " |")
    return "\n".join(head + body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("registries", nargs="+", type=Path, help="registry folders (runs/<profile>/registry)")
    parser.add_argument("--method", nargs="+", help="only runs of these methods")
    args = parser.parse_args(argv)
    try:
        runs = [run for registry in args.registries for run in runs_in(registry)]
        levers = [lever(run) for run in runs]
    except ValueError as error:
        print(f"beta_lever: {error}", file=sys.stderr)
        return 2
    if args.method:
        levers = [entry for entry in levers if entry["config"]["method"] in args.method]
    if not levers:
        print(f"beta_lever: no finished run in {', '.join(map(str, args.registries))}", file=sys.stderr)
        return 2
    print(table(levers))
    return 0


if __name__ == "__main__":
    sys.exit(main())
