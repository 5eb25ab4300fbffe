"""The log_lines table: the tailer's events through its transform and the example tables
file (offline, ``shardline try-transform``): a row per line with its place, a dead letter
per over-long line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from shardline.cli import main
from shardline.errors import BadRecord
from shardline.exitcodes import ExitCode
from shardline.tail.identity import line_event
from shardline.transforms.log_lines import log_line

TABLES = Path(__file__).resolve().parents[2] / "examples" / "log_lines" / "tables.toml"


def event(offset: int, line: bytes, cut: int = 0) -> dict:
    e = dict(line_event("web-1", "a" * 32, "/var/log/app.log", offset, line,
                        "2026-12-08T00:40:00.123456Z", cut))
    e["type"] = "log_lines"
    return e


def test_a_line_is_a_row_with_its_place():
    row = log_line(event(42, b"GET / 200\n"))
    assert row["line"] == "GET / 200" and row["byte_offset"] == 42
    assert row["host"] == "web-1" and row["path"] == "/var/log/app.log"
    assert row["file_id"] == "a" * 32 and str(row["read_at"]).startswith("2026-12-08 00:40")


def test_an_over_long_line_is_a_dead_letter_saying_so():
    with pytest.raises(BadRecord, match="longer than 256 bytes"):
        log_line(event(0, b"x" * 256, cut=256))


def test_the_example_tables_file_routes_tail_events_to_log_lines(tmp_path, capsys):
    lines = [event(0, b"first\n"), event(6, b"second\n"), event(13, b"y" * 300, cut=300),
             {"event_id": "not-a-uuid", "type": "log_lines"}]
    path = tmp_path / "events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in lines))
    assert main(["try-transform", "--json", "--set", f"tables.file={TABLES}", str(path)]) \
        == ExitCode.OK
    out = json.loads(capsys.readouterr().out)
    assert [r["row"]["line"] for r in out["rows"]["log_lines"]] == ["first", "second"]
    assert not out["rows"]["page_views"]
    reasons = [d["reason"] for d in out["dead_letters"]]
    assert len(reasons) == 2 and "longer than 300 bytes" in reasons[0]
    assert "event_id: not a UUID" in reasons[1]
