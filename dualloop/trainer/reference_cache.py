"""The frozen reference model's outputs per micro-batch, in a folder shared by training runs.

Every run of a profile meets the same micro-batches (same pairs, same seed, same collation) and
scores them with the same reference: the base model, its LoRA adapter disabled. With
``AdaptiveDPOConfig.reference_cache_dir`` the trainer runs the reference forward once per distinct
micro-batch and reads its outputs back in every later run and evaluation round that meets it: the
summed response log-probs and, where the token KL or ε-DPO's steps need them, the response positions'
last hidden states. One file ``<key>.pt`` per micro-batch; the key is a SHA-256 of the reference's
frozen weights and configuration and of the micro-batch's tokens, attention mask, scored positions
and settings. What is read back is what the forward returned, bit for bit, so a run trains exactly as
it would without the cache. Like TRL's ``precompute_ref_log_probs`` this assumes a deterministic
reference: a model with active dropout is refused.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch

__all__ = ["ReferenceCache", "check_deterministic", "weights_fingerprint"]

# Dropout probabilities that transformers' configurations keep outside nn.Dropout modules.
CONFIG_DROPOUTS = (
    "attention_dropout",
    "hidden_dropout",
    "dropout",
    "resid_pdrop",
    "attn_pdrop",
    "embd_pdrop",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
)


def check_deterministic(model: torch.nn.Module) -> None:
    """Refuse a reference whose forward is random in training mode (dropout outside LoRA's own)."""
    config = getattr(model, "config", None)
    for name in CONFIG_DROPOUTS:
        value = getattr(config, name, None)
        if isinstance(value, (int, float)) and value > 0:
            raise ValueError(
                f"reference_cache_dir: the reference's config.{name}={value} makes its forward random in "
                "training mode, so its outputs cannot be cached; set it to 0 or leave reference_cache_dir unset"
            )
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p > 0 and "lora_" not in name:
            raise ValueError(
                f"reference_cache_dir: the reference's module {name} is a dropout with p={module.p}, so its "
                "outputs cannot be cached; leave reference_cache_dir unset"
            )


def weights_fingerprint(model: torch.nn.Module, *, frozen_only: bool) -> str:
    """SHA-256 of a model's configuration, parameters and buffers (names, dtypes, shapes, bytes).

    ``frozen_only`` skips parameters that require a gradient: the policy's own LoRA adapter, which the
    reference (the policy with its adapter disabled) does not use.
    """
    digest = hashlib.sha256(type(model).__name__.encode())
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(config.to_json_string(use_diff=False).encode())
    tensors: list[tuple[str, torch.Tensor]] = [
        (name, parameter)
        for name, parameter in model.named_parameters()
        if not (frozen_only and parameter.requires_grad)
    ]
    tensors += list(model.named_buffers())
    for name, tensor in sorted(tensors, key=lambda item: item[0]):
        _add_tensor(digest, name, tensor)
    return digest.hexdigest()


def _add_tensor(digest, name: str, tensor: torch.Tensor) -> None:
    """Feed a tensor's name, dtype, shape and bytes to a hash."""
    data = tensor.detach().contiguous().cpu()
    digest.update(f"{name}|{data.dtype}|{tuple(data.shape)}".encode())
    digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())


class ReferenceCache:
    """``<folder>/<key>.pt`` files of reference outputs, keyed by :meth:`key`."""

    def __init__(self, folder: str | Path, fingerprint: str):
        self.folder = Path(folder)
        self.fingerprint = fingerprint
        self.hits = 0
        self.misses = 0

    def key(self, tensors: Mapping[str, torch.Tensor], **settings: object) -> str:
        """SHA-256 of the fingerprint, the named tensors (dtype, shape, bytes) and the settings."""
        digest = hashlib.sha256(self.fingerprint.encode())
        for name in sorted(tensors):
            _add_tensor(digest, name, tensors[name])
        digest.update(repr(sorted(settings.items())).encode())
        return digest.hexdigest()

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        """The outputs stored under ``key`` (on the CPU), or None; a file that cannot be read is
        removed (with a printed line) and counts as missing, so the forward writes it again."""
        path = self.folder / f"{key}.pt"
        if path.is_file():
            try:
                outputs = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as error:  # a damaged file: recompute rather than stop a training run
                print(f"dualloop.trainer: {path} is unreadable ({error!r}); running the reference again", flush=True)
                path.unlink(missing_ok=True)
            else:
                self.hits += 1
                return outputs
        self.misses += 1
        return None

    def put(self, key: str, outputs: Mapping[str, torch.Tensor]) -> None:
        """Store ``outputs`` under ``key``: written to a temporary file, then renamed, so a kill
        leaves either no file or a whole one."""
        self.folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        os.close(handle)
        try:
            torch.save({name: tensor.detach().cpu() for name, tensor in outputs.items()}, temporary)
            os.replace(temporary, self.folder / f"{key}.pt")
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
