"""The stage worker's ledger writes (shardline.workers.ledger) against the stack's PostgreSQL."""
from __future__ import annotations

import threading
from datetime import datetime

import psycopg2
import pytest

from shardline import migrate
from shardline.workers.ledger import INSERT_SQL, Ledger, StagedFile

pytestmark = pytest.mark.integration

NOW = datetime(2026, 11, 26, 7, 0, 0, 123456)


@pytest.fixture
def connect(stack, pg_schema, pg_conn):
    migrate.migrate(pg_conn, "postgres")
    pg_conn.autocommit = True

    def _connect():
        return psycopg2.connect(stack.dsn, options=f"-c search_path={pg_schema}")

    return _connect


def entry(key: str = "p/staged/page_views/s/sh/1-0_9-0.csv.gz", rows: int = 5, **over):
    fields = dict(s3_key=key, target_table="page_views", stream="s", shard_id="sh",
                  first_sequence="1", first_sub_sequence=0, last_sequence="9",
                  last_sub_sequence=0, row_count=rows, byte_count=100 if rows else 0,
                  dead_letter_key=None, dead_letter_count=0, staged_at=NOW)
    fields.update(over)
    return StagedFile(**fields)


def rows(pg_conn):
    with pg_conn.cursor() as cur:
        cur.execute("SELECT s3_key, state, row_count, dead_letter_count, dead_letter_key, "
                    "staged_at, loaded_at, load_id FROM staged_files ORDER BY s3_key")
        return cur.fetchall()


def test_portable_sql():
    assert "ON CONFLICT" not in INSERT_SQL and "RETURNING" not in INSERT_SQL
    assert "WHERE NOT EXISTS" in INSERT_SQL


def test_insert_is_idempotent_and_never_touches_an_existing_row(connect, pg_conn):
    ledger = Ledger(connect)
    assert ledger.record(entry()) is True
    assert ledger.record(entry()) is False
    assert rows(pg_conn) == [(entry().s3_key, "pending", 5, 0, None, NOW, None, None)]
    # the loader flips it to loaded; a late retry of the same batch must not undo that
    with pg_conn.cursor() as cur:
        cur.execute("UPDATE staged_files SET state = 'loaded', load_id = 'L1'")
    assert ledger.record(entry(staged_at=datetime(2026, 11, 26, 8, 0))) is False
    assert rows(pg_conn)[0][1:] == ("loaded", 5, 0, None, NOW, None, "L1")
    ledger.close()


def test_zero_row_batch_is_born_loaded(connect, pg_conn):
    ledger = Ledger(connect)
    assert ledger.record(entry("k0", rows=0, dead_letter_key="dl", dead_letter_count=3))
    assert rows(pg_conn) == [("k0", "loaded", 0, 3, "dl", NOW, NOW, None)]


def test_racing_workers_insert_one_row(connect, pg_conn):
    ledgers = [Ledger(connect) for _ in range(6)]
    results, barrier = [], threading.Barrier(len(ledgers))

    def go(ledger):
        barrier.wait()
        results.append(ledger.record(entry("race")))

    threads = [threading.Thread(target=go, args=(l,)) for l in ledgers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]
    assert len(rows(pg_conn)) == 1


def test_stale_connection_is_rebuilt(connect, pg_conn):
    ledger = Ledger(connect)
    assert ledger.record(entry("a"))
    with pg_conn.cursor() as cur:  # the warehouse dropped our idle session
        cur.execute("SELECT pg_terminate_backend(%s)", (ledger._conn.get_backend_pid(),))
    assert ledger.record(entry("b")) is True
    assert [r[0] for r in rows(pg_conn)] == ["a", "b"]


def test_unreachable_warehouse_is_service_unavailable(connect):
    from shardline.errors import ServiceUnavailable

    def refuse():
        raise psycopg2.OperationalError("connection refused")

    with pytest.raises(ServiceUnavailable, match="ledger: connection refused"):
        Ledger(refuse).record(entry())


def test_over_long_value_is_refused_not_truncated(connect, pg_conn):
    with pytest.raises(ValueError, match="s3_key would be longer than 1024"):
        Ledger(connect).record(entry("k" * 1025))
    assert rows(pg_conn) == []
