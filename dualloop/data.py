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
- Your own data: :func:`load_preferences` reads preference pairs in any of TRL's preference formats
  (plain, implicit prompt, conversational) from a local file or a hub id, and
  :func:`load_prompt_file` your own evaluation prompts, optionally with IFEval-style verifiable
  instructions for the gold checker; errors name the file, row, key path and value.
- :func:`subsample` takes the paper's seeded 0.5 % (or any fraction or count).
- The offline verifiable-instruction preference set is built by :mod:`dualloop.preference_set`
  and shipped in ``dualloop/offline_set/``; load it with :func:`load_verifiable_preferences` and
  :func:`load_verifiable_heldout`.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import importlib.resources
import json
import random
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from dualloop.names import did_you_mean

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
    rows: list[dict[str, Any]] = []
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
    assert n is not None  # exactly one of fraction and n was given
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
    revision: str | None = None,
) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(source name, 1-based row number, row) from a local path, or from the hub when asked (at ``revision``, a
    commit or tag of the data set's repository; None: its latest)."""
    if path is not None:
        for file in _local_files(Path(path), split):
            for number, row in enumerate(_read_rows(file), start=1):
                yield str(file), number, row
        return
    if not from_hub:
        raise ValueError(f"give a local file or folder in the schema of {hub_id}, or from_hub=True to download it")
    import datasets

    dataset = datasets.load_dataset(hub_id, split=split, revision=revision, **(hub_kwargs or {}))
    source = f"{hub_id}[{split}]" + (f"@{revision}" if revision else "")
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
    path: str | Path | None = None,
    *,
    split: str = "train_prefs",
    from_hub: bool = False,
    revision: str | None = None,
    on_error: OnError = "raise",
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

    rows = _rows(path, split=split, hub_id=ULTRAFEEDBACK, from_hub=from_hub, revision=revision)
    return _collect(rows, parse, on_error, "UltraFeedback")


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
    revision: str | None = None,
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
        _rows(path, split=split, hub_id=HH_RLHF, from_hub=from_hub, hub_kwargs=hub_kwargs, revision=revision),
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
        # the verifiable constraints of the prompt: what data.instruction_ids selects on
        instruction_ids = _field(row, "instruction_ids", list, source, number, non_empty=True)
        if not all(isinstance(i, str) for i in instruction_ids):
            raise DataError(source, number, "instruction_ids", f"must be a list of strings, got {instruction_ids!r}")
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


# ---------------------------------------------------------------------------------------------
# your own preference pairs (TRL's preference formats) and your own evaluation prompts
# ---------------------------------------------------------------------------------------------

ROLES = ("system", "user", "assistant")
# Row keys that name an evaluation prompt (first present wins): dualloop's own, then IFEval's "key".
PROMPT_ID_KEYS = ("id", "prompt_id", "key")
# Row keys of a prompt's verifiable instructions: IFEval/IFBench's name, then dualloop's.
INSTRUCTION_KEYS = ("instruction_id_list", "instruction_ids")


def _shown(value: Any, width: int = 60) -> str:
    """``repr(value)``, cut to ``width`` characters: the value a row-level error shows."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _text_or_messages(value: Any, key: str, source: str, number: int) -> str | tuple[Message, ...]:
    """A non-empty string, or a non-empty list of ``{"role", "content"}`` messages (other message
    keys are dropped); an error names the key path (``chosen[1].role``) and the value."""
    if value is None:
        raise DataError(source, number, key, "is missing")
    if isinstance(value, str):
        if not value.strip():
            raise DataError(source, number, key, f"is empty, got {_shown(value)}")
        return value
    if not isinstance(value, list):
        raise DataError(
            source,
            number,
            key,
            f"must be a string or a list of {{role, content}} messages, got {type(value).__name__} {_shown(value)}",
        )
    if not value:
        raise DataError(source, number, key, "is an empty list: it holds no message")
    messages = []
    for index, message in enumerate(value):
        where = f"{key}[{index}]"
        if not isinstance(message, Mapping):
            raise DataError(
                source,
                number,
                where,
                f"must be a {{role, content}} message, got {type(message).__name__} {_shown(message)}",
            )
        for part in ("role", "content"):
            if message.get(part) is None:
                raise DataError(
                    source, number, f"{where}.{part}", f"is missing from the message {_shown(dict(message))}"
                )
            if not isinstance(message[part], str):
                kind = type(message[part]).__name__
                raise DataError(
                    source, number, f"{where}.{part}", f"must be a string, got {kind} {_shown(message[part])}"
                )
        if message["role"] not in ROLES:
            raise DataError(
                source,
                number,
                f"{where}.role",
                f"must be one of {', '.join(ROLES)}, got {_shown(message['role'])}{did_you_mean(message['role'], ROLES)}",
            )
        messages.append({"role": message["role"], "content": message["content"]})
    return tuple(messages)


def _final_turn(messages: tuple[Message, ...], key: str, source: str, number: int, *, role: str, what: str) -> Message:
    """The last of ``messages``, checked to be a non-empty ``role`` message (``what`` says why)."""
    last, where = messages[-1], f"{key}[{len(messages) - 1}]"
    if last["role"] != role:
        raise DataError(source, number, f"{where}.role", f"must be {role!r} ({what}), got {_shown(last['role'])}")
    if not last["content"].strip():
        raise DataError(source, number, f"{where}.content", f"is empty, got {_shown(last['content'])}")
    return last


def _response(value: str | tuple[Message, ...], key: str, prompt: tuple[Message, ...], source: str, number: int) -> str:
    """The response text of ``chosen``/``rejected`` in a row with an explicit prompt: a string, one
    assistant message, or the whole conversation (the prompt's messages, then the assistant's)."""
    if isinstance(value, str):
        return value
    last = _final_turn(value, key, source, number, role="assistant", what="the response the pair compares")
    if len(value) > 1 and value[:-1] != prompt:
        raise DataError(
            source,
            number,
            key,
            f"holds {len(value)} messages whose first {len(value) - 1} are not the row's 'prompt': give the "
            f"assistant's response alone, or the whole conversation starting with the prompt; got {_shown(value)}",
        )
    return last["content"]


def _implicit_text_prompt(chosen: str, rejected: str, source: str, number: int) -> tuple[str, str, str]:
    """(prompt, chosen, rejected) of an implicit-prompt string row: the prompt is the common beginning,
    cut back to a whitespace so that no word is split; the responses keep that whitespace."""
    if chosen == rejected:
        raise DataError(source, number, "chosen", "is identical to 'rejected'")
    common = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        common += 1
    if common == len(chosen) or common == len(rejected):
        key = "chosen" if common == len(chosen) else "rejected"
        other = "rejected" if key == "chosen" else "chosen"
        raise DataError(source, number, key, f"is the beginning of {other!r}: it has no response of its own")
    cut = max((i for i in range(common) if chosen[i].isspace()), default=-1)
    while cut > 0 and chosen[cut - 1].isspace():
        cut -= 1
    if cut <= 0 or not chosen[:cut].strip():
        raise DataError(
            source,
            number,
            "chosen",
            "shares no prompt with 'rejected': a row without 'prompt' needs both to begin with the same prompt "
            f"text (TRL's implicit prompt), got {_shown(chosen)}",
        )
    return chosen[:cut], chosen[cut:], rejected[cut:]


def _implicit_message_prompt(
    chosen: tuple[Message, ...], rejected: tuple[Message, ...], source: str, number: int
) -> tuple[tuple[Message, ...], str, str]:
    """(prompt, chosen, rejected) of an implicit-prompt conversational row: the prompt is the leading
    messages both share; each side must continue it with exactly one assistant message."""
    if chosen == rejected:
        raise DataError(source, number, "chosen", "is identical to 'rejected'")
    common = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        common += 1
    if common == 0:
        raise DataError(
            source,
            number,
            "chosen[0]",
            "differs from 'rejected[0]': a row without 'prompt' needs both conversations to begin with the same "
            f"prompt messages (TRL's implicit prompt), got {_shown(chosen[0])}",
        )
    responses = []
    for key, conversation in (("chosen", chosen), ("rejected", rejected)):
        rest = conversation[common:]
        if len(rest) != 1:
            raise DataError(
                source,
                number,
                key,
                f"continues the {common} prompt messages it shares with the other side with {len(rest)} messages, "
                f"not one assistant response; got {_shown(rest)}",
            )
        responses.append(_final_turn(conversation, key, source, number, role="assistant", what="the response"))
    prompt = chosen[:common]
    _final_turn(prompt, "chosen", source, number, role="user", what="the shared prompt's last message")
    return prompt, responses[0]["content"], responses[1]["content"]


def parse_preference_row(row: Mapping[str, Any], source: str, number: int) -> PreferencePair:
    """One row of TRL's preference formats as a :class:`PreferencePair`.

    - plain: ``prompt``, ``chosen``, ``rejected`` strings (the prompt becomes one user message);
    - implicit prompt: ``chosen`` and ``rejected`` only; their common beginning is the prompt (strings:
      the shared text, cut back to a whitespace; conversations: the shared leading messages);
    - conversational: lists of ``{"role", "content"}`` messages, with or without ``prompt``;
      ``chosen``/``rejected`` are one assistant message or the whole conversation ending with it.

    Other keys go to ``metadata``. A malformed row raises :class:`DataError` naming the key path
    (``chosen[1].role``) and the value.
    """
    for key in ("chosen", "rejected"):
        if row.get(key) is None:
            raise DataError(
                source,
                number,
                key,
                f"is missing: a preference row has 'chosen' and 'rejected' (and optionally 'prompt'), got keys {sorted(row)}",
            )
    chosen = _text_or_messages(row["chosen"], "chosen", source, number)
    rejected = _text_or_messages(row["rejected"], "rejected", source, number)
    if isinstance(chosen, str) != isinstance(rejected, str):
        like = "a string" if isinstance(chosen, str) else "a list of messages"
        raise DataError(source, number, "rejected", f"must be {like} like 'chosen', got {_shown(row['rejected'])}")
    metadata = {key: value for key, value in row.items() if key not in ("prompt", "chosen", "rejected")}
    if row.get("prompt") is None:
        if isinstance(chosen, str):
            assert isinstance(rejected, str)  # same kind as chosen, checked above
            text, chosen, rejected = _implicit_text_prompt(chosen, rejected, source, number)
            prompt: tuple[Message, ...] = ({"role": "user", "content": text},)
        else:
            assert not isinstance(rejected, str)  # same kind as chosen, checked above
            prompt, chosen, rejected = _implicit_message_prompt(chosen, rejected, source, number)
    else:
        given = _text_or_messages(row["prompt"], "prompt", source, number)
        if isinstance(given, str):
            prompt = ({"role": "user", "content": given},)
        else:
            prompt = given
            _final_turn(prompt, "prompt", source, number, role="user", what="the message the responses answer")
        chosen = _response(chosen, "chosen", prompt, source, number)
        rejected = _response(rejected, "rejected", prompt, source, number)
    return _pair(prompt, chosen, rejected, metadata, source, number)


def load_preferences(
    source: str | Path,
    *,
    split: str | None = None,
    from_hub: bool = False,
    revision: str | None = None,
    on_error: OnError = "raise",
) -> Loaded:
    """Your own preference pairs, in any of TRL's preference formats (:func:`parse_preference_row`).

    source: a local .jsonl / .jsonl.gz / .json / .parquet file, or a folder of them (every data file,
    or those whose name holds ``split``); with ``from_hub=True`` a hub data set id, read through
    ``datasets.load_dataset`` (``split`` default ``"train"``) at ``revision`` (None: the latest).
    """
    if source is None or not str(source).strip():
        raise ValueError("load_preferences: give a local file or folder, or a hub data set id with from_hub=True")
    if from_hub:
        rows = _rows(None, split=split or "train", hub_id=str(source), from_hub=True, revision=revision)
    else:
        rows = _rows(source, split=split, hub_id=str(source), from_hub=False)
    return _collect(rows, parse_preference_row, on_error, "preference pairs")


def data_fingerprint(path: str | Path) -> str:
    """The first 16 hex digits of the SHA-256 of a local data file, or of a folder's data files (their
    names and bytes): what a run's identity holds so that an edited file trains a new run. Hashed once per
    state of the files (their paths, sizes and modification times), however often a run's identity is asked."""
    path = Path(path)
    files = _local_files(path, None)
    stamp = tuple((str(file), file.stat().st_size, file.stat().st_mtime_ns) for file in files)
    return _hashed_files(str(path), stamp)


