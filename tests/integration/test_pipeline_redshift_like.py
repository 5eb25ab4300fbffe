"""The whole pipeline with the warehouse in the redshift-like mode (SERIALIZABLE by default,
300 ms per COMMIT, no index on event_id, BRIN on occurred_at) and the control store beside it.

Every valid event lands exactly once while loads keep committing (no serializable conflict
with the stage workers: they never touch the warehouse), and a reader's count(*) on the
target never waits for a load.
"""
from __future__ import annotations

import json
import os
import threading
import time

import psycopg2
import pytest

from shardline.devstack.fleet import Fleet, control_query, shardline, wait_for
from tests.pipeline import FAST

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_redshift_like_pipeline_exactly_once_and_readers_never_wait(
        rs_stack, rs_schema, stream_name, s3_prefix, tmp_path):
    schema, conn, _store = rs_schema
    env = {**os.environ, **rs_stack.env(), **FAST, "SHARDLINE_WAREHOUSE_SCHEMA": schema,
           "SHARDLINE_CONTROL_SCHEMA": schema, "SHARDLINE_S3_PREFIX": s3_prefix,
           "SHARDLINE_KINESIS_STREAM": stream_name}
    env.pop("SHARDLINE_CONFIG", None)
    assert env["SHARDLINE_WAREHOUSE_MODE"] == "redshift-like"
    shardline("migrate", env=env)
    shardline("create-stream", "--stream", stream_name, "--shards", "2", env=env)
    summary, ids_file = tmp_path / "produce.json", tmp_path / "ids.txt"
    shardline("produce", "--stream", stream_name, "--count", "8000", "--rate", "0",
              "--bad-fraction", "0.01", "--seed", "5", "--summary-json", str(summary),
              "--ids-file", str(ids_file), "--quiet", env=env)
    ids = set(ids_file.read_text().split())
    bad = json.loads(summary.read_text())["bad"]
    with conn.cursor() as cur:
        cur.execute("SELECT indexdef FROM pg_indexes WHERE tablename = 'page_views' "
                    "AND schemaname = %s", (schema,))
        indexes = [r[0] for r in cur.fetchall()]
    # zone maps only: BRIN on the sort key and on arrival_time, nothing on event_id
    assert sorted(i.split(" USING brin ")[1] for i in indexes if " USING brin " in i) == \
        ["(arrival_time)", "(occurred_at)"] and len(indexes) == 2, indexes

    reader_times: list[float] = []
    stop = threading.Event()

    def reader() -> None:  # a dashboard polling the target all along
        r = psycopg2.connect(rs_stack.dsn, options=f"-c search_path={schema} "
                                                   "-c statement_timeout=5000")
        r.autocommit = True
        try:
            while not stop.is_set():
                with r.cursor() as cur:
                    t0 = time.monotonic()
                    cur.execute("SELECT count(*) FROM page_views")
                    cur.fetchone()
                    reader_times.append(time.monotonic() - t0)
                stop.wait(0.2)
        finally:
            r.close()

    fleet = Fleet(tmp_path / "supervisor", env, stream_name, workers=2)
    thread = threading.Thread(target=reader, daemon=True)
    try:
        fleet.start()
        thread.start()

        def landed() -> bool:
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM page_views")
                rows = cur.fetchone()[0]
            (dead,), = control_query(env, "SELECT coalesce(sum(dead_letter_count), 0) "
                                          "FROM staged_files")
            return rows >= len(ids) and dead >= bad

        try:
            wait_for(landed, 240, f"{len(ids)} rows and {bad} dead letters", every=1)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{fleet.logs()}") from None
    finally:
        stop.set()
        thread.join(10)
        fleet.stop()
    with conn.cursor() as cur:
        cur.execute("SELECT event_id FROM page_views")
        stored = [r[0] for r in cur.fetchall()]
        cur.execute("SELECT count(*), count(DISTINCT s3_key) FROM loaded_files")
        files, distinct = cur.fetchone()
        cur.execute("SELECT count(*) FROM loads")
        (loads,) = cur.fetchone()
    assert len(stored) == len(set(stored)), "an event_id is stored twice"
    assert set(stored) == ids
    assert files == distinct, "a file was loaded twice"
    assert loads >= 1
    assert reader_times and max(reader_times) < 1.0, max(reader_times)
