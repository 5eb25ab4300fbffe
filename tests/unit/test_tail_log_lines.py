"""The log_lines and access_log tables: the tailer's events through their transforms and the
example tables file (offline, ``shardline try-transform``): a row per line with its place, a
parsed access-log line, a dead letter per over-long or unparsable line."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from shardline.cli import main
from shardline.errors import BadRecord
from shardline.exitcodes import ExitCode
from shardline.tail.identity import line_event
from shardline.transforms.access_log import access_log
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


# -- access_log: the combined format parsed ----------------------------------------------
COMBINED = (b'203.0.113.9 - alice [08/Dec/2026:01:40:00 +0100] "GET /p?q=1 HTTP/1.1" 200 512 '
            b'"https://ref.example/" "Mozilla/5.0 (X11)"\n')


def access(line: bytes, cut: int = 0) -> dict:
    e = event(7, line, cut)
    e["type"] = "access_log"
    return e


def test_a_combined_line_is_parsed_with_its_time_in_utc():
    row = access_log(access(COMBINED))
    assert str(row["occurred_at"]) == "2026-12-08 00:40:00+00:00"
    assert (row["remote_addr"], row["remote_user"], row["method"], row["target"],
            row["protocol"], row["status"], row["body_bytes"], row["referrer"],
            row["user_agent"]) == ("203.0.113.9", "alice", "GET", "/p?q=1", "HTTP/1.1", 200,
                                   512, "https://ref.example/", "Mozilla/5.0 (X11)")
    assert row["byte_offset"] == 7 and row["file_id"] == "a" * 32


def test_common_format_dashes_and_odd_requests():
    row = access_log(access(b'10.0.0.1 - - [08/Dec/2026:00:40:00 +0000] "\\x16\\x03" 400 -\n'))
    assert row["remote_user"] is None and row["body_bytes"] is None
    assert row["method"] is None and row["request"] == "\\x16\\x03"
    assert row["referrer"] is None and row["user_agent"] is None


@pytest.mark.parametrize("line, reason", [
    (b"not an access log line\n", "access_log: not a combined log line"),
    (b'1.2.3.4 - - [99/Foo/2026:00:00:00 +0000] "GET / HTTP/1.1" 200 1\n',
     "access_log: bad time"),
    (b'1.2.3.4 - - [08/Dec/2026:00:40:00] "GET / HTTP/1.1" 200 1\n', "access_log: bad time"),
])
def test_a_line_that_does_not_parse_is_a_dead_letter_with_its_reason(line, reason):
    with pytest.raises(BadRecord, match=reason):
        access_log(access(line))


def test_the_example_tables_file_routes_access_log_events(tmp_path, capsys):
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(access(COMBINED)) + "\n" + json.dumps(access(b"junk\n")) + "\n")
    assert main(["try-transform", "--json", "--set", f"tables.file={TABLES}", str(path)]) \
        == ExitCode.OK
    out = json.loads(capsys.readouterr().out)
    assert [r["row"]["status"] for r in out["rows"]["access_log"]] == ["200"]
    assert [d["reason"] for d in out["dead_letters"]] == [
        "transform: BadRecord: access_log: not a combined log line: 'junk'"]