@functools.lru_cache(maxsize=64)
def _hashed_files(root: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    path = Path(root)
    digest = hashlib.sha256()
    for name, _, _ in stamp:
        file = Path(name)
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode() + b"\0")
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def _instructions(row: Mapping[str, Any], text: str, source: str, number: int) -> dict[str, list]:
    """``{"instruction_ids", "kwargs"}`` of a prompt row with IFEval-style verifiable instructions
    (``{}`` without them), each id and its arguments checked by building its gold checker."""
    from dualloop.instructions import UNSUPPORTED_CHECKERS, check, supported_checkers

    given = [key for key in INSTRUCTION_KEYS if row.get(key) is not None]
    if not given:
        return {}
    if len(given) > 1:
        raise DataError(source, number, given[1], f"and {given[0]!r} are both given: keep one")
    key = given[0]
    ids = row[key]
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise DataError(source, number, key, f"must be a non-empty list of instruction id strings, got {_shown(ids)}")
    kwargs = row.get("kwargs")
    if kwargs is None:
        kwargs = [{}] * len(ids)
    if not isinstance(kwargs, list) or len(kwargs) != len(ids):
        raise DataError(
            source,
            number,
            "kwargs",
            f"must be a list of one argument object per instruction id ({len(ids)}), got {_shown(kwargs)}",
        )
    supported = supported_checkers()
    cleaned = []
    for index, (instruction_id, arguments) in enumerate(zip(ids, kwargs)):
        if instruction_id in UNSUPPORTED_CHECKERS:
            raise DataError(
                source,
                number,
                f"{key}[{index}]",
                f"is not supported offline (it {UNSUPPORTED_CHECKERS[instruction_id]}), got {instruction_id!r}",
            )
        if instruction_id not in supported:
            raise DataError(
                source,
                number,
                f"{key}[{index}]",
                f"is not an instruction the gold checker knows, got {instruction_id!r}"
                f"{did_you_mean(instruction_id, supported)}",
            )
        if arguments is not None and not isinstance(arguments, Mapping):
            raise DataError(
                source, number, f"kwargs[{index}]", f"must be an object of arguments, got {_shown(arguments)}"
            )
        arguments = {k: v for k, v in (arguments or {}).items() if v is not None}
        try:
            check("probe", [instruction_id], [arguments], text)
        except (TypeError, ValueError) as error:
            raise DataError(
                source,
                number,
                f"kwargs[{index}]",
                f"does not fit {instruction_id!r} ({error}), got {_shown(arguments)}",
            ) from None
        cleaned.append(arguments)
    return {"instruction_ids": list(ids), "kwargs": cleaned}


