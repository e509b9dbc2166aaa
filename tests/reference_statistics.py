"""Reference implementations of the trainer's full-vocabulary statistics, from full logits.

The trainer computes the token KL and ε-DPO's log-probs from hidden states, one chunk of positions at
a time (:func:`dualloop.trainer.heads.vocabulary_statistics`), and the ``logratio`` KL inline; these
straightforward versions from ``[N, T, V]`` logits are what the tests compare them with.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dualloop.controllers import epsilon_steps_from_logps
from dualloop.controllers.base import in_unit_interval

DEFAULT_VOCAB_CHUNK = 256  # token positions whose full-vocabulary rows are materialized at once


def _check_logits(
    policy_logits: torch.Tensor, ref_logits: torch.Tensor, loss_mask: torch.Tensor, labels: torch.Tensor | None = None
) -> None:
    if policy_logits.dim() != 3:
        raise ValueError(f"policy_logits must be [N, T, V], got shape {tuple(policy_logits.shape)}")
    if ref_logits.shape != policy_logits.shape:
        raise ValueError(
            f"ref_logits has shape {tuple(ref_logits.shape)} but policy_logits has {tuple(policy_logits.shape)}"
        )
    if loss_mask.shape != policy_logits.shape[:2]:
        raise ValueError(f"loss_mask must be [N, T] = {tuple(policy_logits.shape[:2])}, got {tuple(loss_mask.shape)}")
    if labels is not None and labels.shape != policy_logits.shape[:2]:
        raise ValueError(f"labels must be [N, T] = {tuple(policy_logits.shape[:2])}, got {tuple(labels.shape)}")


def _masked_position_chunks(loss_mask: torch.Tensor, chunk_size: int):
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be an integer ≥ 1, got {chunk_size!r}")
    positions = loss_mask.reshape(-1).nonzero().squeeze(1)
    return positions.split(chunk_size)


@torch.no_grad()
def token_kl(
    policy_logits: torch.Tensor,
    ref_logits: torch.Tensor,
    loss_mask: torch.Tensor,
    *,
    chunk_size: int = DEFAULT_VOCAB_CHUNK,
) -> torch.Tensor:
    """Exact full-vocabulary ``KL(π_θ(·|ctx) ‖ π_ref(·|ctx))`` averaged over the masked positions
    (estimator ``token``), in nats per token. Rows of ``chunk_size`` positions are
    converted to float32 at a time, so memory stays ``O(chunk_size · V)``; no gradient."""
    _check_logits(policy_logits, ref_logits, loss_mask)
    vocab = policy_logits.shape[-1]
    policy_rows, ref_rows = policy_logits.reshape(-1, vocab), ref_logits.reshape(-1, vocab)
    total = torch.zeros((), dtype=torch.float64, device=policy_logits.device)
    count = 0
    for chunk in _masked_position_chunks(loss_mask, chunk_size):
        policy_logp = F.log_softmax(policy_rows.index_select(0, chunk).float(), dim=-1)
        ref_logp = F.log_softmax(ref_rows.index_select(0, chunk).float(), dim=-1)
        kl = (policy_logp.exp() * (policy_logp - ref_logp)).sum(-1).clamp_min(0.0)
        total += kl.double().sum()
        count += chunk.numel()
    if count == 0:
        raise ValueError("loss_mask selects no token: token_kl needs at least one response token")
    return (total / count).float()


@torch.no_grad()
def epsilon_steps(
    policy_logits: torch.Tensor,
    ref_logits: torch.Tensor,
    labels: torch.Tensor,
    loss_mask: torch.Tensor,
    epsilon: float,
    *,
    chunk_size: int = DEFAULT_VOCAB_CHUNK,
) -> torch.Tensor:
    """ε-DPO's step direction per pair (steps 1–2), from logits already computed.

    Perturbed policies: ``ℓ⁺ = (1+ε) ℓ_θ − ε ℓ_ref`` (policy at β/(1+ε)) and
    ``ℓ⁻ = (1−ε) ℓ_θ + ε ℓ_ref`` (policy at β/(1−ε)); each is log-softmaxed over the vocabulary,
    the label tokens gathered and summed over response tokens. With ``z = log π(y_w) − log π(y_l)``
    under θ, ⁺ and ⁻: ``s = +1`` if ``z⁺ > z > z⁻``, ``−1`` if ``z⁻ > z > z⁺``, else 0.

    Rows ``0..B−1`` of the ``[2B, T, V]`` inputs are the chosen sequences, ``B..2B−1`` the rejected;
    ``labels[n, t]`` is the token scored by ``logits[n, t]``.
    """
    _check_logits(policy_logits, ref_logits, loss_mask, labels)
    epsilon = in_unit_interval("epsilon", epsilon, low_open=True, high_open=True)
    rows = policy_logits.shape[0]
    if rows % 2:
        raise ValueError(f"policy_logits must stack chosen then rejected sequences (2B rows), got {rows} rows")
    vocab = policy_logits.shape[-1]
    policy_rows, ref_rows = policy_logits.reshape(-1, vocab), ref_logits.reshape(-1, vocab)
    flat_labels = labels.reshape(-1)
    sequence_of = torch.arange(rows, device=policy_logits.device).repeat_interleave(policy_logits.shape[1])
    logps = torch.zeros(3, rows, dtype=torch.float64, device=policy_logits.device)
    for chunk in _masked_position_chunks(loss_mask, chunk_size):
        policy = policy_rows.index_select(0, chunk).float()
        ref = ref_rows.index_select(0, chunk).float()
        tokens = flat_labels.index_select(0, chunk).unsqueeze(1)
        for variant, logits in enumerate(
            (policy, (1 + epsilon) * policy - epsilon * ref, (1 - epsilon) * policy + epsilon * ref)
        ):
            token_logp = F.log_softmax(logits, dim=-1).gather(1, tokens).squeeze(1)
            logps[variant].index_add_(0, sequence_of.index_select(0, chunk), token_logp.double())
    return epsilon_steps_from_logps(logps)


def logratio_kl(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    chosen_lengths: torch.Tensor,
    rejected_lengths: torch.Tensor,
) -> float:
    """The ``logratio`` KL estimator: ``Σ_i (|πw−rw| + |πl−rl|) / Σ_i (|yw|+|yl|)``,
    nats per token over the batch; works with precomputed reference log-probs."""
    for name, value in (
        ("policy_rejected_logps", policy_rejected_logps),
        ("ref_chosen_logps", ref_chosen_logps),
        ("ref_rejected_logps", ref_rejected_logps),
        ("chosen_lengths", chosen_lengths),
        ("rejected_lengths", rejected_lengths),
    ):
        if value.shape != policy_chosen_logps.shape:
            raise ValueError(
                f"{name} has shape {tuple(value.shape)} but policy_chosen_logps has {tuple(policy_chosen_logps.shape)}"
            )
    tokens = (chosen_lengths.sum() + rejected_lengths.sum()).item()
    if tokens <= 0:
        raise ValueError("logratio_kl needs at least one response token")
    deviation = (policy_chosen_logps - ref_chosen_logps).abs().sum() + (
        policy_rejected_logps - ref_rejected_logps
    ).abs().sum()
    return deviation.detach().item() / tokens
