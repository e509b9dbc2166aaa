"""Data: preference pairs and evaluation prompts, from the paper's data sets or the offline set.

- :class:`PreferencePair` (prompt messages, chosen, rejected, metadata) converts to the
  conversational or standard rows that TRL's ``DPOTrainer`` accepts (:func:`to_trl_rows`).
- Loaders read a local file or folder in the exact schema of the hub data set, or the hub itself
  through ``datasets`` when asked (``from_hub=True``; never offline, never in tests):
  UltraFeedback (:func:`load_ultrafeedback`), Anthropic HH (:func:`load_hh`), HelpSteer2 prompts
  (:func:`load_helpsteer2_prompts`) and Sycophancy-Eval (:func:`load_sycophancy_eval`).
- Every row is validated. A malformed row (missing field, wrong type, empty response, identical
  chosen and rejected) raises :class:`DataError` naming the file, the row number (1-based) and
  the field; with ``on_error="skip"`` it is skipped and counted in the result's ``skipped``
  list, and the loader prints how many rows it skipped.
- :func:`subsample` takes the paper's seeded 0.5 % (or any fraction or count).
- The offline verifiable-instruction preference set is built by :mod:`dualloop.preference_set`
  and shipped in ``dualloop/offline_set/``; load it with :func:`load_verifiable_preferences` and
  :func:`load_verifiable_heldout`.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.resources
import json
import random
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

Message = dict[str, str]
OnError = Literal["raise", "skip"]

ULTRAFEEDBACK = "HuggingFaceH4/ultrafeedback_binarized"
HH_RLHF = "Anthropic/hh-rlhf"
HELPSTEER2 = "nvidia/HelpSteer2"
SYCOPHANCY_EVAL = "meg-tong/sycophancy-eval"
HELPSTEER2_ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")


class DataError(ValueError):
    """A malformed data row: names the file, the 1-based row number and the field."""

    def __init__(self, source: str, row: int, field: str, problem: str):
        self.source, self.row, self.field, self.problem = source, row, field, problem
        super().__init__(f"row {row} of {source}: '{field}' {problem}")


@dataclasses.dataclass(frozen=True)
class PreferencePair:
    """One preference pair: a conversation prompt and two candidate final assistant turns.

    prompt: the conversation before the response, as ``{"role", "content"}`` messages (roles
    user/assistant/system; the last one is the user's). chosen / rejected: the preferred and the
    dispreferred assistant response. metadata: anything else (ids, scores, the score gap).
    """

    prompt: tuple[Message, ...]
    chosen: str
    rejected: str
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def prompt_text(self) -> str:
        """The last user message (the whole prompt for single-turn data)."""
        return self.prompt[-1]["content"]


@dataclasses.dataclass(frozen=True)
class PromptRecord:
    """An evaluation prompt: an id, the conversation to answer, and the data set's extra fields."""

    prompt_id: str
    messages: tuple[Message, ...]
    metadata: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Loaded:
    """What a loader returns: the records, where they came from, and the rows it skipped.

    skipped holds one message per skipped row ("row 17 of FILE: 'chosen' is empty"); it is empty
    unless the loader was called with ``on_error="skip"``.
    """

    records: list
    source: str
    skipped: list[str] = dataclasses.field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator:
        return iter(self.records)


def to_trl_rows(
    pairs: Iterable[PreferencePair], form: Literal["conversational", "standard"] = "conversational"
) -> list[dict[str, Any]]:
    """Rows for TRL's ``DPOTrainer``: ``prompt``/``chosen``/``rejected`` columns.

    conversational: prompt = list of messages, chosen/rejected = one assistant message each
    (TRL applies the chat template). standard: plain strings; only single-turn prompts (the
    user message), since a plain string cannot hold a conversation.
    """
    rows = []
    for number, pair in enumerate(pairs, start=1):
        if form == "conversational":
            rows.append(
                {
                    "prompt": [dict(m) for m in pair.prompt],
                    "chosen": [{"role": "assistant", "content": pair.chosen}],
                    "rejected": [{"role": "assistant", "content": pair.rejected}],
                }
            )
        elif form == "standard":
            if len(pair.prompt) != 1:
                raise ValueError(f"pair {number} has a {len(pair.prompt)}-message prompt; use form='conversational'")
            rows.append({"prompt": pair.prompt_text, "chosen": pair.chosen, "rejected": pair.rejected})
        else:
            raise ValueError(f"form={form!r} must be 'conversational' or 'standard'")
    return rows


def subsample(records: Sequence, *, fraction: float | None = None, n: int | None = None, seed: int = 0) -> list:
    """A seeded random subset, in the original order: ``fraction`` of the records (the paper's
    0.5 % is ``fraction=0.005``, rounded, at least 1) or exactly ``n`` of them."""
    if (fraction is None) == (n is None):
        raise ValueError("give exactly one of fraction= or n=")
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction={fraction} must be in (0, 1]")
        n = max(1, round(fraction * len(records)))
    if not 0 <= n <= len(records):
        raise ValueError(f"n={n} must be between 0 and the number of records ({len(records)})")
    keep = sorted(random.Random(seed).sample(range(len(records)), n))
    return [records[i] for i in keep]


def flip_labels(pairs: Sequence[PreferencePair], fraction: float, seed: int = 0) -> list[PreferencePair]:
    """Swap chosen and rejected in a seeded ``fraction`` of the pairs (label noise).

    Flipped pairs carry ``metadata["flipped"] = True``; the others ``False``.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"label_noise={fraction} must be in [0, 1]")
    flipped = set(random.Random(seed).sample(range(len(pairs)), round(fraction * len(pairs))))
    return [
        dataclasses.replace(
            pair, chosen=pair.rejected, rejected=pair.chosen, metadata={**pair.metadata, "flipped": True}
        )
        if i in flipped
        else dataclasses.replace(pair, metadata={**pair.metadata, "flipped": False})
        for i, pair in enumerate(pairs)
    ]


# ---------------------------------------------------------------------------------------------
# reading rows: local files in the hub's schema, or the hub
# ---------------------------------------------------------------------------------------------


def _decoded(path: Path, number: int, line: bytes) -> str:
    try:
        return line.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as error:
        raise DataError(
            str(path),
            number,
            "<line>",
            f"has byte 0x{line[error.start]:02x} at column {error.start + 1}, "
            "which is not UTF-8: save the file as UTF-8",
        ) from None


def _read_rows(path: Path) -> Iterator[dict[str, Any]]:
    """Rows of a .jsonl / .jsonl.gz / .json / .parquet file. A UTF-8 byte-order mark, CRLF line ends and
    blank lines are accepted; a line that is not UTF-8 or not JSON, and a file without rows, raise
    :class:`DataError` naming the file and the line."""
    name = path.name
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        yield from pq.read_table(path).to_pylist()
        return
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rb") as handle:
        lines = [_decoded(path, number, line) for number, line in enumerate(handle, start=1)]
    if not any(line.strip() for line in lines):
        raise DataError(str(path), 1, "<file>", "is empty: it holds no rows")
    if name.endswith(".json"):
        try:
            data = json.loads("".join(lines))
        except json.JSONDecodeError as error:
            raise DataError(str(path), error.lineno, "<file>", f"is not valid JSON ({error.msg})") from None
        if not isinstance(data, list):
            raise DataError(str(path), 1, "<file>", "is not a JSON list of rows")
        if not data:
            raise DataError(str(path), 1, "<file>", "is an empty list: it holds no rows")
        yield from data
        return
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(str(path), number, "<line>", f"is not valid JSON ({error.msg})") from None


_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")


def _local_files(path: Path, split: str | None) -> list[Path]:
    """The data files of ``path``: the file itself, or the files of a folder whose name holds ``split``."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or folder")
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(_SUFFIXES))
    if split is not None:
        files = [p for p in files if split in p.name]
    if not files:
        raise FileNotFoundError(f"{path}: no data file (.jsonl, .jsonl.gz, .json, .parquet) for split {split!r}")
    return files


