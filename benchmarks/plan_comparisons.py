"""How many seeds and prompts a comparison needs: the pooled interval's expected width for other designs.

    python benchmarks/plan_comparisons.py figures/schedule_48/02_main_comparison.json [more summaries ...]
        [--seeds 3 5 7 10 15 20] [--prompts 200 400] [--target 0.04] [--observed OTHER_SUMMARY.json]

Reads phase summaries (the ``results/<notebook>.json`` a phase writes; schema in README) and, for every
paired strict-accuracy difference pooled over seeds, takes its estimated crossed variance components
(seed σ²_a, prompt σ²_b, residual σ²_e) and prints, with :func:`dualloop.stats.planned_width`, the
half-width of the 95 % interval that S seeds × N prompts are expected to give, and the fewest seeds
(≤ 50) that reach ``--target`` at each N. Nothing is trained or judged.

With ``--observed`` it checks a plan against a later run: for each comparison in both files, the width
planned from the first file's components at the later run's design beside the width that run found.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dualloop.stats import planned_width

MAX_SEEDS = 50


def strict_comparisons(path: Path) -> dict[str, dict]:
    """``"a − b"`` → {"diff", "half", "seeds", "prompts", "components"} for each pooled strict difference
    of the summary at ``path``; a ValueError naming the file when it holds none (a one-seed phase)."""
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable phase summary ({error})") from None
    found = {}
    for comparison in summary.get("comparisons", []) if isinstance(summary, dict) else []:
        components = comparison.get("accuracy_diff_variance_components")
        if comparison.get("accuracy") != "strict" or components is None:
            continue
        seeds = len(comparison["seeds"])
        low, high = comparison["accuracy_diff_ci"]
        found[f"{comparison['a']} − {comparison['b']}"] = {
            "diff": comparison["accuracy_diff"],
            "half": (high - low) / 2,
            "seeds": seeds,
            "prompts": comparison["n"] // seeds,
            "components": (components["seed"], components["prompt"], components["residual"]),
        }
    if not found:
        raise ValueError(
            f"{path}: no strict-accuracy difference pooled over seeds (a phase run with one seed has none)"
        )
    return found


def seeds_needed(components: tuple[float, float, float], prompts: int, target: float) -> int | None:
    """The fewest seeds (2 to MAX_SEEDS) whose planned half-width is at most ``target``; None if none is."""
    for seeds in range(2, MAX_SEEDS + 1):
        if planned_width(*components, seeds=seeds, prompts=prompts).half_width <= target:
            return seeds
    return None


def plan_table(path: Path, seed_counts: list[int], prompt_counts: list[int], target: float) -> str:
    """One markdown table: each comparison's observed interval, planned half-widths and seeds needed."""
    columns = [f"S={s}, N={n}" for n in prompt_counts for s in seed_counts]
    needed = [f"seeds for ±{100 * target:g} at N={n}" for n in prompt_counts]
    lines = [
        f"{path}",
        "",
        "| comparison (strict) | observed Δ ± half (S × N) | σ²_seed / σ²_prompt / σ²_resid | "
        + " | ".join(columns + needed)
        + " |",
        "| --- " * (3 + len(columns) + len(needed)) + "|",
    ]
    for name, found in strict_comparisons(path).items():
        components = found["components"]
        widths = [
            f"±{100 * planned_width(*components, seeds=s, prompts=n).half_width:.1f}"
            for n in prompt_counts
            for s in seed_counts
        ]
        counts = [str(seeds_needed(components, n, target) or f"> {MAX_SEEDS}") for n in prompt_counts]
        observed = f"{100 * found['diff']:+.1f} ±{100 * found['half']:.1f} ({found['seeds']} × {found['prompts']})"
        shown = " / ".join(f"{value:.4f}" for value in components)
        lines.append(f"| {name} | {observed} | {shown} | " + " | ".join(widths + counts) + " |")
    return "\n".join(lines)


def check_table(planned_from: Path, observed_in: Path) -> str:
    """Widths planned from one summary at a later summary's design, beside the widths the later run found
    ("" when the two share no comparison)."""
    plans, later = strict_comparisons(planned_from), strict_comparisons(observed_in)
    if not plans.keys() & later.keys():
        return ""
    lines = [
        f"planned from {planned_from}, observed in {observed_in}",
        "",
        "| comparison (strict) | planned from (S × N) | at (S × N) | planned half | observed half |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in plans.keys() & later.keys():
        plan, seen = plans[name], later[name]
        width = planned_width(*plan["components"], seeds=seen["seeds"], prompts=seen["prompts"]).half_width
        lines.append(
            f"| {name} | {plan['seeds']} × {plan['prompts']} | {seen['seeds']} × {seen['prompts']} "
            f"| ±{100 * width:.1f} | ±{100 * seen['half']:.1f} |"
        )
    lines[4:] = sorted(lines[4:])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summaries", nargs="+", type=Path, help="phase summaries (results/<notebook>.json)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[3, 5, 7, 10, 15, 20])
    parser.add_argument("--prompts", nargs="+", type=int, default=[200, 400])
    parser.add_argument("--target", type=float, default=0.04, help="half-width to reach (a share: 0.04 = ±4 points)")
    parser.add_argument("--observed", type=Path, help="a later summary: check the plan against its widths")
    args = parser.parse_args(argv)
    if min(args.seeds) < 2 or min(args.prompts) < 2 or not 0 < args.target < 1:
        parser.error(
            f"--seeds and --prompts must be ≥ 2 and --target in (0, 1), got {args.seeds}, {args.prompts}, {args.target}"
        )
    try:
        for path in args.summaries:
            print(plan_table(path, args.seeds, args.prompts, args.target), end="\n\n")
            checked = check_table(path, args.observed) if args.observed is not None else ""
            if checked:
                print(checked, end="\n\n")
    except ValueError as error:
        print(f"plan_comparisons: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
