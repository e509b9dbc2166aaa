"""The decisions of pairwise judging: the records, how a verdict maps to them, the decisions file.

The decisions file (JSONL, one object per judged pair as shown; ``Decision.to_json``):

    item_id        str   the judged pair (one prompt, two systems' responses)
    prompt_id      str   the prompt (several items may share it)
    system_a       str   the system whose win rate is reported (e.g. "dualloop")
    system_b       str   the system it is compared with (e.g. "static")
    criterion      str   a key of CRITERIA ("helpful", "truthful", "safer", "general", "instructions")
    judge          str   the judge's name (e.g. "gpt-4o-mini", "gold-checker")
    order_shown    str   "ab": system_a's response was shown first (as "A"); "ba": second
    verdict        str   the judge's answer about the pair as shown: "A", "B", "tie" or "unparseable"
    winner         str?  "a", "b", "tie", or null when the verdict is unparseable
    winner_system  str?  system_a's or system_b's name, "tie", or null
    raw            str?  the API judge's reply text
    probabilities  obj?  the local judge's {"A": p, "B": p}
    details        obj?  judge-specific facts (the gold judge's satisfied instructions per response)
    seed           int   the seed of the position coin
    judge_prompt_version str

With ``both_orders=True`` every item is judged twice (orders "ab" and "ba"): two records.
``Decision.outcome()`` is "win"/"loss"/"tie" for system_a (None when unparseable): what
``dualloop.stats.win_rate_of`` takes.

A decisions file has one writer at a time (:func:`dualloop.locking.file_lock`), and a decision already
in it (same item, judge, criterion and order shown) is not appended again, so two processes judging
into one folder record each decision once. Every record is redacted (:mod:`dualloop.redaction`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dualloop.jsonl import append_records, read_records
from dualloop.locking import file_lock
from dualloop.redaction import redact_record

__all__ = [
    "JUDGE_PROMPT_VERSION",
    "Decision",
    "PairItem",
    "ShownPair",
    "Verdict",
    "decide",
    "paired_winners",
    "position_consistency",
    "read_decisions",
    "write_decisions",
]

JUDGE_PROMPT_VERSION = "pairwise-v1"


@dataclass(frozen=True)
class PairItem:
    """One pair to judge: a prompt and the responses of system_a and system_b.

    metadata carries what a judge may need beyond the text (the gold judge reads
    "instruction_ids" and "kwargs").
    """

    item_id: str
    prompt: str
    response_a: str
    response_b: str
    system_a: str = "a"
    system_b: str = "b"
    prompt_id: str | None = None
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ShownPair:
    """A pair as the judge sees it: `first` is shown as "A", `second` as "B"."""

    item: PairItem
    order: str

    @property
    def first(self) -> str:
        return self.item.response_a if self.order == "ab" else self.item.response_b

    @property
    def second(self) -> str:
        return self.item.response_b if self.order == "ab" else self.item.response_a


@dataclass(frozen=True)
class Verdict:
    """A judge's answer about a pair as shown: label "A", "B", "tie" or "unparseable"."""

    label: str
    raw: str | None = None
    probabilities: dict | None = None
    details: dict | None = None


@dataclass(frozen=True)
class Decision:
    """One record of the decisions file (schema in the module docstring)."""

    item_id: str
    prompt_id: str
    system_a: str
    system_b: str
    criterion: str
    judge: str
    order_shown: str
    verdict: str
    winner: str | None
    winner_system: str | None
    raw: str | None = None
    probabilities: dict | None = None
    details: dict | None = None
    seed: int = 0
    judge_prompt_version: str = JUDGE_PROMPT_VERSION

    def outcome(self) -> str | None:
        """ "win", "loss" or "tie" for system_a; None when the verdict was unparseable."""
        if self.winner is None:
            return None
        return {"a": "win", "b": "loss", "tie": "tie"}.get(self.winner)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, row: dict) -> Decision:
        return cls(**row)


def decide(shown: ShownPair, verdict: Verdict, *, criterion: str, judge: str, seed: int) -> Decision:
    """Map a verdict about the pair as shown back to the two systems."""
    item = shown.item
    if verdict.label == "tie":
        winner = "tie"
    elif verdict.label in ("A", "B"):
        first_is_a = shown.order == "ab"
        winner = "a" if (verdict.label == "A") == first_is_a else "b"
    elif verdict.label == "unparseable":
        winner = None
    else:
        raise ValueError(f"verdict label {verdict.label!r} is not 'A', 'B', 'tie' or 'unparseable'")
    winner_system = {"a": item.system_a, "b": item.system_b, "tie": "tie", None: None}[winner]
    return Decision(
        item_id=item.item_id,
        prompt_id=item.prompt_id or item.item_id,
        system_a=item.system_a,
        system_b=item.system_b,
        criterion=criterion,
        judge=judge,
        order_shown=shown.order,
        verdict=verdict.label,
        winner=winner,
        winner_system=winner_system,
        raw=verdict.raw,
        probabilities=verdict.probabilities,
        details=verdict.details,
        seed=seed,
    )


def _identity(record: dict) -> tuple:
    return record["item_id"], record["judge"], record["criterion"], record["order_shown"]


def write_decisions(path: str | Path, decisions: Iterable[Decision]) -> Path:
    """Append the decisions not yet in the JSONL file ``path`` (redacted, fsynced), holding its lock."""
    path = Path(path)
    with file_lock(path):
        seen = {_identity(record) for record in read_records(path)}
        new = []
        for decision in decisions:
            record = redact_record(decision.to_json())
            if _identity(record) not in seen:
                seen.add(_identity(record))
                new.append(record)
        append_records(path, new)
    return path


def read_decisions(path: str | Path) -> list[Decision]:
    """The decisions of a JSONL decisions file; a malformed line raises naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no decisions file there")
    decisions = []
    for number, record in enumerate(read_records(path), 1):
        try:
            decisions.append(Decision.from_json(record))
        except TypeError as error:
            raise ValueError(f"{path}, record {number}: not a decision record ({error})") from None
    return decisions


def position_consistency(decisions: Sequence[Decision]) -> float:
    """Fraction of items judged in both orders whose two decisions name the same winner
    (the position-bias check of both-order judging); 1.0 means no position effect."""
    by_item: dict[tuple, dict[str, str | None]] = {}
    for d in decisions:
        by_item.setdefault((d.item_id, d.judge, d.criterion), {})[d.order_shown] = d.winner
    pairs = [w for w in by_item.values() if len(w) == 2]
    if not pairs:
        raise ValueError("no item was judged in both orders: judge with both_orders=True")
    return sum(w["ab"] == w["ba"] for w in pairs) / len(pairs)


def paired_winners(decisions: Sequence[Decision], first_judge: str, second_judge: str) -> tuple[list[str], list[str]]:
    """The winners ("a", "b", "tie") two judges gave on the same pairs, aligned: what
    dualloop.stats.agreement and cohens_kappa take. A pair is the same (item_id, criterion,
    order_shown); pairs that only one judge saw, or that either judge left unparseable, are left out."""
    winners: dict[str, dict[tuple, str | None]] = {first_judge: {}, second_judge: {}}
    for d in decisions:
        if d.judge in winners:
            winners[d.judge][(d.item_id, d.criterion, d.order_shown)] = d.winner
    for judge, found in winners.items():
        if not found:
            raise ValueError(f"no decision by judge {judge!r} (judges present: {sorted({d.judge for d in decisions})})")
    common = [
        (first, second)
        for k, first in winners[first_judge].items()
        if first is not None and (second := winners[second_judge].get(k)) is not None
    ]
    return [first for first, _ in common], [second for _, second in common]
