"""Append-only JSON-lines files: the caches of generations and judge verdicts, the decisions files.

One crash-recovery rule for every such file: a last line without its newline was cut short by a
kill. Reading ignores it (and says so); the next append first cuts it off, so its record is
produced again. Any other line that is not a JSON object raises, naming the file and the line.
Appends are flushed and fsynced, so a record that was reported written survives a crash, and pass
through :func:`dualloop.redaction.redact_record`: no API key reaches a cache or decisions file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dualloop.redaction import redact_record

__all__ = ["append_records", "read_records"]


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The complete records of ``path`` in file order (none when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: byte {error.start} is not UTF-8; delete the file to produce it again") from None
    *lines, cut_off = text.split("\n")
    if cut_off:
        print(
            f"dualloop: {path.name}: line {len(lines) + 1} was cut off by an interrupted run; its record is "
            "produced again",
            flush=True,
        )
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{path}: line {number} is not JSON ({error.msg}); delete the file to produce it again"
            ) from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}: line {number} is not a JSON object")
        records.append(record)
    return records


def append_records(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Append ``records`` as one line each, after cutting off a last line left incomplete by a kill."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size:
            handle.seek(size - 1)
            if handle.read(1) != b"\n":
                handle.seek(0)
                data = handle.read()
                handle.truncate(data.rfind(b"\n") + 1)
                handle.seek(0, os.SEEK_END)
        handle.write(
            b"".join(json.dumps(redact_record(record), ensure_ascii=False).encode() + b"\n" for record in records)
        )
        handle.flush()
        os.fsync(handle.fileno())
