"""A local Hugging Face causal LM as pairwise judge, by its next-token probabilities of "A" and "B"."""

from __future__ import annotations

from collections.abc import Sequence

from dualloop.judges.decisions import ShownPair, Verdict
from dualloop.judges.pairwise import PairwiseJudge, judge_messages

__all__ = ["LocalModelJudge"]


class LocalModelJudge(PairwiseJudge):
    """A local Hugging Face causal LM as pairwise judge (usable offline as the second judge).

    The judge messages (the same as the API judge's) go through the tokenizer's chat template with
    the generation prompt; the verdict is the larger of the next-token probabilities of "A" and "B"
    (both recorded; exactly equal is a tie). model and tokenizer are loaded by the caller
    (dualloop.models); batches are left-padded.
    """

    can_tie = False

    def __init__(
        self,
        model,
        tokenizer,
        criterion: str = "general",
        *,
        batch_size: int = 4,
        seed: int = 0,
        both_orders: bool = False,
        name: str | None = None,
    ):
        super().__init__(criterion, seed=seed, both_orders=both_orders)
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.name = name or getattr(getattr(model, "config", None), "name_or_path", "") or "local-model"
        self.letter_ids = {}
        for letter in ("A", "B"):
            ids = tokenizer.encode(letter, add_special_tokens=False)
            if len(ids) != 1:
                raise ValueError(
                    f"the tokenizer splits {letter!r} into {len(ids)} tokens: the local judge "
                    "needs single-token answers A and B"
                )
            self.letter_ids[letter] = ids[0]

    def judge_shown(self, pairs: Sequence[ShownPair]) -> list[Verdict]:
        import torch

        texts = [
            self.tokenizer.apply_chat_template(
                judge_messages(s.item.prompt, s.first, s.second, self.criterion),
                tokenize=False,
                add_generation_prompt=True,
            )
            for s in pairs
        ]
        padding_side, needs_pad = self.tokenizer.padding_side, self.tokenizer.pad_token is None
        self.tokenizer.padding_side = "left"
        if needs_pad:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        was_training = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        verdicts = []
        try:
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    texts[start : start + self.batch_size], return_tensors="pt", padding=True, add_special_tokens=False
                ).to(device)
                with torch.no_grad():
                    logits = self.model(**batch).logits[:, -1, :].float()
                probabilities = torch.softmax(logits, dim=-1)
                for row in probabilities:
                    p_a, p_b = float(row[self.letter_ids["A"]]), float(row[self.letter_ids["B"]])
                    label = "A" if p_a > p_b else "B" if p_b > p_a else "tie"
                    verdicts.append(Verdict(label, probabilities={"A": p_a, "B": p_b}))
        finally:
            self.tokenizer.padding_side = padding_side
            if needs_pad:
                self.tokenizer.pad_token = None
            self.model.train(was_training)
        return verdicts
