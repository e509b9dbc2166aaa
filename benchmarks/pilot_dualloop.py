"""Pilot: DualLoop-DPO's slow-loop constants on a profile, over several seeds, from training logs alone.

    python benchmarks/pilot_dualloop.py --profile cpu --seeds 0 1 2 \\
        --config kl_target=0.04,eta=0.01 --config kl_target=0.2,eta=0.5,ema_alpha=0.3 \\
        [--set training.max_steps=48 --set training.learning_rate=5e-4] [--out runs/pilot]

Each (config, seed) is one DualLoop-DPO training run of the profile (kept in the registry of ``--out``,
so a rerun trains nothing new). Nothing is generated or judged: the choice rests on the training
dynamics only (does the KL EMA reach the target band and stay there; do the dead-band and the clip
act), never on evaluation prompts. Printed per run: the controller facts
(:func:`dualloop.controller_facts.run_facts`) and the trajectory step by step (KL, KL EMA,
β_base); written to ``OUT/pilot_dualloop.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

CONSTANTS = ("kl_target", "eta", "ema_alpha", "deadband", "lam", "beta_init", "beta_min", "beta_max")


def parse_config(text: str) -> dict[str, float]:
    """``kl_target=0.2,eta=0.5`` -> {"kl_target": 0.2, "eta": 0.5}; an unknown key or a non-number is refused."""
    config = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in CONSTANTS:
            raise ValueError(f"--config {text!r}: {item!r} is not KEY=NUMBER with KEY one of {', '.join(CONSTANTS)}")
        try:
            config[key] = float(value)
        except ValueError:
            raise ValueError(f"--config {text!r}: {key}={value!r} is not a number") from None
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--config", action="append", required=True, metavar="KEY=V,KEY=V")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="SECTION.KEY=VALUE",
        help="a change to the profile for every run (as `reproduce --set`), e.g. training.max_steps=48",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "pilot")
    args = parser.parse_args(argv)
    from dualloop.__main__ import experiment_from_profile
    from dualloop.controller_facts import run_facts

    try:
        configs = [parse_config(text) for text in args.config]
        if any(text.startswith("training.controller_kwargs") for text in args.overrides):
            raise ValueError("--set training.controller_kwargs.*: give DualLoop's constants with --config")
        experiment = experiment_from_profile(args.profile, args.out, args.overrides)
    except ValueError as error:  # a ParamsError too
        print(f"pilot_dualloop: {error}", file=sys.stderr)
        return 2
    rows = []
    for config in configs:
        for seed in args.seeds:
            run = experiment.with_seed(seed).train("dualloop", controller_kwargs=config)
            history = run.history()
            facts = run_facts(run)  # the run's own constants over DualLoop-DPO's defaults
            trajectory = [
                {key: row.get(key) for key in ("step", "kl", "kl_ema", "beta/base", "kl/token")}
                for row in history
                if "kl_ema" in row
            ]
            rows.append({"config": config, "seed": seed, "run": run.id, "facts": facts, "trajectory": trajectory})
            print(f"pilot_dualloop: {config} seed {seed}: {facts['line']}", flush=True)
            for point in trajectory:
                print(
                    f"  step {point['step']:>3}: KL {point['kl']:.3f}  KL_ema {point['kl_ema']:.3f}  "
                    f"β_base {point['beta/base']:.3f}",
                    flush=True,
                )
    table = summary_table(rows) + "".join(f"With --set {text}.\n" for text in args.overrides)
    print(table, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pilot_dualloop.md").write_text(table, encoding="utf-8")
    (args.out / "pilot_dualloop.json").write_text(
        json.dumps({"profile": args.profile, "overrides": args.overrides, "seeds": args.seeds, "runs": rows}, indent=1)
        + "\n",
        encoding="utf-8",
    )
    return 0


def summary_table(rows: list[dict]) -> str:
    """One line per config: the steps with the KL EMA in the band (mean and per seed), the seeds where the
    dead-band held and where the clip acted, the final KL EMA per seed, and β_base's last value per seed."""
    configs: dict[str, list[dict]] = {}
    for row in rows:
        configs.setdefault(json.dumps(row["config"], sort_keys=True), []).append(row)
    lines = [
        "| config | steps in band (mean; per seed) | dead-band held (per seed) | clip acted (per seed) "
        "| final KL EMA (per seed) | final β_base (per seed) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for key, runs in configs.items():
        facts = [run["facts"] for run in runs]
        in_band = [f["steps_in_band"] for f in facts]
        config = ", ".join(f"{name}={value:g}" for name, value in json.loads(key).items())
        held = " / ".join(str(f["deadband_held"]) for f in facts)
        clipped = " / ".join(str(f["clip_acted"]) for f in facts)
        emas = " / ".join(f"{f['kl_ema_last']:.3f}" for f in facts)
        bases = " / ".join(f"{f['beta_base_last']:.3f}" for f in facts)
        band = f"{sum(in_band) / len(in_band):.1f}; {' / '.join(map(str, in_band))}"
        lines.append(f"| {config} | {band} | {held} | {clipped} | {emas} | {bases} |")
    seeds = sorted({run["seed"] for run in rows})
    return (
        "\n".join(lines)
        + f"\n\nSeeds {', '.join(map(str, seeds))}; steps of the KL EMA inside target · (1 ± deadband).\n"
    )


if __name__ == "__main__":
    raise SystemExit(main())
