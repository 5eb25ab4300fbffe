"""The kill test: nginx-style access-log lines appended at a steady rate to a file rotated
both ways (rename-and-create, copytruncate), ``shardline tail --table access_log``
SIGKILLed 20 times at random moments (some right after a rotation), Kinesis answering 500
for a while and later stalling each call; the whole pipeline (supervisord, consumers, stage
workers, a loader per table, moto S3, PostgreSQL) loads the example tables file's
``access_log`` table.

At the end every well-formed line written is exactly one row, found by its place (host,
file fingerprint, byte offset: where the writer put it) and by its content (the line
rebuilt from the row's columns), and every malformed line is a dead letter with its
reason. Dead letters are not deduplicated downstream (the loader's dedup is for rows): a
malformed line the tailer sent twice is two dead letters with the same event id, so they
are compared by event id.
"""
from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from shardline.devstack.fleet import Fleet, shardline, wait_for
from shardline.tail.identity import event_id, fingerprint
from tests.integration.test_pipeline_e2e import warehouse
from tests.tail_kit import HOST, TABLES, AccessLogWriter, Run, rebuilt, \
    stream_events, tail_env
from tests.pipeline import FAST, dead_letters
from tests.producer_kit import PutFaultProxy

pytestmark = pytest.mark.integration

KILLS = 20
def test_every_access_log_line_is_one_row_through_kills_rotations_and_stalls(
        stack, stack_env, stream_name, s3_prefix, pg_conn, s3, kinesis, tmp_path: Path):
    proxy = PutFaultProxy(stack.kinesis_endpoint_url).start()
    base = {**stack_env, **FAST, "SHARDLINE_KINESIS_STREAM": stream_name,
            "SHARDLINE_TABLES_FILE": str(TABLES)}
    env = tail_env(base, stream_name, proxy.url, tmp_path)
    shardline("migrate", env=base)
    shardline("create-stream", "--stream", stream_name, "--shards", "2", env=base)
    fleet = Fleet(tmp_path / "supervisor", base, stream_name, 2)
    logs = tmp_path / "logs"
    logs.mkdir()
    writer = AccessLogWriter(logs)
    run = Run(env, logs, proxy, stream_name, tmp_path, writer=writer, kills=KILLS,
              table="access_log", at_work=(0.05, 0.6), stall_at=5, slow_at=11)
    cols = "remote_addr, remote_user, occurred_at, request, status, body_bytes, referrer, " \
           "user_agent"
    try:
        fleet.start()
        written = run.kills()
        malformed = {place: text for place, text in writer.places.items()
                     if text.endswith("not an access log line")}
        good = len(written) - len(malformed)

        def rows() -> list[tuple]:
            return warehouse(pg_conn, f"SELECT host, path, file_id, byte_offset, event_id, "
                                      f"{cols} FROM access_log")

        def dead() -> list[dict]:
            return [{**json.loads(base64.b64decode(d["data_b64"])), "reason": d["reason"]}
                    for d in dead_letters(s3, stack.bucket, s3_prefix)]
        try:
            wait_for(lambda: len(rows()) >= good and
                     len({d["event_id"] for d in dead()}) >= len(malformed), 120,
                     f"{good} access_log rows and {len(malformed)} dead letters", every=1)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}: {len(rows())} rows\n{fleet.logs()}") from None
        time.sleep(3)  # a late copy would show now
        got, letters = rows(), dead()
        run.stop()
    finally:
        run.writer.stopping.set()
        proxy.stop()
        fleet.stop()
    assert proxy.injected().get("500", 0) > 0 and proxy.injected().get("slow", 0) > 0, \
        proxy.injected()
    assert len(written) > 1000 and len(malformed) > 25
    # Each well-formed line: one row at its place, with its content.
    expected = {(fingerprint(first), offset): text for (first, offset), text
                in writer.places.items() if (first, offset) not in malformed}
    by_place: dict[tuple, list[tuple]] = {}
    for r in got:
        by_place.setdefault((r[2], r[3]), []).append(r)
    assert len(got) == len(expected), (len(got), len(expected))
    assert set(by_place) == set(expected), sorted(set(expected) ^ set(by_place))[:5]
    for place, text in expected.items():
        (row,) = by_place[place]
        assert row[0] == HOST and row[1].startswith(str(logs / "app.log")), row
        assert row[4] == event_id(HOST, place[0], place[1])
        assert rebuilt(row[5:]) == text, (rebuilt(row[5:]), text)
    # Each malformed line: a dead letter with its reason, its place and its content.
    assert {(d["file_id"], d["offset"]) for d in letters} == \
        {(fingerprint(first), offset) for first, offset in malformed}
    for d in letters:
        assert d["host"] == HOST and d["type"] == "access_log"
        assert "access_log: not a combined log line" in d["reason"], d["reason"]
        assert d["event_id"] == event_id(HOST, d["file_id"], d["offset"])
        first = next(f for f in {p[0] for p in malformed} if fingerprint(f) == d["file_id"])
        assert d["line"] == malformed[(first, d["offset"])]
    assert run.kills_after_rotation >= 5
    # The kills landed while lines were in flight: the stream holds copies (sent again
    # with the same event id), which the loader's dedup removed.
    assert len(stream_events(kinesis, stream_name)) > len(got) + len(malformed)
