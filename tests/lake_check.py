"""Read a lake table back with code we did not write and compare it with the warehouse:
pyiceberg's own table scan, and DuckDB over the Parquet files pyiceberg lists (downloaded
from S3: no DuckDB extension can be fetched here, so not through httpfs)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
from pyiceberg.expressions import EqualTo

from shardline import clients, settings as settings_mod
from shardline.controlstore import open_store
from shardline.lake.catalog import open_table
from shardline.reconcile import run
from shardline.reconcile.rule import HourVerdict

LOAD_TIME = "loaded_at"  # each target stamps its own load time
# Where the copies of one event (a producer's retried put) differ: which copy a target keeps
# depends on which files its loads grouped (the first one loaded stays), and the warehouse
# and the lake group their loads independently.
COPY_COLUMNS = frozenset({"shard_id", "sequence_number", "sub_sequence_number",
                          "arrival_time", "staged_at"})


def _assert_same(got: list[dict[str, Any]], expected: list[dict[str, Any]], reader: str,
                 copies_may_differ: int) -> None:
    """The same events with the same values; at most ``copies_may_differ`` rows (events put
    more than once) may hold another copy's position columns, and nothing else may differ."""
    assert [r["event_id"] for r in got] == [r["event_id"] for r in expected], \
        f"{reader}: not the warehouse's set of events"
    other_copy = []
    for mine, theirs in zip(got, expected, strict=True):
        if mine != theirs:
            differing = {k for k in theirs if mine.get(k) != theirs[k]}
            assert differing <= COPY_COLUMNS, (reader, differing, mine, theirs)
            other_copy.append(mine["event_id"])
    assert len(other_copy) <= copies_may_differ, (reader, other_copy[:10])


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(({k: v for k, v in r.items() if k != LOAD_TIME} for r in rows),
                  key=lambda r: r["event_id"])


def warehouse_rows(pg_conn: Any, table: str) -> tuple[list[str], list[dict[str, Any]]]:
    with pg_conn.cursor() as cur:
        cur.execute(f"SELECT * FROM {table}")
        names = [d[0] for d in cur.description]
        return names, _sorted([dict(zip(names, row, strict=True)) for row in cur.fetchall()])


def assert_lake_equals_warehouse(settings: settings_mod.Settings, pg_conn: Any, s3: Any,
                                 tmp_path: Path, table_name: str = "page_views",
                                 copies_may_differ: int = 0) -> list[dict[str, Any]]:
    """Both readers return exactly the warehouse's rows, column for column (of an event put
    more than once, up to ``copies_may_differ`` rows may be another copy); the rows."""
    names, expected = warehouse_rows(pg_conn, table_name)
    table = open_table(settings, table_name)
    scanned = table.scan().to_arrow()
    assert scanned.column_names == names  # the same columns, in the same order
    _assert_same(_sorted(scanned.to_pylist()), expected, "pyiceberg", copies_may_differ)
    local = []
    for i, task in enumerate(table.scan().plan_files()):
        bucket, _, key = task.file.file_path.removeprefix("s3://").partition("/")
        path = tmp_path / f"lake-data-{i}.parquet"
        s3.download_file(bucket, key, str(path))
        local.append(str(path))
    assert local
    # union_by_name: files written before a column was added lack it (Iceberg reads them
    # with NULL there; DuckDB does the same when it matches columns by name)
    result = duckdb.connect().execute(
        f"SELECT {', '.join(names)} FROM read_parquet(?, union_by_name = true)", [local])
    got = [dict(zip(names, row, strict=True)) for row in result.fetchall()]
    _assert_same(_sorted(got), expected, "DuckDB", copies_may_differ)
    return expected


def reconcile(settings: settings_mod.Settings, table: str = "page_views"
              ) -> list[HourVerdict]:
    """Every hour, judged as of two hours from now (the run's hours count as ended), with
    the real lake as the third source."""
    cfg = settings.replace(**{"reconcile.grace_s": "0"})
    store = open_store(cfg)
    conn = clients.warehouse_connect(cfg, autocommit=True)
    try:
        later = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(hours=2)
        ((_, verdicts, has_lake),) = run.gather(cfg, store, conn, [table], later)
    finally:
        conn.close()
        store.close()
    assert has_lake
    return verdicts


def assert_lake_reconciles(settings: settings_mod.Settings, events: int,
                           duplicates: int) -> None:
    """Every hour agrees with the lake, and a row taken out of the lake alone is flagged
    in its hour (the row is gone afterwards: call this last)."""
    verdicts = reconcile(settings)
    assert verdicts and all(v.state == "agree" for v in verdicts), verdicts
    assert all(v.lake == v.warehouse for v in verdicts)
    assert sum(v.warehouse for v in verdicts) == events
    assert sum(v.dropped for v in verdicts) >= duplicates
    table = open_table(settings, "page_views")
    scan = table.scan(selected_fields=("event_id", "arrival_time"), limit=1)
    gone = scan.to_arrow().to_pylist()[0]
    table.delete(EqualTo("event_id", gone["event_id"]))
    flagged = [v for v in reconcile(settings) if v.state == "disagree"]
    assert [(v.hour, v.lake_diff, v.warehouse_diff) for v in flagged] == [
        (gone["arrival_time"].replace(minute=0, second=0, microsecond=0), -1, 0)]
