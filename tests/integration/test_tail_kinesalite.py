"""``shardline tail`` against kinesalite: lines appended at a steady rate to a file rotated
both ways (rename-and-create, copytruncate) while the tailer is SIGKILLed again and again,
some kills right after a rotation. At the end every line written is in the stream, and a
line sent more than once has the same event id each time (the loader's dedup then keeps
one row).

The second test runs the same into the warehouse through the whole pipeline (supervisord,
consumers, stage workers, a loader per table, moto S3, PostgreSQL) with the example tables
file's ``log_lines`` table, and counts rows: each line written is exactly one row.

Real parts: kinesalite (the ``stack`` fixture) behind the test's fault proxy, which also
answers every call with 500 for a while (the producer spools), the ``shardline tail``
process with its producer and its SQLite offsets. The proxy is also what keeps kinesalite
alive: it crashes when a client dies in the middle of a request.
"""
from __future__ import annotations

import time

import pytest

from shardline.devstack.fleet import Fleet, shardline, wait_for
from tests.integration.test_pipeline_e2e import warehouse
from tests.pipeline import FAST
from tests.producer_kit import PutFaultProxy
from tests.tail_kit import TABLES, Run, stream_events, tail_env

pytestmark = pytest.mark.integration


def test_every_line_reaches_the_stream_through_kills_and_rotations(
        stack, stack_env, stream_name, kinesis, tmp_path):
    proxy = PutFaultProxy(stack.kinesis_endpoint_url).start()
    env = tail_env(stack_env, stream_name, proxy.url, tmp_path)
    shardline("create-stream", "--stream", stream_name, "--shards", "2", env=env)
    (tmp_path / "logs").mkdir()
    run = Run(env, tmp_path / "logs", proxy, stream_name, tmp_path)
    try:
        written = run.kills()
        deadline = time.monotonic() + 90
        while True:
            events = stream_events(kinesis, stream_name)
            missing = written - {e["line"] for e in events}
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(1)
        run.stop()
    finally:
        run.writer.stopping.set()
        proxy.stop()
    assert proxy.injected().get("500", 0) > 0, proxy.calls()
    assert not missing, f"{len(missing)} of {len(written)} lines never reached the stream, " \
                        f"e.g. {sorted(missing)[:5]}"
    assert {e["line"] for e in events} <= written  # nothing invented, nothing torn
    # A line sent again (after a kill) is the same event: same id, same content.
    by_place: dict[tuple[str, int], set[tuple[str, str]]] = {}
    for e in events:
        assert e["host"] == "web-1" and e["type"] == "log_lines"
        by_place.setdefault((e["file_id"], e["offset"]), set()).add((e["event_id"], e["line"]))
    assert all(len(v) == 1 for v in by_place.values()), \
        [v for v in by_place.values() if len(v) > 1][:3]
    ids = {e["event_id"] for e in events}
    # one id per place, and each written line at one place: a copytruncate copy and its
    # original read both are the same file, so the same ids
    assert len(ids) == len(by_place) == len(written)
    # The kills landed while lines were in flight: some were sent again (else this run
    # would prove nothing about re-sent lines).
    assert len(events) > len(ids)


@pytest.mark.slow
def test_every_line_is_one_log_lines_row_through_the_pipeline(
        stack, stack_env, stream_name, pg_conn, kinesis, tmp_path):
    """The same run into the warehouse (the example tables file's log_lines table): every
    line written is exactly one row, found by its place and its content."""
    proxy = PutFaultProxy(stack.kinesis_endpoint_url).start()
    base = {**stack_env, **FAST, "SHARDLINE_KINESIS_STREAM": stream_name,
            "SHARDLINE_TABLES_FILE": str(TABLES)}
    env = {**tail_env(base, stream_name, proxy.url, tmp_path)}
    shardline("migrate", env=base)
    shardline("migrate", "--control", env=base)
    shardline("create-stream", "--stream", stream_name, "--shards", "2", env=base)
    fleet = Fleet(tmp_path / "supervisor", base, stream_name, 2)
    (tmp_path / "logs").mkdir()
    run = Run(env, tmp_path / "logs", proxy, stream_name, tmp_path)
    try:
        fleet.start()
        written = run.kills()

        def rows() -> list[tuple]:
            return warehouse(pg_conn, "SELECT file_id, byte_offset, line, event_id, host "
                                      "FROM log_lines")
        try:
            wait_for(lambda: len(rows()) >= len(written), 180,
                     f"{len(written)} log_lines rows", every=1)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}: {len(rows())}\n{fleet.logs()}") from None
        time.sleep(3)  # a late copy would show now
        got = rows()
        run.stop()
    finally:
        run.writer.stopping.set()
        proxy.stop()
        fleet.stop()
    assert len(got) == len(written)
    assert {r[2] for r in got} == written
    assert len({(r[0], r[1]) for r in got}) == len(got)   # one row per place
    assert {r[4] for r in got} == {"web-1"}
    # ... though the stream holds copies: the loader's dedup removed them
    events = stream_events(kinesis, stream_name)
    assert len(events) > len(got)
