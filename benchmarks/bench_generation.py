"""Greedy generation speed of HF ``generate`` against dualloop's fast greedy loop, side by side.

    python benchmarks/bench_generation.py --prompts 64 [--threads 2] [--max-new-tokens 64] [--batch-size N]
        [--previous-batch-size 64] [--fast-only] [--json]

One process runs four settings on the same held-out prompts (the first ``--prompts`` of
``data.load_verifiable_heldout()``, each as the user message) with SmolLM2-135M-Instruct in fp32
on the CPU, greedy with repetition penalty 1.2, through ``generation.generate_responses`` (fresh
cache folders, so everything is generated):

- (a) today's settings: HF's generate loop at batch size 10;
- (b) HF's generate loop at batch size 1: the reference text;
- (c) the fast greedy loop (``fast_greedy: true``) at ``--batch-size`` (default: the cpu profile's);
- (d) the fast greedy loop at ``--previous-batch-size`` (64, the cpu profile's batch before it took
  all 200 prompts at once).

``--fast-only`` runs (c) and (d) alone (HF's batch-1 loop takes ~10 minutes for 200 prompts here);
the ratios are then to (d) and the texts compared are (c)'s against (d)'s.

Tokens/s counts the new tokens actually generated (up to and including each response's EOS, not
the padding after it) over the wall time of the setting. The table gives each setting's ratio to
(a) and to (b) (to (d) with ``--fast-only``), and how many of (c)'s texts equal the reference's.
The machine's load hits the settings one after the other, so compare ratios from one run, not
absolute numbers across runs. With ``--json``
the last printed line is one JSON object with every number of the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import yaml  # noqa: E402

from dualloop.data import load_verifiable_heldout  # noqa: E402
from dualloop.generation import GenerationSettings, generate_responses, load_generator  # noqa: E402
from dualloop.models import ModelSettings  # noqa: E402

CPU_PROFILE = Path(__file__).resolve().parents[1] / "params" / "profiles" / "cpu.yaml"


class TokenCounter:
    """Stands in for ``model.generate`` and counts the new tokens of its outputs up to each row's EOS."""

    def __init__(self, model, eos_token_id: int):
        self.generate, self.eos_token_id, self.tokens = model.generate, eos_token_id, 0

    def __call__(self, *args, **kwargs):
        output = self.generate(*args, **kwargs)
        for row in output[:, kwargs["input_ids"].shape[1] :].tolist():
            self.tokens += row.index(self.eos_token_id) + 1 if self.eos_token_id in row else len(row)
        return output


def run_setting(model, tokenizer, prompts: dict[str, str], settings: GenerationSettings) -> dict:
    """Generate every prompt with ``settings`` into a fresh cache folder; texts, new tokens and seconds."""
    counter = TokenCounter(model, tokenizer.eos_token_id)
    model.generate = counter
    try:
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            texts = generate_responses(
                model, tokenizer, prompts, settings, out_dir=folder, identity="bench", prompt_set="verifiable-heldout"
            )
            seconds = time.perf_counter() - started
    finally:
        del model.generate
    return {"texts": texts, "tokens": counter.tokens, "seconds": seconds, "tokens_per_s": counter.tokens / seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=64, help="held-out prompts to generate (default 64)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="new-token budget (default 64, as cpu)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="batch size of the fast loop (default: generation.batch_size of the cpu profile)",
    )
    parser.add_argument(
        "--previous-batch-size", type=int, default=64, help="batch size of setting (d), the fast loop (default 64)"
    )
    parser.add_argument("--fast-only", action="store_true", help="run (c) and (d) only, (d) as the reference")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON line at the end")
    args = parser.parse_args(argv)
    fast_batch = args.batch_size or yaml.safe_load(CPU_PROFILE.read_text())["generation"]["batch_size"]

    torch.set_num_threads(args.threads)
    model, tokenizer, _ = load_generator(ModelSettings(name_or_path="smollm2-135m-instruct", device="cpu", lora_r=0))
    prompts = {p.prompt_id: p.prompt for p in load_verifiable_heldout()[: args.prompts]}
    print(
        f"bench_generation: {len(prompts)} prompts, {args.max_new_tokens} new tokens, {args.threads} threads",
        flush=True,
    )
    base = GenerationSettings(max_new_tokens=args.max_new_tokens, repetition_penalty=1.2)
    settings = {
        "a": ("hf generate", dataclasses.replace(base, batch_size=10, fast_greedy=False)),
        "b": ("hf generate", dataclasses.replace(base, batch_size=1, fast_greedy=False)),
        "c": ("fast greedy", dataclasses.replace(base, batch_size=fast_batch, fast_greedy=True)),
        "d": ("fast greedy", dataclasses.replace(base, batch_size=args.previous_batch_size, fast_greedy=True)),
    }
    if args.fast_only:
        settings = {key: settings[key] for key in ("c", "d")}
    first, reference = ("d", "d") if args.fast_only else ("a", "b")
    results = {}
    for key, (name, setting) in settings.items():
        print(f"bench_generation: ({key}) {name}, batch size {setting.batch_size}", flush=True)
        results[key] = run_setting(model, tokenizer, prompts, setting)

    identical = sum(results["c"]["texts"][i] == results[reference]["texts"][i] for i in prompts)
    print(
        f"\n{'setting':<18}{'batch':>6}{'tokens':>8}{'seconds':>9}{'tokens/s':>10}"
        f"{f'vs ({first})':>8}{f'vs ({reference})':>8}"
    )
    summary = {
        "prompts": len(prompts),
        "threads": args.threads,
        "max_new_tokens": args.max_new_tokens,
        f"identical_c_{reference}": identical,
    }
    for key, (name, setting) in settings.items():
        result = results[key]
        vs_first = result["tokens_per_s"] / results[first]["tokens_per_s"]
        vs_reference = result["tokens_per_s"] / results[reference]["tokens_per_s"]
        print(
            f"({key}) {name:<14}{setting.batch_size:>6}{result['tokens']:>8}{result['seconds']:>9.1f}"
            f"{result['tokens_per_s']:>10.1f}{vs_first:>8.2f}{vs_reference:>8.2f}"
        )
        summary[key] = {
            "batch_size": setting.batch_size,
            "fast_greedy": setting.fast_greedy,
            "tokens": result["tokens"],
            "seconds": round(result["seconds"], 2),
            "tokens_per_s": round(result["tokens_per_s"], 1),
            f"vs_{first}": round(vs_first, 3),
            f"vs_{reference}": round(vs_reference, 3),
        }
    print(f"identical texts (c) vs ({reference}): {identical}/{len(prompts)}")
    if args.json:
        print(json.dumps(summary))
    return 0 if identical == len(prompts) else 1


if __name__ == "__main__":
    sys.exit(main())
