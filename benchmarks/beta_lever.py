"""How hard β pulls on training: the gradient's scale against β, and the KL the policy reaches, per run.

    python benchmarks/beta_lever.py runs/cpu-48/registry [more registries ...] [--method dualloop static]

Reads only the training logs (``history.jsonl``) and identities (``config.json``) of the finished runs of
a registry; nothing is trained, generated or judged. For each run it prints the β the loss used, the
gradient norm before clipping, the slope of ln ‖g‖ on ln β over the run's steps (1.0: the gradient scales
with β), the share of steps whose mean reward margin β·M lies inside ±x*, and the token KL(π_θ ‖ π_ref)
the policy has reached at steps 16, 32 and 48 (each the mean of its last four logged steps).

Why x*: eq. 1's gradient for one pair is −β σ(−βM) ∇M, and d/dβ [β σ(−βM)] = σ(−βM) (1 − βM σ(βM)) is
positive while βM σ(βM) < 1, that is for βM below x* = 1 + W(1/e) ≈ 1.2785 (W: Lambert's function).
Inside that range a larger β makes each pair's gradient larger, not smaller. The per-step update of
Adam, m̂ / (√v̂ + ε), is unchanged when every gradient is multiplied by one constant (until the gradient
nears ε), so the scale β adds to the gradient buys little control over how far the policy moves.

Settings column: the controller arguments that differ between the listed runs of one method.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dualloop.report import read_history

# x* with x* σ(x*) = 1, i.e. x* = 1 + W(1/e): where β σ(−βM) stops growing with β (module docstring).
MARGIN_TURNING_POINT = 1.2784645427610738
KL_STEPS = (16, 32, 48)


def runs_in(registry: Path) -> list[Path]:
    """The finished runs of a registry folder (each holds COMPLETE, config.json and history.jsonl)."""
    if not registry.is_dir():
        raise ValueError(f"{registry}: not a registry folder")
    return sorted(path.parent for path in registry.glob("*/COMPLETE"))


def read_config(run: Path) -> dict:
    path = run / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
        return {"method": config["method"], "seed": config["seed"], **config["training"]}
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a run identity ({type(error).__name__}: {error})") from None


def log_slope(betas: np.ndarray, norms: np.ndarray) -> float | None:
    """Least-squares slope of ln ‖g‖ on ln β; None where β does not vary."""
    x, y = np.log(betas), np.log(norms)
    if np.ptp(x) < 1e-9:
        return None
    return float(np.polyfit(x, y, 1)[0])


def lever(run: Path) -> dict:
    """The β lever of one run, from its training log (module docstring)."""
    config = read_config(run)
    rows = [row for row in read_history(run / "history.jsonl") if "grad_norm" in row and "beta" in row]
    if not rows:
        raise ValueError(f"{run / 'history.jsonl'}: no training step logs both beta and grad_norm")
    for row in rows:
        for key in ("beta", "grad_norm"):
            if not (isinstance(row[key], (int, float)) and row[key] > 0 and math.isfinite(row[key])):
                raise ValueError(f"{run / 'history.jsonl'}, step {row.get('step')}: {key} = {row[key]!r} is not > 0")
    betas = np.array([row["beta"] for row in rows], dtype=float)
    norms = np.array([row["grad_norm"] for row in rows], dtype=float)
    margins = [abs(row["rewards/margins"]) for row in rows if row.get("rewards/margins") is not None]
    kl_by_step = {row["step"]: row["kl/token"] for row in rows if row.get("kl/token") is not None}
    token_kl = {}
    for step in KL_STEPS:
        window = [kl_by_step[s] for s in range(step - 3, step + 1) if s in kl_by_step]
        token_kl[step] = sum(window) / len(window) if len(window) == 4 else None
    return {
        "run": run.name,
        "config": config,
        "beta": (float(betas.min()), float(betas.max())),
        "grad_norm": (float(norms.min()), float(norms.max())),
        "slope": log_slope(betas, norms),
        "inside": sum(m < MARGIN_TURNING_POINT for m in margins) / len(margins) if margins else None,
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
            labels[entry["run"]] = ", ".join(shown) or "–"
    return labels


def _range(pair: tuple[float, float]) -> str:
    low, high = pair
    return f"{low:.2g}" if low == high else f"{low:.2g}–{high:.2g}"


def table(levers: Sequence[dict]) -> str:
    labels = differing_settings(levers)
    head = [
        "| run | method | seed | settings | β used | ‖g‖ | slope ln‖g‖ / ln β | steps with β·M within ±1.28 | "
        + " | ".join(f"token KL, step {step}" for step in KL_STEPS)
        + " |",
        "| --- " * (8 + len(KL_STEPS)) + "|",
    ]
    body = []
    ordered = sorted(levers, key=lambda e: (e["config"]["method"], labels[e["run"]], e["config"]["seed"]))
    for entry in ordered:
        slope = "–" if entry["slope"] is None else f"{entry['slope']:.2f}"
        inside = "–" if entry["inside"] is None else f"{100 * entry['inside']:.0f} %"
        kls = [("–" if entry["token_kl"][step] is None else f"{entry['token_kl'][step]:.3f}") for step in KL_STEPS]
        cells = [entry["run"], entry["config"]["method"], str(entry["config"]["seed"]), labels[entry["run"]]]
        cells += [_range(entry["beta"]), _range(entry["grad_norm"]), slope, inside, *kls]
        body.append("| " + " | ".join(cells) + " |")
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
