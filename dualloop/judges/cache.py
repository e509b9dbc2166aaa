"""The API judges' verdict cache: an append-only JSONL file (:mod:`dualloop.jsonl`'s crash-recovery rule)
keyed by a hash of what the judge was shown, one writer at a time, every row redacted.

Only final verdicts ("A", "B") are cached: an unparseable reply is asked again on the next run.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dualloop.jsonl import append_records, read_records
from dualloop.locking import file_lock
from dualloop.redaction import redact_record

__all__ = ["VerdictCache"]


class VerdictCache:
    """Verdict rows by key, in memory and (with a ``path``) on disk."""

    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self._rows: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.reload()

    def reload(self) -> None:
        """Read the rows other processes have added since this cache was loaded."""
        if self.path is not None:
            self._rows.update({row["key"]: row for row in read_records(self.path) if "key" in row})

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the cache file's lock (waiting for another writer), with the rows it holds by then."""
        if self.path is None:
            yield
            return
        with file_lock(self.path):
            self.reload()
            yield

    def __contains__(self, key: str) -> bool:
        return key in self._rows

    def __getitem__(self, key: str) -> dict[str, Any]:
        return self._rows[key]

    def store(self, row: dict[str, Any]) -> None:
        """Keep ``row`` (it has a "key") and append it, redacted, to the file."""
        row = redact_record(row)
        with self._lock:
            self._rows[row["key"]] = row
            if self.path is not None:
                append_records(self.path, [row])
