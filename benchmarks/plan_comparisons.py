"""How many seeds and prompts a comparison needs: the pooled interval's width for other designs.

    python benchmarks/plan_comparisons.py figures/schedule_48/02_main_comparison.json [more summaries ...]
        [--seeds 3 5 7 10 15 20] [--prompts 200 400] [--target 0.04] [--observed OTHER_SUMMARY.json]

Reads phase summaries (the ``results/<notebook>.json`` a phase writes; schema in figures/README.md,
"Results files") and, for every paired strict-accuracy difference pooled over seeds, takes its
estimated crossed variance components (seed σ²_a, prompt σ²_b, residual σ²_e) and prints, with
:func:`dualloop.stats.planned_width`, the median half-width of the 95 % interval that simulated runs of
S seeds × N prompts give, and the fewest seeds (≤ 50) whose runs are within ``--target`` at least
``--share`` of the time (default 80 %). Nothing is trained or judged.

With ``--observed`` it checks a plan against a later run: for each comparison in both files, the
half-widths planned from the first file's components at the later run's design (median and the middle
80 % of simulated runs) beside the one that run found.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dualloop.stats import planned_width

MAX_SEEDS = 50


def strict_comparisons(path: Path) -> dict[str, dict]:
    """``"a − b (judge)"`` → {"diff", "half", "seeds", "prompts", "components"} for each pooled strict
    difference of the summary at ``path``; a ValueError naming the file (and the row) when it holds none
    or a row lacks what a plan needs."""
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a readable phase summary ({error})") from None
    found = {}
    rows = summary.get("comparisons", []) if isinstance(summary, dict) else []
    for number, comparison in enumerate(rows):
        components = comparison.get("accuracy_diff_variance_components")
        if comparison.get("accuracy") != "strict" or components is None:
            continue
        try:
            seeds = len(comparison["seeds"])
            low, high = comparison["accuracy_diff_ci"]
            prompts = comparison.get("accuracy_diff_n_prompts")
            if prompts is None:  # summaries written before the field: every seed judged every prompt once
                per_seed = {row["n"] for row in comparison["by_seed"]}
                if comparison["unparseable"] or len(per_seed) != 1:
                    raise ValueError(
                        "its prompt count is unknown (no accuracy_diff_n_prompts; seeds judged differently)"
                    )
                (prompts,) = per_seed
            found[f"{comparison['a']} − {comparison['b']} ({comparison['judge']})"] = {
                "diff": comparison["accuracy_diff"],
                "half": (high - low) / 2,
                "seeds": seeds,
                "prompts": prompts,
                "components": (components["seed"], components["prompt"], components["residual"]),
            }
        except (KeyError, TypeError, ValueError) as error:
            message = f"missing {error}" if isinstance(error, KeyError) else str(error)
            raise ValueError(
                f"{path}: comparisons[{number}] ({comparison.get('a')} − {comparison.get('b')}): {message}"
            ) from None
    if not found:
        raise ValueError(f"{path}: no strict-accuracy difference pooled over seeds with its variance components")
    return found


def seeds_needed(components: tuple[float, float, float], prompts: int, target: float, share: float) -> int | None:
    """The fewest seeds (2 to MAX_SEEDS) whose simulated runs are within ``target`` at least ``share`` of the
    time; None if no such count."""
    for seeds in range(2, MAX_SEEDS + 1):
        if planned_width(*components, seeds=seeds, prompts=prompts).share_within(target) >= share:
            return seeds
    return None


def plan_table(path: Path, seed_counts: list[int], prompt_counts: list[int], target: float, share: float) -> str:
    """One markdown table: each comparison's observed interval, planned median half-widths and seeds needed."""
    columns = [f"S={s}, N={n}" for n in prompt_counts for s in seed_counts]
    needed = [f"seeds for ±{100 * target:g} ({100 * share:g} %) at N={n}" for n in prompt_counts]
    lines = [
        f"{path}: median half-width (points) of simulated runs",
        "",
        "| comparison (strict) | observed Δ ± half (S × N) | σ²_seed / σ²_prompt / σ²_resid | "
        + " | ".join(columns + needed)
        + " |",
        "| --- " * (3 + len(columns) + len(needed)) + "|",
    ]
    for name, found in strict_comparisons(path).items():
        components = found["components"]
        widths = [
            f"±{100 * planned_width(*components, seeds=s, prompts=n).median:.1f}"
            for n in prompt_counts
            for s in seed_counts
        ]
        counts = [str(seeds_needed(components, n, target, share) or f"> {MAX_SEEDS}") for n in prompt_counts]
        observed = f"{100 * found['diff']:+.1f} ±{100 * found['half']:.1f} ({found['seeds']} × {found['prompts']})"
        shown = " / ".join(f"{value:.4f}" for value in components)
        lines.append(f"| {name} | {observed} | {shown} | " + " | ".join(widths + counts) + " |")
    return "\n".join(lines)


def check_table(planned_from: Path, observed_in: Path) -> str:
    """Half-widths planned from one summary at a later summary's design (median, and the 10th to 90th
    percentile of simulated runs) beside the one the later run found ("" when they share no comparison)."""
    plans, later = strict_comparisons(planned_from), strict_comparisons(observed_in)
    rows = []
    for name in sorted(plans.keys() & later.keys()):
        plan, seen = plans[name], later[name]
        width = planned_width(*plan["components"], seeds=seen["seeds"], prompts=seen["prompts"])
        low, high = (
            100 * float(q) for q in width.half_widths[[len(width.half_widths) // 10, -len(width.half_widths) // 10]]
        )
        rows.append(
            f"| {name} | {plan['seeds']} × {plan['prompts']} | {seen['seeds']} × {seen['prompts']} "
            f"| ±{100 * width.median:.1f} (±{low:.1f} to ±{high:.1f}) | ±{100 * seen['half']:.1f} |"
        )
    if not rows:
        return ""
    return "\n".join(
        [
            f"planned from {planned_from}, observed in {observed_in}",
            "",
            "| comparison (strict) | planned from (S × N) | at (S × N) | planned half, median (10–90 %) | observed half |",
            "| --- | --- | --- | --- | --- |",
            *rows,
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("summaries", nargs="+", type=Path, help="phase summaries (results/<notebook>.json)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[3, 5, 7, 10, 15, 20])
    parser.add_argument("--prompts", nargs="+", type=int, default=[200, 400])
    parser.add_argument("--target", type=float, default=0.04, help="half-width to reach (a share: 0.04 = ±4 points)")
    parser.add_argument("--share", type=float, default=0.8, help="share of runs that must reach --target")
    parser.add_argument("--observed", type=Path, help="a later summary: check the plan against its widths")
    args = parser.parse_args(argv)
    if min(args.seeds) < 2 or min(args.prompts) < 2 or not 0 < args.target < 1 or not 0 < args.share <= 1:
        parser.error(
            f"--seeds and --prompts must be ≥ 2, --target in (0, 1) and --share in (0, 1], got seeds {args.seeds}, "
            f"prompts {args.prompts}, target {args.target}, share {args.share}"
        )
    try:
        for path in args.summaries:
            print(plan_table(path, args.seeds, args.prompts, args.target, args.share), end="\n\n")
            checked = check_table(path, args.observed) if args.observed is not None else ""
            if checked:
                print(checked, end="\n\n")
    except ValueError as error:
        print(f"plan_comparisons: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
