"""`shardline migrate` on a warehouse made by the release before the control store.

``legacy_warehouse/`` holds that release's migrations as they were (``git show
71c1f3d:sql/migrations/...``, unchanged since 2ffcb57): control tables inside the warehouse,
a unique index on ``page_views.event_id``. A schema is built with them and filled with
rows, leases, checkpoints with history and pending staged files; then ``shardline migrate``
(the CLI, in process) must leave exactly the schema a fresh migrate makes, keep the rows,
carry the in-flight state into the control store, and the pending files must load exactly
once. Two targets: plain PostgreSQL with the PostgreSQL control store, and the
redshift-like warehouse (no unique key there) with the DynamoDB control store.
"""
from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator

import psycopg2
import pytest

from shardline import cli, migrate
from shardline.records.control import Checkpoint
from shardline.settings import Settings
from shardline.loaders.loader import Loader
from tests.contract.loader_kit import SHARD0, SHARD1, STREAM, T0, csv_gz, event_id, ledger_row, \
    page_view, seq

pytestmark = pytest.mark.integration

LEGACY_DIR = Path(__file__).parent / "legacy_warehouse"
PV_COLS = ", ".join(("event_id", "occurred_at", "url", "url_host", "url_path", "url_query",
                     "referrer", "referrer_host", "user_agent", "device_class", "ip_prefix",
                     "user_id", "session_id", "shard_id", "sequence_number",
                     "sub_sequence_number", "arrival_time", "staged_at"))
FILE_COLS = ("s3_key", "target_table", "stream", "shard_id", "first_sequence",
             "first_sub_sequence", "last_sequence", "last_sub_sequence", "row_count",
             "byte_count", "dead_letter_key", "dead_letter_count", "state", "staged_at",
             "loaded_at", "load_id")


@pytest.fixture(params=["postgres", "redshift-like"])
def target(request: Any, s3_prefix: str) -> Iterator[dict]:
    """One warehouse + control store pair, two fresh schemas (legacy, fresh), cleaned up."""
    stack = request.getfixturevalue("stack" if request.param == "postgres" else "rs_stack")
    legacy, fresh = (f"t_{uuid.uuid4().hex[:8]}" for _ in range(2))
    env = {**stack.env(), "SHARDLINE_WAREHOUSE_SCHEMA": legacy,
           "SHARDLINE_CONTROL_SCHEMA": legacy, "SHARDLINE_S3_PREFIX": s3_prefix}
    if request.param == "redshift-like":
        env.update(SHARDLINE_CONTROL_BACKEND="dynamodb",
                   SHARDLINE_CONTROL_TABLE_PREFIX=f"{legacy}_")
    admin = [psycopg2.connect(dsn) for dsn in (stack.direct_dsn, stack.control_dsn)]
    for conn in admin:
        conn.autocommit = True
    with admin[0].cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{legacy}"; CREATE SCHEMA "{fresh}"')
    try:
        yield {"name": request.param, "stack": stack, "env": env, "legacy": legacy,
               "fresh": fresh, "s3": stack.client("s3"), "bucket": stack.bucket,
               "prefix": s3_prefix}
    finally:
        with admin[0].cursor() as cur:
            cur.execute("SET lock_timeout = '10s'")
            cur.execute(f'DROP SCHEMA "{legacy}" CASCADE; DROP SCHEMA "{fresh}" CASCADE')
        with admin[1].cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{legacy}" CASCADE')
        if request.param == "redshift-like":
            client = stack.client("dynamodb")
            for name in client.list_tables()["TableNames"]:
                if name.startswith(f"{legacy}_"):
                    client.delete_table(TableName=name)
        for conn in admin:
            conn.close()


def connect(dsn: str, schema: str) -> Any:
    conn = psycopg2.connect(dsn, options=f"-c search_path={schema}")
    conn.autocommit = True
    return conn


