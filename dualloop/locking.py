"""One writer per run directory, decisions file and cache: an advisory lock file beside what it guards.

:func:`file_lock` takes a POSIX record lock (``fcntl.lockf``: held by one process, released by the
kernel when it exits, not inherited by forked children) on ``<name>.lock`` and writes its holder into
it: PID, host, start time and command. A second process waits, printing who holds the lock, or with
``timeout=0`` refuses with :class:`LockHeld` naming the holder. A lock file that still names a holder
when its lock is free was left by a process that died holding it: it is taken over, with a note.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dualloop.redaction import redact

__all__ = ["LockHeld", "file_lock", "lock_path"]

_held: set[Path] = set()


class LockHeld(RuntimeError):
    """Another process holds the lock; the message names it."""


def lock_path(path: str | Path) -> Path:
    """The lock file of ``path``: ``<path>.lock`` for a file, ``<path>/.lock`` for a directory."""
    path = Path(path)
    return path / ".lock" if path.is_dir() else path.with_name(path.name + ".lock")


def _holder(descriptor: int) -> str:
    text = os.pread(descriptor, 4096, 0).decode("utf-8", "replace").strip()
    try:
        holder = json.loads(text)
        return f"PID {holder['pid']} on {holder['host']} (started {holder['started']}: {holder['command']})"
    except (ValueError, KeyError, TypeError):
        return "another process" if not text else f"an unreadable holder record {text[:80]!r}"


@contextmanager
def file_lock(path: str | Path, *, timeout: float | None = None, poll: float = 0.1) -> Iterator[None]:
    """Hold the lock of ``path`` (:func:`lock_path`) for the ``with`` block.

    ``timeout``: seconds to wait for another holder (None: as long as it takes; 0: refuse at once).
    """
    target = lock_path(path).resolve()
    if target in _held:
        raise RuntimeError(f"{target} is already held by this process")
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(target, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        waiting = False
        while True:
            try:
                fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                holder = _holder(descriptor)
                if deadline is not None and time.monotonic() >= deadline:
                    raise LockHeld(
                        f"{path} is being written by {holder}; wait for it to finish or write elsewhere"
                    ) from None
                if not waiting:
                    print(f"dualloop: {path} is being written by {holder}; waiting for it", flush=True)
                    waiting = True
                time.sleep(poll)
        if os.fstat(descriptor).st_size:
            print(
                f"dualloop: {path}: taking over the lock of {_holder(descriptor)}, which ended without releasing it",
                flush=True,
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": redact(" ".join(sys.argv))[:200],
        }
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(descriptor)
        _held.add(target)
        try:
            yield
        finally:
            _held.discard(target)
            os.ftruncate(descriptor, 0)
            fcntl.lockf(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)
