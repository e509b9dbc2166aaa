"""Judge diagnostics of phases 6 and 7: length-controlled win rates, judge entropy, re-judging flips.

Pure functions of decisions, responses and a judge; the notebooks fetch those through
:class:`dualloop.experiment.Experiment` (``system_responses``, ``local_judge``, ``pair_items``).
The statistics are :mod:`dualloop.stats`'.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from dualloop.judges import Decision
from dualloop.stats import FlipBucket, LengthControlledWinRate, flip_rate_by_entropy, length_controlled_win_rate

__all__ = ["length_controlled", "length_controlled_cell", "judge_entropy", "rejudge_flips"]

PREFERENCE = {"a": 1.0, "tie": 0.5, "b": 0.0}


def length_controlled(
    decisions: Sequence[Decision], responses: Mapping[str, Mapping[str, str]]
) -> LengthControlledWinRate:
    """The length-controlled win rate of the decisions' system_a over system_b (AlpacaEval-2 style),
    with response lengths in characters; ``responses``: system → prompt id → response."""
    systems = {(d.system_a, d.system_b) for d in decisions}
    if len(systems) != 1:
        raise ValueError(f"length_controlled needs the decisions of one comparison, got {sorted(systems)}")
    system_a, system_b = systems.pop()
    kept = [(d.winner, d.prompt_id) for d in decisions if d.winner is not None]
    return length_controlled_win_rate(
        [PREFERENCE[winner] for winner, _ in kept],
        [len(responses[system_a][prompt_id]) for _, prompt_id in kept],
        [len(responses[system_b][prompt_id]) for _, prompt_id in kept],
    )


def length_controlled_cell(decisions: Sequence[Decision], responses: Mapping[str, Mapping[str, str]]) -> str:
    """The length-controlled win rate as a table cell, "48.3% ± 2.1", or "n/a (reason)" where the
    GLM cannot be fit (for example when every response pair has the same length difference)."""
    try:
        result = length_controlled(decisions, responses)
    except ValueError as error:
        return f"n/a ({error})"
    return f"{100 * result.rate:.1f}% ± {100 * result.se:.1f}"


def judge_entropy(decision: Decision) -> float:
    """Normalized binary entropy of a local judge's choice, ``p = P(A) / (P(A) + P(B))``: how close
    to a coin flip the judge was on this pair."""
    if not decision.probabilities:
        raise ValueError(
            f"decision on {decision.item_id!r} by {decision.judge!r} has no probabilities: "
            "judge entropy needs the local model judge"
        )
    p = decision.probabilities["A"] / (decision.probabilities["A"] + decision.probabilities["B"])
    return 0.0 if p in (0.0, 1.0) else -(p * math.log(p) + (1 - p) * math.log(1 - p)) / math.log(2)


def rejudge_flips(
    judge: Any, items: Sequence[Any], *, seed: int, repeats: int = 3, n_buckets: int = 3
) -> list[FlipBucket]:
    """Judge the same pairs ``repeats`` times with a local model ``judge``, each time with another
    seed of the position coin (``seed``, ``seed + 1``, …), and bucket the flips by the judge's entropy
    on the first judging (DualLoop-DPO, Limitations: 90 prompts × 3)."""
    rounds = []
    for repeat in range(repeats):
        judge.seed = seed + repeat
        rounds.append(judge.judge(items))
    judgments = [[round_[i].winner for round_ in rounds] for i in range(len(items))]
    return flip_rate_by_entropy(judgments, [judge_entropy(d) for d in rounds[0]], n_buckets=n_buckets)
