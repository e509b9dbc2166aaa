"""The one private TRL name the trainer touches (dualloop.trainer.trl_private): these tests fail when
TRL changes it, and check that scoring only the response positions on a CPU changes no number."""

import inspect

import torch
import trl.trainer.utils as trl_utils
from trl.trainer.utils import add_fused_lm_head

from dualloop.models import smoke_model
from dualloop.trainer.trl_private import compact_scoring_on_cpu


def test_trl_still_decides_the_fused_heads_scoring_with_use_triton():
    """If this fails, TRL moved or renamed the switch: compact_scoring_on_cpu no longer acts (see its module)."""
    assert callable(trl_utils._use_triton)
    assert "compact = _use_triton(hidden_states.device)" in inspect.getsource(add_fused_lm_head)
    assert trl_utils._use_triton(torch.device("cpu")) is False


def test_compact_scoring_gives_the_same_log_probs_and_gradients_from_the_labelled_positions_only(monkeypatch):
    model, _ = smoke_model(seed=0)
    add_fused_lm_head(model)
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, model.config.vocab_size, (3, 12), generator=generator)
    labels = input_ids.clone()
    labels[:, :7] = -100  # the prompt
    labels[2, 10:] = -100  # padding
    scored_rows = []
    apply = trl_utils._ChunkedLogProbFunction.apply

    def counting_apply(hidden, *rest):
        scored_rows.append(hidden.shape[0])
        return apply(hidden, *rest)

    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", counting_apply)
    results = []
    for compact in (False, True):
        model.zero_grad()
        with compact_scoring_on_cpu() if compact else torch.enable_grad():
            output = model(input_ids=input_ids, labels=labels, fused_lm_head=True)
        output.log_probs.sum().backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results.append((output.log_probs.detach(), grads))
    assert scored_rows == [3 * 11, int((labels[:, 1:] != -100).sum())]
    assert torch.allclose(results[0][0], results[1][0], rtol=0, atol=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(results[0][1], results[1][1]))
    assert trl_utils._use_triton(torch.device("cpu")) is False  # restored after the block
