"""What a run's β controller did, read from the run's own training log (``history.jsonl`` rows).

One dictionary per run, and a one-line ``line`` that phase summaries and notebooks print:

- ``beta_base_first`` / ``beta_base_last`` / ``beta_base_range``: the controller's β (``beta/base``,
  logged after each optimizer step) at the first and last logged step and its [min, max];
- ``beta_used_range``: the per-example β the loss used, [min of ``beta/min``, max of ``beta/max``]
  (DualLoop-DPO's fast loop and ε-DPO's per-example steps move it off β_base);
- ``beta_relative_range``: (max − min) / first of β_base; ``largest_step_change``: the largest
  factor ``exp|ln(β_t / β_{t−1})|`` between consecutive logged steps;
- ``static_like``: β_base moved by less than :data:`STATIC_LIKE` of its first value over the run and
  the β the loss used spans less than that fraction of its lowest value (DualLoop-DPO's fast loop
  can spread it while β_base stays): the controller's mechanism did not act materially, and a
  comparison with it is one with static β;
- for DualLoop-DPO (rows that log ``kl_ema``): ``kl_ema_last`` against ``kl_target``, the steps
  whose KL EMA lay inside the dead-band ``|KL_ema − target| ≤ deadband · target``
  (``steps_in_band``, ``first_step_in_band``), and the controller's own counters of the steps
  where the dead-band held β_base (``deadband_held``) and where the clip changed it (``clip_acted``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from dualloop.stats import round_half_up

__all__ = ["STATIC_LIKE", "controller_facts", "facts_line", "percent_moved", "run_facts"]

# β_base moving by less than this fraction of its first value over a run counts as "≈ static".
STATIC_LIKE = 0.10


def _training_rows(history: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [row for row in history if isinstance(row.get("beta/base"), (int, float))]


def controller_facts(
    history: Sequence[Mapping[str, Any]], *, kl_target: float | None = None, deadband: float = 0.1
) -> dict[str, Any]:
    """The controller facts of one run's log (module docstring); ``kl_target``/``deadband`` are the
    DualLoop-DPO constants the run trained with (ignored for a run that logs no ``kl_ema``)."""
    rows = _training_rows(history)
    if not rows:
        raise ValueError("controller_facts: the log has no training row with 'beta/base'")
    bases = [float(row["beta/base"]) for row in rows]
    lows = [float(row["beta/min"]) for row in rows if "beta/min" in row]
    highs = [float(row["beta/max"]) for row in rows if "beta/max" in row]
    steps = [math.exp(abs(math.log(b / a))) for a, b in zip(bases, bases[1:]) if a > 0 and b > 0]
    relative = (max(bases) - min(bases)) / bases[0]
    used = [min(lows), max(highs)] if lows and highs else [min(bases), max(bases)]
    facts: dict[str, Any] = {
        "steps": int(rows[-1].get("step", len(rows))),
        "beta_base_first": bases[0],
        "beta_base_last": bases[-1],
        "beta_base_range": [min(bases), max(bases)],
        "beta_used_range": used,
        "beta_relative_range": relative,
        "largest_step_change": max(steps, default=1.0),
        "static_like": relative < STATIC_LIKE and (used[1] - used[0]) < STATIC_LIKE * used[0],
    }
    ema_rows = [row for row in rows if isinstance(row.get("kl_ema"), (int, float))]
    if ema_rows and kl_target is not None:
        if kl_target <= 0:
            raise ValueError(f"controller_facts: kl_target={kl_target!r} must be > 0")
        in_band = [row for row in ema_rows if abs(row["kl_ema"] - kl_target) <= deadband * kl_target]
        facts.update(
            kl_target=kl_target,
            deadband=deadband,
            kl_ema_last=float(ema_rows[-1]["kl_ema"]),
            steps_in_band=len(in_band),
            first_step_in_band=int(in_band[0]["step"]) if in_band else None,
            deadband_held=int(ema_rows[-1].get("controller/deadband_held", 0)),
            clip_acted=int(ema_rows[-1].get("controller/clip_acted", 0)),
        )
    facts["line"] = facts_line(facts)
    return facts


def percent_moved(relative_range: float) -> str:
    """How far β_base moved, in percent of its first value: whole numbers rounded half up, and from 10⁴ % on
    two significant digits (an unclipped β_base can move by 10¹⁸ %)."""
    percent = 100 * relative_range
    return f"{percent:.2g}" if percent >= 1e4 else f"{round_half_up(percent, 0):.0f}"


def facts_line(facts: Mapping[str, Any]) -> str:
    """One line: β_base's path and range, and for DualLoop-DPO the KL EMA against its band and the counters."""
    low, high = facts["beta_used_range"]
    line = (
        f"β_base {facts['beta_base_first']:.3g} → {facts['beta_base_last']:.3g} "
        f"(moved {percent_moved(facts['beta_relative_range'])} %, largest step ×{facts['largest_step_change']:.3g}"
        f"{'; ≈ static' if facts['static_like'] else ''}), β used {low:.3g}–{high:.3g}"
    )
    if "kl_ema_last" in facts:
        first = facts["first_step_in_band"]
        line += (
            f"; KL EMA {facts['kl_ema_last']:.3g} at step {facts['steps']} vs target {facts['kl_target']:.3g}, "
            f"in the ±{100 * facts['deadband']:.0f} % band on {facts['steps_in_band']} of {facts['steps']} steps"
            f"{f' (first at step {first})' if first is not None else ''}; dead-band held {facts['deadband_held']}, "
            f"clip acted {facts['clip_acted']} steps"
        )
    return line


def run_facts(run) -> dict[str, Any]:
    """:func:`controller_facts` of a finished run of the registry, with the KL target and dead-band
    its DualLoop-DPO controller trained with (its ``controller_kwargs`` over the class's defaults), and
    ``controller``: the name of the run's controller."""
    import inspect

    from dualloop.controllers import DualLoop

    training = run.config.get("training", {})
    kwargs = training.get("controller_kwargs") or {}
    defaults = {name: p.default for name, p in inspect.signature(DualLoop).parameters.items()}
    dualloop = training.get("controller") == "dualloop"
    facts = controller_facts(
        run.history(),
        kl_target=kwargs.get("kl_target", defaults["kl_target"]) if dualloop else None,
        deadband=kwargs.get("deadband", defaults["deadband"]),
    )
    return {"controller": training.get("controller"), **facts}
