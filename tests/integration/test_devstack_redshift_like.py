"""``devstack up --warehouse redshift-like``: what PostgreSQL can mimic of Redshift, shown.

Each test states a Redshift fact the load path must respect and shows the stand-in now
behaves that way: SERIALIZABLE by default (read/write cycles abort, SQLSTATE 40001 where
Redshift says ERROR 1023), ``LOCK`` is ACCESS EXCLUSIVE and stalls plain readers (why the
loader must not lock), and every COMMIT pays a queue's latency (pgrelay). Short lock and
statement timeouts keep a regression from hanging the run.
"""
from __future__ import annotations

import contextlib
import statistics
import time
import uuid
from pathlib import Path
from typing import Iterator

import psycopg2
import psycopg2.errors
import pytest

from shardline import devstack
from shardline.devstack import StackInfo

pytestmark = pytest.mark.integration

LATENCY_MS = 300


# rs_stack: tests/conftest.py (session-wide, shared with the loader contract suite)


@pytest.fixture
def table(rs_stack: StackInfo) -> Iterator[str]:
    """A fresh table t_<uuid8>(k int, v int) with rows (1, 10), (2, 20)."""
    name = f"t_{uuid.uuid4().hex[:8]}"
    with contextlib.closing(psycopg2.connect(rs_stack.direct_dsn)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE {name} (k int, v int)")
            cur.execute(f"INSERT INTO {name} VALUES (1, 10), (2, 20)")
        yield name
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = '10s'")
            cur.execute(f"DROP TABLE {name}")


@contextlib.contextmanager
def warehouse(info: StackInfo) -> Iterator[psycopg2.extensions.connection]:
    """A connection made as the pipeline makes it: the exported warehouse DSN."""
    conn = psycopg2.connect(info.env()["SHARDLINE_WAREHOUSE_DSN"],
                            options="-c statement_timeout=10s")
    try:
        yield conn
    finally:
        conn.close()


def test_the_mode_is_on_recorded_and_shown(rs_stack: StackInfo,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert rs_stack.warehouse_mode == "redshift-like"
    assert rs_stack.commit_latency_ms == LATENCY_MS
    assert f"port={rs_stack.relay_port} " in rs_stack.env()["SHARDLINE_WAREHOUSE_DSN"]
    assert rs_stack.env()["SHARDLINE_WAREHOUSE_MODE"] == "redshift-like"  # for migrate
    assert rs_stack.relay_port != rs_stack.pg_port
    with warehouse(rs_stack) as conn, conn.cursor() as cur:
        cur.execute("SHOW transaction_isolation")
        assert cur.fetchone() == ("serializable",)
    # The control store is not the warehouse: no Redshift semantics there.
    with contextlib.closing(psycopg2.connect(rs_stack.env()["SHARDLINE_CONTROL_DSN"])) as conn:
        with conn.cursor() as cur:
            cur.execute("SHOW transaction_isolation")
            assert cur.fetchone() == ("read committed",)

    assert devstack.load(rs_stack.dir) == rs_stack  # from state.json
    assert devstack.main(["status", "--dir", str(rs_stack.dir)]) == 0
    shown = capsys.readouterr().out
    assert f"redshift-like (SERIALIZABLE by default, COMMIT +{LATENCY_MS} ms" in shown
    assert "pgrelay" in shown
    assert devstack.main(["env", "--dir", str(rs_stack.dir)]) == 0
    assert "# warehouse: redshift-like" in capsys.readouterr().out


def test_a_read_write_cycle_aborts_with_a_serialization_failure(rs_stack, table) -> None:
    """Redshift: "the last operation that is run results in a serializable isolation
    error" (1023). Here: SQLSTATE 40001 (write skew between two transactions)."""
    with warehouse(rs_stack) as one, warehouse(rs_stack) as two:
        c1, c2 = one.cursor(), two.cursor()
        c1.execute(f"SELECT sum(v) FROM {table} WHERE k = 1")
        c2.execute(f"SELECT sum(v) FROM {table} WHERE k = 2")
        c1.execute(f"INSERT INTO {table} VALUES (2, 1)")  # writes what two read
        c2.execute(f"INSERT INTO {table} VALUES (1, 1)")  # writes what one read
        one.commit()
        with pytest.raises(psycopg2.errors.SerializationFailure) as failed:
            two.commit()
        assert failed.value.pgcode == "40001"
        two.rollback()
        c1.execute(f"SELECT count(*) FROM {table}")
        assert c1.fetchone() == (3,)  # only the first transaction's row landed


def test_lock_blocks_a_concurrent_select(rs_stack, table) -> None:
    """Redshift's LOCK is ACCESS EXCLUSIVE: readers wait. A loader that locked the target
    would stall every dashboard query for the length of its load."""
    with warehouse(rs_stack) as locker, warehouse(rs_stack) as reader:
        with locker.cursor() as cur:
            cur.execute(f"LOCK {table}")
        with reader.cursor() as cur:
            cur.execute("SET lock_timeout = '300ms'")
            started = time.monotonic()
            with pytest.raises(psycopg2.errors.LockNotAvailable):
                cur.execute(f"SELECT count(*) FROM {table}")
            assert time.monotonic() - started >= 0.3
        reader.rollback()
        locker.rollback()  # the lock goes with the transaction
        with reader.cursor() as cur:
            cur.execute("SET lock_timeout = '300ms'")
            cur.execute(f"SELECT count(*) FROM {table}")
            assert cur.fetchone() == (2,)


def test_a_commit_pays_the_latency_a_select_does_not(rs_stack, table) -> None:
    with warehouse(rs_stack) as conn, conn.cursor() as cur:
        selects, commits = [], []
        for i in range(3):
            started = time.monotonic()
            cur.execute(f"SELECT count(*) FROM {table}")
            cur.fetchone()
            selects.append(time.monotonic() - started)
            cur.execute(f"INSERT INTO {table} VALUES (%s, 0)", (10 + i,))
            started = time.monotonic()
            conn.commit()
            commits.append(time.monotonic() - started)
    assert min(commits) >= LATENCY_MS / 1000, commits
    assert statistics.median(selects) < LATENCY_MS / 1000 / 2, selects
    with contextlib.closing(psycopg2.connect(rs_stack.direct_dsn)) as direct:
        with direct.cursor() as cur:
            cur.execute(f"SELECT count(*) FROM {table}")
            assert cur.fetchone() == (5,)  # the delayed commits did land
        started = time.monotonic()
        direct.commit()
        assert time.monotonic() - started < LATENCY_MS / 1000 / 2  # the relay adds it


def test_the_mode_can_be_switched_back_and_up_keeps_it_otherwise(tmp_path: Path) -> None:
    dir = tmp_path / "stack"
    try:
        info = devstack.up(dir, warehouse="redshift-like", commit_latency_ms=50)
        relay = devstack.status(dir)["pgrelay"]
        assert relay.alive
        assert devstack.up(dir) == info  # no --warehouse: the recorded mode stays
        plain = devstack.up(dir, warehouse="postgres")
        assert (plain.warehouse_mode, plain.relay_port, plain.dsn) == (
            "postgres", None, info.direct_dsn)
        assert "pgrelay" not in devstack.status(dir)
        assert not Path(f"/proc/{relay.pid}").exists()  # stopped, not orphaned
        with contextlib.closing(psycopg2.connect(plain.dsn)) as conn, conn.cursor() as cur:
            cur.execute("SHOW transaction_isolation")
            assert cur.fetchone() == ("read committed",)
        with pytest.raises(devstack.DevstackError, match="unknown warehouse mode"):
            devstack.up(dir, warehouse="snowflake")
    finally:
        devstack.down(dir)
    assert devstack.status(dir) == {}


def test_isolation_choice_serializable_or_snapshot(rs_stack: StackInfo,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """New Redshift clusters default to SNAPSHOT isolation, older ones to SERIALIZABLE:
    ``--isolation snapshot`` makes REPEATABLE READ (PostgreSQL's snapshot isolation) the
    warehouse's default, recorded in the state and shown; back to serializable after."""
    dir = str(rs_stack.dir)
    try:
        assert devstack.main(["up", "--dir", dir, "--isolation", "snapshot"]) == 0
        assert devstack.load(rs_stack.dir).isolation == "snapshot"
        assert "redshift-like (SNAPSHOT by default" in capsys.readouterr().out
        with warehouse(rs_stack) as conn, conn.cursor() as cur:
            cur.execute("SHOW transaction_isolation")
            assert cur.fetchone() == ("repeatable read",)
        assert devstack.main(["up", "--dir", dir]) == 0  # no flag: the recorded choice stays
        assert devstack.load(rs_stack.dir).isolation == "snapshot"
    finally:
        assert devstack.main(["up", "--dir", dir, "--isolation", "serializable"]) == 0
    with warehouse(rs_stack) as conn, conn.cursor() as cur:
        cur.execute("SHOW transaction_isolation")
        assert cur.fetchone() == ("serializable",)
    assert devstack.load(rs_stack.dir) == rs_stack


def _copy_from_s3(rs_stack: StackInfo, conn, table: str, keys_bodies: list) -> str:
    """Put gzip'd objects and a manifest listing them; the Redshift COPY text for them."""
    import gzip
    import json

    s3 = rs_stack.client("s3")
    for key, body in keys_bodies:
        s3.put_object(Bucket=rs_stack.bucket, Key=key, Body=gzip.compress(body))
    manifest = f"rs-copy/{uuid.uuid4().hex[:8]}.manifest"
    s3.put_object(Bucket=rs_stack.bucket, Key=manifest, Body=json.dumps({"entries": [
        {"url": f"s3://{rs_stack.bucket}/{k}", "mandatory": True} for k, _ in keys_bodies]}))
    return (f"COPY {table} (k, v) FROM 's3://{rs_stack.bucket}/{manifest}' IAM_ROLE "
            "'arn:aws:iam::123456789012:role/x' MANIFEST FORMAT AS CSV DELIMITER ',' "
            "NULL AS '\\\\N' GZIP ENCODING UTF8 MAXERROR 0")


def test_a_failed_copy_names_no_file_and_stl_load_errors_has_the_cut_url(rs_stack,
                                                                        table) -> None:
    """Redshift's COPY from S3, answered by the stand-in: a row it refuses fails the COPY
    with a message naming no file; STL_LOAD_ERRORS (in the session's schema here) holds the
    URL of the object COPY read cut at CHAR(256), the line in that object and the reason,
    and survives the rollback. The session's transaction is aborted, as Redshift's is."""
    long_key = f"rs-copy/{'p' * 280}/part-0001.csv.gz"
    with warehouse(rs_stack) as conn, conn.cursor() as cur:
        sql = _copy_from_s3(rs_stack, conn, table, [
            ("rs-copy/first.csv.gz", b'"3","30"\n"4","40"\n'),
            (long_key, b'"5","50"\n"6","not a number"\n"7","70"\n')])
        cur.execute("SELECT pg_backend_pid()")
        (pid,) = cur.fetchone()
        with pytest.raises(psycopg2.InternalError) as failed:
            cur.execute(sql)
        assert str(failed.value).strip() == (
            f"Load into table '{table}' failed.  Check 'stl_load_errors' system table for "
            "details.")
        with pytest.raises(psycopg2.errors.InFailedSqlTransaction):
            cur.execute("SELECT 1")
        conn.rollback()
        cur.execute("SELECT session, TRIM(filename), line_number, TRIM(colname), "
                    "TRIM(raw_field_value), err_reason FROM stl_load_errors WHERE session = %s",
                    (pid,))
        ((session, filename, line, column, value, reason),) = cur.fetchall()
        url = f"s3://{rs_stack.bucket}/{long_key}"
        assert (session, filename, line, column) == (pid, url[:256], 2, "v")
        assert len(url) > 256 and value == "not a number" and "integer" in reason
        cur.execute(f"SELECT count(*) FROM {table}")
        assert cur.fetchone() == (2,)  # nothing of the COPY landed


def test_a_copy_from_s3_loads_every_object_of_the_manifest(rs_stack, table) -> None:
    with warehouse(rs_stack) as conn, conn.cursor() as cur:
        cur.execute(_copy_from_s3(rs_stack, conn, table, [
            ("rs-copy/a.csv.gz", b'"3","30"\n'), ("rs-copy/b.csv.gz", b'"4",\\N\n"5","50"')]))
        conn.commit()
        cur.execute(f"SELECT k, v FROM {table} ORDER BY k")
        assert cur.fetchall() == [(1, 10), (2, 20), (3, 30), (4, None), (5, 50)]


def test_copy_refuses_a_multibyte_character_in_a_char_column(rs_stack) -> None:
    """CHAR(n) takes single-byte characters only on Redshift (error 1220, the whole COPY
    fails); PostgreSQL's CHAR takes any. The stand-in's COPY refuses it as Redshift does."""
    name = f"c_{uuid.uuid4().hex[:8]}"
    with warehouse(rs_stack) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE TABLE {name} (k CHAR(4), v VARCHAR(8))")
        conn.commit()
        try:
            cur.execute("SELECT pg_backend_pid()")
            (pid,) = cur.fetchone()
            with pytest.raises(psycopg2.InternalError, match="Check 'stl_load_errors'"):
                cur.execute(_copy_from_s3(rs_stack, conn, name, [
                    ("rs-copy/char.csv.gz", '"ab","é"\n"é","ab"\n'.encode())]))
            conn.rollback()
            cur.execute("SELECT line_number, TRIM(colname), err_code FROM stl_load_errors "
                        "WHERE session = %s", (pid,))
            assert cur.fetchall() == [(2, "k", 1220)]  # the VARCHAR's é is fine
            cur.execute(f"INSERT INTO {name} VALUES ('é', 'é')")  # PostgreSQL alone takes it
        finally:
            conn.rollback()
            cur.execute(f"DROP TABLE {name}")
            conn.commit()
