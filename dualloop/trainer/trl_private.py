"""The one private TRL name the trainer touches: scoring only the response positions on a CPU.

TRL 1.16's fused LM head (``trl.trainer.utils.add_fused_lm_head``, public) projects only the
positions whose label is not -100 when ``trl.trainer.utils._use_triton(device)`` is true (CUDA or
XPU with Triton). Elsewhere it projects every position of the padded batch, prompt and padding
included, because on compiled backends (Neuron, XLA) a batch-dependent number of positions would
recompile its tiles. Eager PyTorch on a CPU has no such cost: scoring only the response positions
gives the same log-probs (the same adapter, byte for byte) with shorter steps, since the prompt and
padding positions are not projected onto the vocabulary (measured in ``benchmarks/``).
:func:`compact_scoring_on_cpu` turns that on for a block; the log-prob kernel itself (``trl.kernels.chunked_logprob``) is not touched.

``tests/test_trl_private.py`` fails when TRL renames ``_use_triton`` or stops deciding the fused
head's scoring with it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import trl.trainer.utils as trl_utils

__all__ = ["compact_scoring_on_cpu"]


@contextlib.contextmanager
def compact_scoring_on_cpu() -> Iterator[None]:
    """Within the block, TRL's fused LM head scores only the labelled positions on a CPU too."""
    original = trl_utils._use_triton
    trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield
    finally:
        trl_utils._use_triton = original