def _rows(
    path: str | Path | None,
    *,
    split: str | None,
    hub_id: str,
    from_hub: bool,
    hub_kwargs: Mapping[str, Any] | None = None,
) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(source name, 1-based row number, row) from a local path, or from the hub when asked."""
    if path is not None:
        for file in _local_files(Path(path), split):
            for number, row in enumerate(_read_rows(file), start=1):
                yield str(file), number, row
        return
    if not from_hub:
        raise ValueError(f"give a local file or folder in the schema of {hub_id}, or from_hub=True to download it")
    import datasets

    dataset = datasets.load_dataset(hub_id, split=split, **(hub_kwargs or {}))
    source = f"{hub_id}[{split}]"
    for number, row in enumerate(dataset, start=1):
        yield source, number, row


def _collect(rows: Iterable[tuple[str, int, dict[str, Any]]], parse, on_error: OnError, name: str) -> Loaded:
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error={on_error!r} must be 'raise' or 'skip'")
    records, skipped, sources = [], [], []
    for source, number, row in rows:
        if source not in sources:
            sources.append(source)
        try:
            if not isinstance(row, Mapping):
                raise DataError(source, number, "<row>", f"is a {type(row).__name__}, not an object")
            records.append(parse(row, source, number))
        except DataError as error:
            if on_error == "raise":
                raise
            skipped.append(str(error))
    loaded = Loaded(records, ", ".join(sources), skipped)
    if skipped:
        print(
            f"dualloop.data: {name}: skipped {len(skipped)} malformed rows of {loaded.source} (first: {skipped[0]})",
            flush=True,
        )
    return loaded


def _field(
    row: Mapping[str, Any],
    field: str,
    kind: type | tuple[type, ...],
    source: str,
    number: int,
    *,
    non_empty: bool = False,
    label: str | None = None,
):
    """``row[field]`` checked for presence, type and (optionally) emptiness; ``label`` names it in errors."""
    label = label or field
    if field not in row or row[field] is None:
        raise DataError(source, number, label, "is missing")
    value = row[field]
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise DataError(source, number, label, f"must be {expected}, got {type(value).__name__}")
    if non_empty and (not value.strip() if isinstance(value, str) else not value):
        raise DataError(source, number, label, "is empty")
    return value


def _messages(
    value: Any, field: str, source: str, number: int, *, role_key: str = "role", roles: Mapping[str, str] | None = None
) -> tuple[Message, ...]:
    """Validate a list of ``{role, content}`` dicts (``roles`` renames e.g. human -> user)."""
    if not isinstance(value, list) or not value:
        raise DataError(source, number, field, "must be a non-empty list of messages")
    messages = []
    for index, message in enumerate(value):
        where = f"{field}[{index}]"
        if not isinstance(message, Mapping):
            raise DataError(source, number, where, "must be an object with 'role' and 'content'")
        role = _field(message, role_key, str, source, number, non_empty=True, label=f"{where}.{role_key}")
        content = _field(message, "content", str, source, number, label=f"{where}.content")
        role = roles.get(role, role) if roles else role
        if role not in ("system", "user", "assistant"):
            raise DataError(source, number, f"{where}.{role_key}", f"has unknown role {message[role_key]!r}")
        messages.append({"role": role, "content": content})
    return tuple(messages)


def _pair(
    prompt: tuple[Message, ...], chosen: str, rejected: str, metadata: dict, source: str, number: int
) -> PreferencePair:
    if not prompt or prompt[-1]["role"] != "user" or not prompt[-1]["content"].strip():
        raise DataError(source, number, "prompt", "must end with a non-empty user message")
    if not chosen.strip():
        raise DataError(source, number, "chosen", "is empty")
    if not rejected.strip():
        raise DataError(source, number, "rejected", "is empty")
    if chosen.strip() == rejected.strip():
        raise DataError(source, number, "chosen", "is identical to 'rejected'")
    return PreferencePair(prompt, chosen, rejected, metadata)


# ---------------------------------------------------------------------------------------------
# UltraFeedback
# ---------------------------------------------------------------------------------------------


def load_ultrafeedback(
    path: str | Path | None = None, *, split: str = "train_prefs", from_hub: bool = False, on_error: OnError = "raise"
) -> Loaded:
    """UltraFeedback binarized pairs (``HuggingFaceH4/ultrafeedback_binarized``; splits
    ``train_prefs``, ``test_prefs``): rows ``prompt, prompt_id, chosen, rejected, messages,
    score_chosen, score_rejected``, where chosen/rejected are whole conversations whose last
    message is the assistant's response. ``path``: a file, or a folder whose file names hold ``split``.
    """

    def parse(row, source, number):
        _field(row, "prompt", str, source, number, non_empty=True)
        chosen = _messages(_field(row, "chosen", list, source, number), "chosen", source, number)
        rejected = _messages(_field(row, "rejected", list, source, number), "rejected", source, number)
        for field, conversation in (("chosen", chosen), ("rejected", rejected)):
            if conversation[-1]["role"] != "assistant" or len(conversation) < 2:
                raise DataError(source, number, field, "must end with the assistant's response after a prompt")
        if chosen[:-1] != rejected[:-1]:
            raise DataError(source, number, "rejected", "does not share the prompt messages of 'chosen'")
        metadata = {"prompt_id": _field(row, "prompt_id", str, source, number)}
        for score in ("score_chosen", "score_rejected"):
            if score in row:
                metadata[score] = float(_field(row, score, (int, float), source, number))
        return _pair(chosen[:-1], chosen[-1]["content"], rejected[-1]["content"], metadata, source, number)

    return _collect(_rows(path, split=split, hub_id=ULTRAFEEDBACK, from_hub=from_hub), parse, on_error, "UltraFeedback")


# ---------------------------------------------------------------------------------------------
# Anthropic HH
# ---------------------------------------------------------------------------------------------

_HH_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")


def parse_hh_transcript(transcript: str) -> list[Message]:
    """Split a ``"\\n\\nHuman: ... \\n\\nAssistant: ..."`` transcript into user/assistant messages.

    Text before the first turn marker (there should be none) raises ``ValueError``. Message
    contents keep their inner whitespace and lose the leading/trailing spaces and newlines.
    """
    parts = _HH_TURN.split(transcript)
    if parts[0].strip():
        raise ValueError(f"text before the first 'Human:' turn: {parts[0][:40]!r}")
    roles = {"Human": "user", "Assistant": "assistant"}
    return [{"role": roles[parts[i]], "content": parts[i + 1].strip()} for i in range(1, len(parts), 2)]


def load_hh(
    path: str | Path | None = None,
    *,
    split: str = "test",
    subset: str | None = "harmless-base",
    from_hub: bool = False,
    on_error: OnError = "raise",
) -> Loaded:
    """Anthropic HH-RLHF pairs (``Anthropic/hh-rlhf``): rows ``{chosen, rejected}``, each a full
    transcript. prompt = the conversation shared by both up to the final assistant turn;
    chosen / rejected = the two final assistant turns. A row whose transcripts differ before
    that turn, or that does not end with an assistant turn, is malformed.

    ``path``: a file (``harmless-base-test.jsonl.gz``) or a folder (the hub's layout
    ``harmless-base/test.jsonl.gz``: files whose name holds ``split``); ``subset`` is the hub's
    ``data_dir`` (None = all subsets) when ``from_hub``.
    """

    def parse(row, source, number):
        conversations = {}
        for field in ("chosen", "rejected"):
            text = _field(row, field, str, source, number, non_empty=True)
            try:
                conversation = parse_hh_transcript(text)
            except ValueError as error:
                raise DataError(source, number, field, str(error)) from None
            if len(conversation) < 2 or conversation[-1]["role"] != "assistant":
                raise DataError(source, number, field, "must end with an 'Assistant:' turn after a 'Human:' turn")
            conversations[field] = conversation
        prompt = tuple(conversations["chosen"][:-1])
        if prompt != tuple(conversations["rejected"][:-1]):
            raise DataError(source, number, "rejected", "differs from 'chosen' before the final assistant turn")
        return _pair(
            prompt,
            conversations["chosen"][-1]["content"],
            conversations["rejected"][-1]["content"],
            {"row": number},
            source,
            number,
        )

    hub_kwargs = {"data_dir": subset} if subset else {}
    return _collect(
        _rows(path, split=split, hub_id=HH_RLHF, from_hub=from_hub, hub_kwargs=hub_kwargs),
        parse,
        on_error,
        "Anthropic HH",
    )


# ---------------------------------------------------------------------------------------------
# HelpSteer2 and Sycophancy-Eval: evaluation prompts
# ---------------------------------------------------------------------------------------------


def _prompt_id(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12]


def load_helpsteer2_prompts(
    path: str | Path | None = None, *, split: str = "validation", from_hub: bool = False, on_error: OnError = "raise"
) -> Loaded:
    """HelpSteer2 prompts (``nvidia/HelpSteer2``; splits ``train``, ``validation``): rows
    ``prompt, response, helpfulness, correctness, coherence, complexity, verbosity`` (0-4), two
    responses per prompt. Returns one :class:`PromptRecord` per distinct prompt, in first-seen
    order, with its rated responses in ``metadata["responses"]``.
    """

    def parse(row, source, number):
        prompt = _field(row, "prompt", str, source, number, non_empty=True)
        response = _field(row, "response", str, source, number, non_empty=True)
        ratings = {name: _field(row, name, int, source, number) for name in HELPSTEER2_ATTRIBUTES}
        for name, value in ratings.items():
            if not 0 <= value <= 4:
                raise DataError(source, number, name, f"must be a rating from 0 to 4, got {value}")
        return prompt, {"response": response, **ratings}

    loaded = _collect(_rows(path, split=split, hub_id=HELPSTEER2, from_hub=from_hub), parse, on_error, "HelpSteer2")
    by_prompt: dict[str, list[dict]] = {}
    for prompt, rated in loaded.records:
        by_prompt.setdefault(prompt, []).append(rated)
    loaded.records = [
        PromptRecord(_prompt_id(prompt), ({"role": "user", "content": prompt},), {"responses": rated})
        for prompt, rated in by_prompt.items()
    ]
    return loaded


SYCOPHANCY_SUBSETS = ("answer", "are_you_sure", "feedback")


def load_sycophancy_eval(
    path: str | Path | None = None, *, subset: str = "answer", from_hub: bool = False, on_error: OnError = "raise"
) -> Loaded:
    """Sycophancy-Eval prompts (``meg-tong/sycophancy-eval``; files ``answer.jsonl``,
    ``are_you_sure.jsonl``, ``feedback.jsonl``): rows ``prompt`` (messages
    ``{"type": "human"|"ai", "content"}``), ``base`` (the source item: question, correct and
    incorrect answer, ...) and ``metadata`` (``prompt_template``). A prompt may end with an ``ai``
    message that the response continues (``are_you_sure``'s "The answer is (").
    """
    if subset not in SYCOPHANCY_SUBSETS:
        raise ValueError(f"subset={subset!r} must be one of {SYCOPHANCY_SUBSETS}")

    def parse(row, source, number):
        messages = _messages(
            _field(row, "prompt", list, source, number),
            "prompt",
            source,
            number,
            role_key="type",
            roles={"human": "user", "ai": "assistant"},
        )
        if not any(m["role"] == "user" and m["content"].strip() for m in messages):
            raise DataError(source, number, "prompt", "has no non-empty human message")
        base = _field(row, "base", dict, source, number)
        metadata = row.get("metadata") or {}
        if not isinstance(metadata, Mapping):
            raise DataError(source, number, "metadata", f"must be an object, got {type(metadata).__name__}")
        return PromptRecord(
            _prompt_id(subset, json.dumps([m["content"] for m in messages])),
            messages,
            {"base": dict(base), **dict(metadata), "subset": subset},
        )

    if path is not None:
        rows = _rows(path, split=subset, hub_id=SYCOPHANCY_EVAL, from_hub=False)
    else:  # on the hub each subset is one JSONL file of the repository
        rows = _rows(
            None, split="train", hub_id=SYCOPHANCY_EVAL, from_hub=from_hub, hub_kwargs={"data_files": f"{subset}.jsonl"}
        )
    return _collect(rows, parse, on_error, "Sycophancy-Eval")


# ---------------------------------------------------------------------------------------------
# the offline verifiable-instruction preference set (built by dualloop.preference_set)
# ---------------------------------------------------------------------------------------------

# The shipped set, read as package data (importlib.resources); a folder named unlike this module.
SHIPPED_DIR = Path(str(importlib.resources.files("dualloop") / "offline_set"))
PAIRS_FILE = "verifiable_pairs.jsonl"
HELDOUT_FILE = "verifiable_heldout.jsonl"
PROVENANCE_FILE = "verifiable_provenance.json"


def load_verifiable_preferences(
    path: str | Path | None = None, *, label_noise: float = 0.0, seed: int = 0, on_error: OnError = "raise"
) -> Loaded:
    """The offline preference pairs (default: the file shipped in ``dualloop/offline_set/``).

    Rows ``prompt, chosen, rejected, prompt_id, instruction_ids, kwargs, score_chosen,
    score_rejected, score_gap, ...``. ``label_noise`` flips a seeded fraction at load time.
    """
    path = Path(path) if path is not None else SHIPPED_DIR / PAIRS_FILE

    def parse(row, source, number):
        prompt = _field(row, "prompt", str, source, number, non_empty=True)
        chosen = _field(row, "chosen", str, source, number)
        rejected = _field(row, "rejected", str, source, number)
        gap = _field(row, "score_gap", (int, float), source, number)
        if gap < 0:
            raise DataError(source, number, "score_gap", f"must not be negative, got {gap}")
        metadata = {k: v for k, v in row.items() if k not in ("prompt", "chosen", "rejected")}
        return _pair(({"role": "user", "content": prompt},), chosen, rejected, metadata, source, number)

    loaded = _collect(
        ((str(path), n, row) for n, row in enumerate(_read_rows(path), start=1)),
        parse,
        on_error,
        "verifiable preferences",
    )
    if label_noise:
        loaded.records = flip_labels(loaded.records, label_noise, seed=seed)
    return loaded


def load_verifiable_heldout(path: str | Path | None = None) -> list:
    """The held-out verifiable prompts (``dualloop.instructions.VerifiablePrompt``), default the shipped file."""
    from dualloop.instructions import VerifiablePrompt

    path = Path(path) if path is not None else SHIPPED_DIR / HELDOUT_FILE
    prompts = []
    for number, row in enumerate(_read_rows(path), start=1):
        try:
            prompts.append(
                VerifiablePrompt(
                    row["prompt_id"],
                    row["prompt"],
                    tuple(row["instruction_ids"]),
                    tuple(row["kwargs"]),
                    row["split"],
                    row.get("base_task", ""),
                    row.get("source", "composed"),
                )
            )
        except KeyError as error:
            raise DataError(str(path), number, error.args[0], "is missing") from None
    return prompts
