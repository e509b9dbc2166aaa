"""Response log-probs through TRL's fused LM head, the response positions' hidden states, and the
full-vocabulary statistics (token KL, ε-DPO's perturbed log-probs) computed from them.

``DPOTrainer`` patches the policy and the reference with TRL's public ``add_fused_lm_head``:
``model(..., labels=labels, fused_lm_head=True)`` returns per-token log-probs without a
``[B, T, V]`` logits tensor. When the controller needs full-vocabulary statistics, a forward hook on
the model's backbone (``PreTrainedModel.base_model``) keeps its last hidden states, and
:func:`vocabulary_statistics` projects them through each model's own output embedding, a chunk of
positions at a time.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, cast

import torch
import torch.nn.functional as F
from accelerate.utils import is_peft_model
from torch.distributed.tensor import DTensor
from transformers import PreTrainedModel
from trl.trainer.utils import maybe_gather_lm_head_ctx

if TYPE_CHECKING:
    from peft import PeftModel

__all__ = ["backbone", "captured_hidden_states", "check_plain_logits", "lm_head_weights", "vocabulary_statistics"]

# Logit transforms that TRL's fused head applies and `vocabulary_statistics` (plain `lm_head(hidden)`) does not.
LOGIT_TRANSFORMS = (
    "final_logit_softcapping",
    "logit_scale",
    "output_multiplier",
    "lm_head_multiplier",
    "logits_scaling",
)


def check_plain_logits(model: PreTrainedModel) -> None:
    """Refuse a model whose logits are not ``lm_head(hidden)``: the vocabulary statistics assume them."""
    config = model.config.get_text_config()
    for name in LOGIT_TRANSFORMS:
        if getattr(config, name, None) not in (None, 1.0):
            raise ValueError(
                f"{type(model).__name__} sets config.{name}={getattr(config, name)}: the token KL and "
                "ε-DPO's steps are computed from plain `lm_head(hidden)` logits and do not support it"
            )


def backbone(model: torch.nn.Module) -> torch.nn.Module:
    """The transformer body whose last hidden states feed the LM head (through a PEFT wrapper)."""
    # is_peft_model does not narrow `model`, and nn.Module types the attributes it resolves by name as
    # Tensor | Module: below the PEFT wrapper is the PreTrainedModel
    inner = cast("PeftModel", model).get_base_model() if is_peft_model(model) else model
    return cast(PreTrainedModel, inner).base_model


@contextlib.contextmanager
def captured_hidden_states(body: torch.nn.Module, enabled: bool = True) -> Iterator[list[torch.Tensor]]:
    """Within the block, the last hidden state ``[B, T, H]`` of every forward of ``body`` is appended to the list."""
    captured: list[torch.Tensor] = []
    if not enabled:
        yield captured
        return
    handle = body.register_forward_hook(lambda module, args, output: captured.append(output[0]))
    try:
        yield captured
    finally:
        handle.remove()


@contextlib.contextmanager
def lm_head_weights(model: torch.nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """The output embedding's full ``(weight, bias)`` for direct use, as TRL's fused head reads them:
    FSDP2's sharded DTensors are gathered, DeepSpeed ZeRO-3's partitions are gathered for the block."""
    # a PreTrainedModel, or a PEFT wrapper that forwards get_output_embeddings to it (nn.Module types the
    # attributes it resolves by name as Tensor | Module)
    head = cast(PreTrainedModel, model).get_output_embeddings()
    weight, bias = head.weight, head.bias
    if isinstance(weight, DTensor):
        weight = weight.full_tensor()
        bias = bias.full_tensor() if bias is not None else None
    with maybe_gather_lm_head_ctx(weight, bias):
        yield weight, bias


@torch.no_grad()
def vocabulary_statistics(
    policy_head: tuple[torch.Tensor, torch.Tensor | None],
    ref_head: tuple[torch.Tensor, torch.Tensor | None],
    policy_hidden: torch.Tensor,
    ref_hidden: torch.Tensor,
    targets: torch.Tensor,
    rows: torch.Tensor,
    num_rows: int,
    *,
    chunk_size: int,
    token_kl: bool,
    epsilon: float | None,
):
    """Full-vocabulary statistics of the response tokens, ``chunk_size`` positions at a time, no grad.

    ``policy_head``/``ref_head``: each model's own output embedding ``(weight, bias)``;
    ``policy_hidden``/``ref_hidden`` ``[N, H]``; ``targets`` ``[N]`` (the scored tokens); ``rows`` ``[N]``
    (each position's sequence, chosen rows first).
    Returns ``(kl_rows, log_probs)``: ``kl_rows`` ``[num_rows]`` each sequence's sum over its positions
    of ``KL(π_θ ‖ π_ref)`` (float64, or None without ``token_kl``), and ``log_probs`` ``[3, num_rows]``
    the summed label log-probs under θ, ``(1+ε)ℓ_θ − εℓ_ref`` and ``(1−ε)ℓ_θ + εℓ_ref``
    (ε-DPO, Lee et al. 2025, arXiv 2502.13177, step 1; None without ``epsilon``).
    The same quantities as the tests' full-logit references (``tests/reference_statistics.py``) but from hidden
    states, so at most one chunk of ``[chunk_size, V]`` logits exists at a time: the peak is 4 float32
    ``[chunk_size, V]`` tensors.
    """
    kl_rows = torch.zeros(num_rows, dtype=torch.float64, device=policy_hidden.device) if token_kl else None
    log_probs = None
    if epsilon is not None:
        log_probs = torch.zeros(3, num_rows, dtype=torch.float64, device=policy_hidden.device)
    for start in range(0, policy_hidden.shape[0], chunk_size):
        chunk = slice(start, start + chunk_size)
        policy = F.linear(policy_hidden[chunk], *policy_head).float()
        ref = F.linear(ref_hidden[chunk], *ref_head).float()
        policy_lse = policy.logsumexp(-1)
        if token_kl:  # KL = Σ_v p_v (ℓ_θ,v − ℓ_ref,v) − lse(ℓ_θ) + lse(ℓ_ref), with p = softmax(ℓ_θ)
            assert kl_rows is not None  # allocated above with token_kl
            probs = (policy - policy_lse.unsqueeze(1)).exp_().unsqueeze(1)
            kl = (probs @ policy.unsqueeze(2) - probs @ ref.unsqueeze(2)).view(-1) - policy_lse + ref.logsumexp(-1)
            kl_rows.index_add_(0, rows[chunk], kl.clamp_min(0.0).double())
            del probs
        if epsilon is not None:
            assert log_probs is not None  # allocated above with epsilon
            tokens = targets[chunk].unsqueeze(1)
            policy_target = policy.gather(1, tokens).squeeze(1)
            ref_target = ref.gather(1, tokens).squeeze(1)
            sequence = rows[chunk]
            log_probs[0].index_add_(0, sequence, (policy_target - policy_lse).double())
            for variant, weight_ref in ((1, -epsilon), (2, epsilon)):  # ℓ = (1−w) ℓ_θ + w ℓ_ref
                perturbed_lse = torch.lerp(policy, ref, weight_ref).logsumexp(-1)
                target = torch.lerp(policy_target, ref_target, weight_ref)
                log_probs[variant].index_add_(0, sequence, (target - perturbed_lse).double())
    return kl_rows, log_probs
