"""The one append-only JSON-lines file of generations, verdicts and decisions: the crash-recovery rule."""

from __future__ import annotations

import pytest

from dualloop.jsonl import append_records, read_records


def test_records_round_trip_in_order_and_a_missing_file_reads_empty(tmp_path):
    path = tmp_path / "sub" / "cache.jsonl"
    assert read_records(path) == []
    append_records(path, [{"id": "a", "text": "é"}])
    append_records(path, [{"id": "b"}, {"id": "c"}])
    assert [record["id"] for record in read_records(path)] == ["a", "b", "c"]
    assert read_records(path)[0]["text"] == "é"


def test_a_line_cut_off_by_a_kill_is_ignored_then_replaced_by_the_next_append(tmp_path, capsys):
    path = tmp_path / "cache.jsonl"
    append_records(path, [{"id": "a"}])
    with path.open("ab") as handle:
        handle.write(b'{"id": "b", "resp')  # killed mid-write
    assert [record["id"] for record in read_records(path)] == ["a"]
    assert "line 2 was cut off" in capsys.readouterr().out
    append_records(path, [{"id": "b"}])
    assert path.read_text() == '{"id": "a"}\n{"id": "b"}\n'


def test_a_file_cut_inside_its_first_line_recovers_too(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_bytes(b'{"id": "a"')
    assert read_records(path) == []
    append_records(path, [{"id": "a"}])
    assert read_records(path) == [{"id": "a"}]


def test_other_files_load_as_they_are_byte_order_mark_crlf_and_blank_lines(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "a"}\r\n\r\n{"id": "b"}\r\n')
    assert [record["id"] for record in read_records(path)] == ["a", "b"]


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"id": "a"}\nnot json\n{"id": "c"}\n', "line 2 is not JSON"),
        (b'{"id": "a"}\n[1, 2]\n', "line 2 is not a JSON object"),
        (b'{"id": "\xe9"}\n', "byte 8 is not UTF-8"),
    ],
)
def test_a_damaged_complete_line_raises_naming_the_file_and_line(tmp_path, content, message):
    path = tmp_path / "cache.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as raised:
        read_records(path)
    assert str(path) in str(raised.value)


def test_an_api_key_in_a_record_never_reaches_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-0123456789abcdef")
    path = tmp_path / "cache.jsonl"
    append_records(path, [{"id": "a", "reply": "echo: Bearer sk-test-0123456789abcdef"}])
    assert "sk-test-0123456789abcdef" not in path.read_text()
    assert read_records(path)[0]["id"] == "a"
