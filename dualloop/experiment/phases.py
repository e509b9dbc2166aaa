"""Helpers of particular phases: phase 1's best static β, phase 3's ablations."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dualloop.experiment import Experiment

__all__ = ["best_static_beta", "record_best_static_beta", "train_ablation"]


BEST_STATIC_BETA_FILE = "best_static_beta.json"


def record_best_static_beta(experiment: Experiment, win_rates: Mapping[float, float]) -> float:
    """Phase 1's choice: the static β with the highest win rate against the base model, written to
    ``results/best_static_beta.json`` with the rates it was chosen from; returns it."""
    best = max(win_rates, key=lambda beta: (win_rates[beta], -beta))
    experiment.results_dir.mkdir(parents=True, exist_ok=True)
    (experiment.results_dir / BEST_STATIC_BETA_FILE).write_text(
        json.dumps({"best_static_beta": best, "win_rate_vs_base": {str(b): r for b, r in win_rates.items()}}, indent=1)
        + "\n"
    )
    return best


def best_static_beta(experiment: Experiment, default: float) -> float:
    """The β phase 1 chose for this output folder, or ``default`` (with a printed note) when phase 1
    has not run there."""
    path = experiment.results_dir / BEST_STATIC_BETA_FILE
    if not path.is_file():
        print(f"dualloop.experiment: no {path} (phase 1 has not run here); static β = {default}", flush=True)
        return default
    return float(json.loads(path.read_text())["best_static_beta"])


# An ablation that turns off one switch of DualLoop, and the counter in the full run's log that says
# how often the full controller used that switch (DualLoop.metrics).
SWITCH_COUNTERS = {("clip", False): "controller/clip_acted", ("deadband", 0.0): "controller/deadband_held"}


def train_ablation(
    experiment: Experiment,
    full_run,
    controller_kwargs: Mapping[str, Any],
    *,
    constants: Mapping[str, Any] | None = None,
):
    """The run of DualLoop-DPO with ``controller_kwargs`` (an ablation of phase 3: its switches) over the
    controller ``constants`` the full run trained with.

    ``full_run`` is ``experiment.train("dualloop", controller_kwargs=constants)``. An ablation that only removes the clip and/or
    the dead-band changes β_base only at steps where that switch acts; when the full run's log says
    it never acted (``controller/clip_acted`` / ``controller/deadband_held`` 0 at its last step),
    the ablation sets the same β at every step and trains the same model, so ``full_run`` is
    returned, with a printed line saying so. Every other ablation is trained.
    """
    counters = [SWITCH_COUNTERS.get(item) for item in controller_kwargs.items()]
    rows = full_run.history()
    last_step = max((row.get("step", 0) for row in rows), default=0)
    logged = [row for row in rows if "controller/clip_acted" in row]
    if counters and None not in counters and logged and logged[-1]["step"] == last_step:
        if all(logged[-1][counter] == 0 for counter in counters):
            print(
                f"dualloop.experiment: {dict(controller_kwargs)}: {' and '.join(map(str, counters))} 0 over the "
                f"{last_step} steps of the full DualLoop run {full_run.id}, so this ablation is that run "
                "(the same β at every step); not retrained",
                flush=True,
            )
            return full_run
    return experiment.train("dualloop", controller_kwargs={**(constants or {}), **controller_kwargs})
