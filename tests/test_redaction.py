"""Secrets never reach a file (dualloop.redaction): every writer of the project redacts what it writes."""

from dualloop.judges import Decision, read_decisions, write_decisions
from dualloop.pipeline import _ProgressLog
from dualloop.redaction import redact
from dualloop.registry import open_run


def test_every_writer_redacts(api_key, tmp_path):
    key = api_key.value
    decision = Decision("i1", "p1", "a", "b", "general", "j", "ab", "unparseable", None, None, raw=f"key {key}")
    assert read_decisions(write_decisions(tmp_path / "d.jsonl", [decision]))[0].raw == "key <secret>"
    run = open_run(tmp_path / "registry", {"seed": 0, "note": key})
    assert run.config["note"] == "<secret>"
    _ProgressLog(tmp_path / "reproduce.log")(f"Authorization: Bearer {key}")
    assert redact(key) == "<secret>"
