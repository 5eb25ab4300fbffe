"""The whole pipeline with the lake on (``lake.tables = page_views``), under supervisord:
malformed records and producer duplicates in the stream, the lake loader SIGKILLed while
it loads. Then the lake is read back with code we did not write, pyiceberg's own table
scan and DuckDB over the Parquet files pyiceberg lists, and both return exactly the
warehouse's rows, column for column (``loaded_at`` aside: each target stamps its own load
time)."""
from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import duckdb
import pytest

from shardline import settings as settings_mod
from shardline.devstack.fleet import Fleet, control_query, shardline, wait_for
from shardline.lake.catalog import open_table
from tests.integration.test_pipeline_e2e import produce, warehouse
from tests.pipeline import FAST

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS = 10_000
LOAD_TIME = "loaded_at"  # each target's own


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(({k: v for k, v in r.items() if k != LOAD_TIME} for r in rows),
                  key=lambda r: r["event_id"])


def test_the_lake_holds_exactly_the_warehouses_rows_read_by_pyiceberg_and_duckdb(
        stack_env: dict[str, str], stream_name: str, pg_conn: Any, pg_schema: str, s3: Any,
        stack: Any, tmp_path: Path) -> None:
    env = {**stack_env, **FAST, "SHARDLINE_KINESIS_STREAM": stream_name,
           "SHARDLINE_LAKE_TABLES": "page_views", "SHARDLINE_LAKE_NAMESPACE": pg_schema}
    shardline("migrate", env=env)  # warehouse, control store, the lake table
    shardline("create-stream", "--stream", stream_name, "--shards", "2", env=env)
    fleet = Fleet(tmp_path / "supervisor", env, stream_name, 2)
    try:
        fleet.start()
        assert "lake-loader-page_views" in fleet.status()
        produced = produce(env, stream_name, tmp_path, EVENTS, 0.02, seed=31,
                           extra=("--duplicate-fraction", "0.01"))
        assert produced["bad"] > 0 and produced["duplicates"] > 0
        # the lake loader dies mid-stream; supervisord restarts it, it reconciles
        time.sleep(1.0)
        assert fleet.kill("lake-loader", signal.SIGKILL)

        def settled() -> bool:
            (rows,), = warehouse(pg_conn, "SELECT count(*) FROM page_views")
            (pending,), = control_query(env, "SELECT count(*) FROM staged_files WHERE "
                                             "state = 'pending' OR lake_state = 'pending'")
            return rows >= len(produced["ids"]) and pending == 0

        try:
            wait_for(settled, 240, "every valid event in the warehouse, nothing pending",
                     every=1)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{fleet.logs()}") from None
    finally:
        fleet.stop()

    with pg_conn.cursor() as cur:
        cur.execute("SELECT * FROM page_views")
        names = [d[0] for d in cur.description]
        expected = _sorted([dict(zip(names, row, strict=True)) for row in cur.fetchall()])
    assert {r["event_id"] for r in expected} == produced["ids"]  # the warehouse: exactly once

    settings = settings_mod.load(env={k: v for k, v in env.items()
                                      if k.startswith("SHARDLINE_")})
    table = open_table(settings, "page_views")
    scanned = table.scan().to_arrow()
    assert scanned.column_names == names  # the same columns, in the same order
    assert _sorted(scanned.to_pylist()) == expected

    # DuckDB over the table's current data files, downloaded from S3 (no DuckDB extension
    # can be fetched here, so not through httpfs)
    local = []
    for i, task in enumerate(table.scan().plan_files()):
        bucket, _, key = task.file.file_path.removeprefix("s3://").partition("/")
        path = tmp_path / f"data-{i}.parquet"
        s3.download_file(bucket, key, str(path))
        local.append(str(path))
    assert local
    con = duckdb.connect()
    result = con.execute(f"SELECT {', '.join(names)} FROM read_parquet(?)", [local])
    got = [dict(zip(names, row, strict=True)) for row in result.fetchall()]
    assert _sorted(got) == expected