def load_prompt_file(path: str | Path, *, require_instructions: bool = False, on_error: OnError = "raise") -> Loaded:
    """Your own evaluation prompts (:class:`PromptRecord`) from a .jsonl / .json / .parquet file (or a
    folder of them): rows ``prompt`` (a string, or ``{"role", "content"}`` messages ending with the
    user's), optionally an id (``id``, ``prompt_id`` or IFEval's ``key``; default a hash of the
    prompt) and IFEval-style ``instruction_id_list`` (or ``instruction_ids``) with ``kwargs``, which the
    gold instruction checker judges. ``require_instructions``: every row must carry instructions.
    Other keys go to ``metadata``; a repeated id or prompt is a malformed row.
    """
    seen: dict[str, int] = {}
    known = {"prompt", *PROMPT_ID_KEYS, *INSTRUCTION_KEYS, "kwargs"}

    def parse(row, source, number):
        if row.get("prompt") is None:
            raise DataError(
                source,
                number,
                "prompt",
                f"is missing: a prompt row has 'prompt' (text or messages), got keys {sorted(row)}",
            )
        given = _text_or_messages(row["prompt"], "prompt", source, number)
        messages = ({"role": "user", "content": given},) if isinstance(given, str) else given
        text = _final_turn(messages, "prompt", source, number, role="user", what="the message answered")["content"]
        id_key = next((key for key in PROMPT_ID_KEYS if row.get(key) is not None), None)
        if id_key is None:
            prompt_id = _prompt_id("prompt", json.dumps(messages, sort_keys=True))
            repeated = ("prompt", f"repeats the prompt of row {seen.get(prompt_id)}, got {_shown(given)}")
        else:
            value = row[id_key]
            if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
                raise DataError(
                    source, number, id_key, f"must be a non-empty string or an integer, got {_shown(value)}"
                )
            prompt_id = str(value)
            repeated = (id_key, f"repeats the id of row {seen.get(prompt_id)}, got {_shown(value)}")
        if prompt_id in seen:
            raise DataError(source, number, *repeated)
        instructions = _instructions(row, text, source, number)
        if require_instructions and not instructions:
            raise DataError(
                source,
                number,
                INSTRUCTION_KEYS[0],
                "is missing: every prompt of this set needs its verifiable instructions "
                "('instruction_id_list' or 'instruction_ids', with 'kwargs')",
            )
        seen[prompt_id] = number
        extras = {key: value for key, value in row.items() if key not in known}
        return PromptRecord(prompt_id, messages, {**extras, **instructions})

    files = _local_files(Path(path), None)
    rows = ((str(file), n, row) for file in files for n, row in enumerate(_read_rows(file), start=1))
    return _collect(rows, parse, on_error, "evaluation prompts")
