"""The offline gold judge: the verifiable-instruction checker, under IFEval's strict or loose criterion."""

from __future__ import annotations

from collections.abc import Sequence

from dualloop.judges.decisions import ShownPair, Verdict
from dualloop.judges.pairwise import PairwiseJudge

__all__ = ["GoldCheckerJudge"]


class GoldCheckerJudge(PairwiseJudge):
    """The offline gold judge: the response satisfying more of the prompt's verifiable
    instructions wins; equal counts tie (a tie counts half in dualloop.stats). Each item's metadata
    must hold "instruction_ids" and "kwargs" (as dualloop.instructions.VerifiablePrompt has them).

    ``loose=True`` checks with IFEval's loose criterion (:func:`dualloop.instructions.check_loose`:
    a constraint counts as followed when the response passes it after dropping its first or last
    line or its markdown ``*``); that judge is named "gold-loose". The two criteria differ on
    responses that wrap a compliant answer in a preamble or formatting, so they are two judges
    that decide, and can disagree.
    """

    can_tie = True

    def __init__(
        self, criterion: str = "instructions", *, seed: int = 0, both_orders: bool = False, loose: bool = False
    ):
        super().__init__(criterion, seed=seed, both_orders=both_orders)
        self.loose = loose
        self.name = "gold-loose" if loose else "gold-checker"

    def judge_shown(self, pairs: Sequence[ShownPair]) -> list[Verdict]:
        from dualloop.instructions import check, check_loose

        checker = check_loose if self.loose else check
        verdicts = []
        for shown in pairs:
            metadata = shown.item.metadata
            if "instruction_ids" not in metadata:
                raise ValueError(
                    f"item {shown.item.item_id!r}: metadata has no 'instruction_ids'; the gold "
                    "judge needs the prompt's verifiable instructions"
                )
            ids, kwargs = metadata["instruction_ids"], metadata.get("kwargs")
            satisfied_first = checker(shown.first, ids, kwargs, shown.item.prompt)
            satisfied_second = checker(shown.second, ids, kwargs, shown.item.prompt)
            difference = sum(satisfied_first) - sum(satisfied_second)
            label = "A" if difference > 0 else "B" if difference < 0 else "tie"
            verdicts.append(Verdict(label, details={"satisfied_A": satisfied_first, "satisfied_B": satisfied_second}))
        return verdicts
