"""Greedy texts from a real vLLM server against local generation, on the same prompts and settings.

    python benchmarks/vllm_parity.py --base-url http://127.0.0.1:8011/v1 [--profile cpu] [--prompts 20]
        [--out runs/vllm-parity] [--run RUN_DIR] [--json]

The server must serve the profile's base model as ``serve-command`` prints it (the local folder, the
served name, the profile's dtype); ``make vllm-parity`` sets vLLM up in its own virtual environment,
starts it and runs this. Both sides answer the first ``--prompts`` held-out prompts of the profile's
evaluation set with the profile's generation settings (greedy, ``max_new_tokens``, the repetition
penalty, which the server receives in each request): local generation through
``Experiment.responses`` (cached in ``--out``), then the server's (``generation.backend: server``,
cached beside it under its own key); with ``--run`` the trained run of that registry folder instead of
the base model (the server must serve its adapter under its run id: ``serve-command``). Prints how many texts are identical, the first differing
character of each other one, the server's requests and new tokens per second (the base model's
tokenizer counts the tokens of each answer).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dualloop.__main__ import experiment_from_profile  # noqa: E402
from dualloop.models import load_policy  # noqa: E402
from dualloop.registry import Run  # noqa: E402


def first_difference(a: str, b: str) -> int:
    """The index of the first character where ``a`` and ``b`` differ (the shorter length if one is a prefix)."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True, help="the vLLM server, e.g. http://127.0.0.1:8011/v1")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("runs/vllm-parity"))
    parser.add_argument("--run", type=Path, default=None, help="a finished run's folder: compare its answers")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    evaluation = [f"evaluation.n_prompts={args.prompts}"]
    local = experiment_from_profile(args.profile, args.out, evaluation)
    server = experiment_from_profile(
        args.profile,
        args.out,
        [*evaluation, "generation.backend=server", f"generation.base_url={args.base_url}"],
    )
    prompt_set = "verifiable-heldout"
    run = Run(args.run.resolve()) if args.run else None
    system = run.id if run is not None else "base"
    local_texts = local.responses(system, prompt_set, run)
    started = time.perf_counter()
    server_texts = server.responses(system, prompt_set, run)
    seconds = time.perf_counter() - started
    tokenizer = load_policy(local.model).tokenizer
    tokens = sum(len(tokenizer(text, add_special_tokens=False)["input_ids"]) for text in server_texts.values())
    identical = [pid for pid in local_texts if local_texts[pid] == server_texts[pid]]
    print(
        f"{len(identical)} of {len(local_texts)} greedy texts of {system} identical (server vs local, {args.profile})"
    )
    differing = {}
    for pid in local_texts:
        if pid not in identical:
            at = first_difference(local_texts[pid], server_texts[pid])
            differing[pid] = {
                "at": at,
                "local": local_texts[pid][at : at + 40],
                "server": server_texts[pid][at : at + 40],
            }
            print(
                f"  {pid}: differs at character {at}: local {differing[pid]['local']!r} | server {differing[pid]['server']!r}"
            )
    print(
        f"server: {len(server_texts)} requests, {tokens} new tokens in {seconds:.1f} s ({tokens / seconds:.1f} tokens/s)"
    )
    if args.json:
        summary = {"identical": len(identical), "prompts": len(local_texts), "differing": differing}
        print(json.dumps({**summary, "tokens": tokens, "seconds": seconds}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
