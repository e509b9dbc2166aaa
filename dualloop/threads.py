"""The cores a phase may use while other phases run beside it (``dualloop reproduce --jobs N``).

The runner (:mod:`dualloop.pipeline`) splits the machine's cores between the phases running and
rewrites each phase's share into a file whenever a phase starts or ends; the phase's kernel finds
the file through :data:`ENV`. :func:`follow_runner` reads it and sets torch's threads: it is called
where a phase begins a piece of work (:func:`dualloop.models.load_policy`: before every training,
generation and likelihood scoring), on the kernel's main thread, where ``torch.set_num_threads``
takes effect. A phase that started beside another one thus takes all cores for its next piece of
work once it runs alone. Outside ``reproduce --jobs`` nothing changes. The thread count changes the order
of floating-point sums, which can flip a near-tied greedy token (figures/README.md, reproducibility).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["ENV", "follow_runner", "write_share"]

ENV = "DUALLOOP_THREADS_FILE"


def write_share(path: str | Path, threads: int) -> None:
    """Write a phase's share of the cores (atomically: a reader never sees half a number)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(str(threads), encoding="utf-8")
    partial.replace(path)


def follow_runner() -> None:
    """Set torch's threads to this phase's current share, when the runner gave it one."""
    path = os.environ.get(ENV)
    if not path:
        return
    try:
        threads = int(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    import torch

    if threads >= 1 and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
        print(
            f"dualloop.threads: now {threads} torch thread(s): the phases running beside this one changed", flush=True
        )