def rows_of(conn: Any, sql: str, params: Any = None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall()


def schema_of(conn: Any, schema: str) -> dict[str, list]:
    """Columns, indexes, keys and recorded migrations: what two migrated schemas share."""
    return {
        "columns": rows_of(conn, "SELECT table_name, column_name, ordinal_position, data_type, "
                                 "character_maximum_length, is_nullable, column_default FROM "
                                 "information_schema.columns WHERE table_schema = %s "
                                 "ORDER BY 1, 3", (schema,)),
        "indexes": rows_of(conn, "SELECT tablename, indexname, replace(indexdef, %s, 'S') "
                                 "FROM pg_indexes WHERE schemaname = %s ORDER BY 1, 2",
                           (f"{schema}.", schema)),
        "keys": rows_of(conn, "SELECT table_name, constraint_name, constraint_type FROM "
                              "information_schema.table_constraints WHERE table_schema = %s "
                              "AND constraint_type <> 'CHECK' ORDER BY 1, 2", (schema,)),
        "migrations": rows_of(conn, f'SELECT version, name FROM "{schema}".schema_migrations '
                                    "ORDER BY 1"),
    }


def build_legacy(t: dict) -> dict:
    """The old release's schema with what a running pipeline leaves in it."""
    conn = connect(t["stack"].direct_dsn, t["legacy"])
    assert migrate.migrate(conn, "postgres", LEGACY_DIR) == [
        "001_control_tables", "002_staging_ledger", "003_page_views"]
    conn.autocommit = True
    old_rows = [page_view(i, i) for i in (1, 2, 3)]
    with conn.cursor() as cur:
        for row in old_rows:
            cur.execute(f"INSERT INTO page_views ({PV_COLS}) VALUES ({', '.join(['%s'] * 18)})",
                        row)
        cur.execute("INSERT INTO loads VALUES ('L0', 'page_views', 'm/L0', 1, 100, 3, 3, %s, %s)",
                    (T0, T0 + timedelta(seconds=1)))
        p1 = [page_view(4, 4), page_view(5, 5)]
        p2 = [page_view(3, 3), page_view(6, 6)]  # event 3 is already stored
        files = {"old": (ledger_row(f"{t['prefix']}/staged/old.csv.gz", old_rows), "L0"),
                 "empty": (ledger_row(f"{t['prefix']}/staged/empty.csv.gz", []), None),
                 "p1": (ledger_row(f"{t['prefix']}/staged/p1.csv.gz", p1,
                                   staged_at=T0 + timedelta(seconds=5)), None),
                 "p2": (ledger_row(f"{t['prefix']}/staged/p2.csv.gz", p2,
                                   staged_at=T0 + timedelta(seconds=6)), None)}
        for name, rows in (("p1", p1), ("p2", p2)):
            t["s3"].put_object(Bucket=t["bucket"], Key=files[name][0].s3_key, Body=csv_gz(rows))
        for entry, load_id in files.values():
            if load_id:
                entry.state, entry.load_id, entry.loaded_at = "loaded", load_id, T0
            cur.execute(f"INSERT INTO staged_files ({', '.join(FILE_COLS)}) VALUES "
                        f"({', '.join(['%s'] * len(FILE_COLS))})",
                        [getattr(entry, c) for c in FILE_COLS])
        cur.execute("INSERT INTO shard_leases VALUES (%s, %s, NULL, 5, %s, %s, %s), "
                    "(%s, %s, 'old-host:7:abc', 2, %s, %s, %s)",
                    (STREAM, SHARD0, T0, T0, T0, STREAM, SHARD1, T0, T0, T0))
        for i, (source, reason) in enumerate((("consumer", None), ("consumer", None),
                                              ("replay", "bad deploy"), ("consumer", None))):
            cur.execute("INSERT INTO checkpoint_history (stream, shard_id, sequence_number, "
                        "sub_sequence_number, closes_sequence, source, reason, lease_token, "
                        "created_at) VALUES (%s, %s, %s, 0, true, %s, %s, 5, %s)",
                        (STREAM, SHARD0, seq(10 + i), source, reason,
                         T0 + timedelta(seconds=i)))
        # shard 0's checkpoint is its newest history entry; shard 1 has none (as the old
        # release left a checkpoint written before it kept history)
        cur.execute("INSERT INTO checkpoints VALUES (%s, %s, %s, 0, true, 5, NULL, %s), "
                    "(%s, %s, 'SHARD_END', 0, true, 2, NULL, %s)",
                    (STREAM, SHARD0, seq(13), T0 + timedelta(seconds=3), STREAM, SHARD1, T0))
        cur.execute("INSERT INTO shard_status (stream, shard_id, owner, state, updated_at) "
                    "VALUES (%s, %s, NULL, 'stopping', %s)", (STREAM, SHARD0, T0))
        cur.execute("INSERT INTO shard_watermarks VALUES (%s, %s, 'page_views', %s, 0, 'L0', %s)",
                    (STREAM, SHARD0, seq(3), T0))
    history = rows_of(conn, "SELECT id, sequence_number, source, reason FROM checkpoint_history "
                            "ORDER BY id DESC")
    conn.close()
    return {"files": {k: e for k, (e, _) in files.items()}, "history": history,
            "rows": {event_id(i) for i in (1, 2, 3)}}


def run_migrate(monkeypatch: pytest.MonkeyPatch, env: dict, *args: str) -> int:
    for name in [n for n in os.environ if n.startswith("SHARDLINE_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return cli.main(["migrate", *args])


def test_migrate_upgrades_a_legacy_warehouse_and_its_pending_files_load_once(
        target, monkeypatch, tmp_path) -> None:
    from shardline.controlstore import open_store

    t = target
    monkeypatch.chdir(tmp_path)  # no ./shardline.ini
    old = build_legacy(t)
    stack, env = t["stack"], t["env"]
    wh = connect(stack.direct_dsn, t["legacy"])
    fresh_conn = connect(stack.direct_dsn, t["fresh"])
    assert migrate.migrate(fresh_conn, t["name"]) == [  # a fresh warehouse
        "001_load_record", "002_page_views", "003_transform_version",
        "004_arrival_time_zone_map", "005_no_unguaranteed_keys", "006_hour_record"]
    fresh_conn.close()
    fresh = schema_of(wh, t["fresh"])

    # an old consumer still holds shard 1: refused, nothing changed
    with wh.cursor() as cur:
        cur.execute("UPDATE shard_leases SET expires_at = %s WHERE shard_id = %s",
                    (datetime.utcnow() + timedelta(minutes=5), SHARD1))
    assert run_migrate(monkeypatch, env) == 75
    assert rows_of(wh, "SELECT count(*) FROM staged_files") == [(4,)]
    with wh.cursor() as cur:
        cur.execute("UPDATE shard_leases SET expires_at = %s WHERE shard_id = %s", (T0, SHARD1))

    assert run_migrate(monkeypatch, env) == 0
    assert run_migrate(monkeypatch, env) == 0  # and again: nothing left to do
    assert schema_of(wh, t["legacy"]) == fresh
    assert {r[0] for r in rows_of(wh, "SELECT event_id FROM page_views")} == old["rows"]
    assert rows_of(wh, "SELECT load_id, rows_inserted, lease_token FROM loads") == [("L0", 3, 0)]
    assert rows_of(wh, "SELECT s3_key, load_id FROM loaded_files") == [
        (old["files"]["old"].s3_key, "L0")]

    settings = Settings().replace(**{
        "warehouse.dsn": env["SHARDLINE_WAREHOUSE_DSN"], "warehouse.schema": t["legacy"],
        "warehouse.mode": env["SHARDLINE_WAREHOUSE_MODE"],
        "control.backend": env.get("SHARDLINE_CONTROL_BACKEND", "postgres"),
        "control.dsn": env["SHARDLINE_CONTROL_DSN"], "control.schema": t["legacy"],
        "control.table_prefix": env.get("SHARDLINE_CONTROL_TABLE_PREFIX", "shardline_"),
        "control.dynamodb_endpoint_url": env["SHARDLINE_CONTROL_DYNAMODB_ENDPOINT_URL"],
        "aws.region": env["AWS_DEFAULT_REGION"] if "AWS_DEFAULT_REGION" in env else "us-east-1",
        "s3.endpoint_url": env["SHARDLINE_S3_ENDPOINT_URL"], "s3.bucket": t["bucket"],
        "s3.prefix": t["prefix"], "loader.max_interval_s": "0", "loader.poll_s": "0.05"})
    store = open_store(settings)
    try:
        # the consumers resume where they were: checkpoints, history (ids kept), tokens
        assert store.get_checkpoint(STREAM, SHARD0) == Checkpoint(
            seq(13), 0, True, T0 + timedelta(seconds=3))
        assert store.get_checkpoint(STREAM, SHARD1).sequence_number == "SHARD_END"
        got = [(e.id, e.sequence_number, e.source, e.reason)
               for e in store.history(STREAM, SHARD0)]
        assert got == old["history"]
        (made_up,) = store.history(STREAM, SHARD1)
        assert made_up.sequence_number == "SHARD_END" and made_up.id > old["history"][0][0]
        assert [(lease.owner, lease.token) for lease in store.leases(STREAM)] == [
            (None, 5), (None, 2)]
        token = store.acquire_lease(STREAM, SHARD0, "new-host:1", 30)
        assert token == 6
        entry = store.checkpoint(STREAM, SHARD0, "new-host:1", token, 30,
                                 Checkpoint(seq(14), 0, True))
        assert entry > made_up.id
        # the ledger: pending files pending, loaded ones loaded
        assert [f.s3_key for f in store.pending_files("page_views", 10)] == [
            old["files"]["p1"].s3_key, old["files"]["p2"].s3_key]
        assert store.get_file(old["files"]["old"].s3_key).state == "loaded"
        assert store.get_file(old["files"]["empty"].s3_key).state == "loaded"

        # one load of the pending files lands each event exactly once
        loader = Loader(settings, "page_views", s3=t["s3"], store=store)
        first = loader.step()
        assert first.state == "loaded" and first.load.files == 2
        assert first.load.rows_copied == 4 and first.load.rows_inserted == 3
        assert loader.step().state == "idle"
        loader.release()
        loader.close()
    finally:
        store.close()
    events = [r[0] for r in rows_of(wh, "SELECT event_id FROM page_views")]
    assert sorted(events) == [event_id(i) for i in range(1, 7)]  # each once
    assert rows_of(wh, "SELECT count(*) FROM loaded_files") == [(3,)]
    wh.close()


def test_migrate_refuses_a_schema_it_does_not_know(stack, pg_conn, pg_schema) -> None:
    """A schema_migrations naming other files under this release's numbers is never
    migrated on top of (it used to count as up to date)."""
    from shardline.errors import SchemaMismatch

    with pg_conn.cursor() as cur:
        cur.execute("CREATE TABLE schema_migrations (version INTEGER NOT NULL PRIMARY KEY, "
                    "name VARCHAR(256) NOT NULL, applied_at TIMESTAMP NOT NULL)")
        cur.execute("INSERT INTO schema_migrations VALUES (1, '001_something_else', now())")
    with pytest.raises(SchemaMismatch, match="001 001_something_else|1 001_something_else"):
        migrate.migrate(pg_conn, "postgres")
