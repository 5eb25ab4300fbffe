"""The loader against the real local stack (moto S3 + PostgreSQL), including the CLI.

Staged files are made here directly (csvformat.format_row + gzip + put_object) with their
ledger entries in the control store; the stage worker is not involved, except in the
hostile-text round trip, where events go through the stage job (S3 and ledger for real) first.
"""
from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from tests.contract.loader_kit import (SHARD0, SHARD1, STREAM, PostgresBackend, event_id,
                                 page_view, seq)
from shardline.devstack.fleet import wait_for
from shardline import codec
from shardline.sample import events
from shardline.sample.traffic import HOSTILE
from shardline.tables import PAGE_VIEWS

pytestmark = pytest.mark.integration



@pytest.fixture
def pg(stack, stack_env, pg_conn, pg_schema, s3, s3_prefix, control_store) -> PostgresBackend:
    return PostgresBackend(stack.env(), pg_conn, pg_schema, s3, s3_prefix, control_store)


def shardline_cmd(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("shardline")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "shardline.cli"]
    return head + list(args)


def cli_env(pg: PostgresBackend, **loader: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHARDLINE_")}
    env.update(pg.env)
    env.update({"SHARDLINE_WAREHOUSE_SCHEMA": pg.schema, "SHARDLINE_S3_PREFIX": pg.prefix,
                "SHARDLINE_CONTROL_SCHEMA": pg.schema, "SHARDLINE_LOADER_LEASE_TTL_S": "2",
                "SHARDLINE_LOADER_MAX_INTERVAL_S": "0", "SHARDLINE_LOADER_POLL_S": "0.1"})
    env.update({f"SHARDLINE_LOADER_{k.upper()}": v for k, v in loader.items()})
    return env


def start_loader(pg: PostgresBackend, tmp_path: Path, *args: str, **loader: str):
    log = open(tmp_path / f"loader-{time.monotonic_ns()}.log", "w+")
    proc = subprocess.Popen(shardline_cmd("loader", *args), env=cli_env(pg, **loader),
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def output(proc: Any) -> str:
    proc.log.flush()
    proc.log.seek(0)
    return proc.log.read()


def holder_connection(pg: PostgresBackend):
    conn = psycopg2.connect(pg.env["SHARDLINE_WAREHOUSE_DSN"])
    with conn.cursor() as cur:
        cur.execute(f'SET search_path TO "{pg.schema}"')
    conn.commit()
    return conn


def blocked_loader_backend(pg: PostgresBackend) -> dict | None:
    """The loader backend waiting for ``loads`` (its last insert), with what it holds."""
    rows = pg.query(
        "SELECT l.pid, a.query FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.relation = %s::regclass AND NOT l.granted",
        (f'"{pg.schema}".loads',))
    if not rows:
        return None
    pid, query = rows[0]
    held = pg.query(
        "SELECT c.relname, l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
        "WHERE l.pid = %s AND l.granted", (pid,))
    return {"pid": pid, "query": query, "held": {(r, m) for r, m in held}}


# -- exactly once across a SIGKILL ------------------------------------------------------

def test_sigkill_between_copy_and_commit_then_restart(pg, tmp_path):
    rows = {name: [page_view(i, i) for i in range(lo, hi)]
            for name, lo, hi in (("a", 1, 40), ("b", 30, 80), ("c", 80, 120))}
    entries = [pg.stage(name, r) for name, r in rows.items()]
    holder = holder_connection(pg)
    try:
        with holder.cursor() as cur:  # the loader needs this AFTER its COPY and merge
            cur.execute("LOCK TABLE loads IN ACCESS EXCLUSIVE MODE")
        proc = start_loader(pg, tmp_path, "--once")
        blocked = wait_for(lambda: blocked_loader_backend(pg),
                           20, "the loader to block on loads", every=0.05)
        # It got there after the COPY and the merge: it wrote to page_views (the INSERT of
        # the merge) and loaded_files, and it took NO table lock on page_views.
        assert "INSERT INTO loads" in blocked["query"]
        held = blocked["held"]
        assert ("page_views", "RowExclusiveLock") in held
        assert ("loaded_files", "RowExclusiveLock") in held
        assert not {m for r, m in held if r == "page_views"} - {
            "AccessShareLock", "RowExclusiveLock"}
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        holder.rollback()  # releases the lock
        holder.close()
    # The orphaned server backend notices its client is gone and rolls back.
    wait_for(lambda: not pg.query(
        "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (blocked["pid"],)),
             30, "the killed loader's backend to end", every=0.05)
    assert pg.stored() == {}
    assert {s for s, _ in pg.ledger().values()} == {"pending"}
    assert pg.loads() == [] and pg.record() == {}

    proc = start_loader(pg, tmp_path, "--once")  # waits out the dead one's loader lease
    assert proc.wait(60) == 0, output(proc)
    assert sorted(pg.stored()) == [event_id(i) for i in range(1, 120)]
    (load_id, files, copied, inserted), = pg.loads()
    assert (files, copied, inserted) == (3, 39 + 50 + 40, 119)
    assert pg.ledger() == {e.s3_key: ("loaded", load_id) for e in entries}
    assert pg.record() == {e.s3_key: load_id for e in entries}
    assert f"load_id={load_id}" in output(proc)


def test_sigkill_between_warehouse_commit_and_control_store_update(pg, tmp_path, control_conn):
    """The kill point between the two stores: the warehouse has committed rows and record,
    the ledger still says pending. The next loader reconciles: no file twice, none lost."""
    rows = {name: [page_view(i, i) for i in range(lo, hi)]
            for name, lo, hi in (("a", 1, 40), ("b", 30, 80))}
    entries = [pg.stage(name, r) for name, r in rows.items()]
    control_conn.autocommit = False
    with control_conn.cursor() as cur:  # row locks: mark_loaded's UPDATE waits on them
        cur.execute("SELECT s3_key FROM staged_files FOR UPDATE")
    try:
        proc = start_loader(pg, tmp_path, "--once")
        wait_for(lambda: pg.loads(), 30, "the warehouse commit", every=0.05)
        time.sleep(0.2)  # now in (or about to be in) mark_loaded, blocked
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        control_conn.rollback()
        control_conn.autocommit = True
    (load_id, files, _, inserted), = pg.loads()
    assert (files, inserted) == (2, 79)
    assert {s for s, _ in pg.ledger().values()} == {"pending"}  # the store never heard
    pg.stage("c", [page_view(i, i) for i in range(70, 90)])
    proc = start_loader(pg, tmp_path, "--once")
    assert proc.wait(60) == 0, output(proc)
    assert "reconciled 2 files" in output(proc)
    assert sorted(pg.stored()) == [event_id(i) for i in range(1, 90)]
    ledger = pg.ledger()
    assert all(ledger[e.s3_key] == ("loaded", load_id) for e in entries)
    assert [row[1] for row in pg.loads()] == [2, 1]  # a and b were not loaded again
    assert len(pg.record()) == 3


def test_a_reader_is_never_blocked_by_a_load(pg, tmp_path):
    """While a load is in progress (held open after its COPY and merge), a plain SELECT
    count(*) on the target returns at once (no table lock; it sees the rows before)."""
    pg.stage("before", [page_view(i, i) for i in range(1, 6)])
    first = pg.loader()
    assert first.step().state == "loaded"
    first.release()
    pg.stage("during", [page_view(i, i) for i in range(6, 50)])
    holder = holder_connection(pg)
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE loads IN ACCESS EXCLUSIVE MODE")
        proc = start_loader(pg, tmp_path, "--once", lease_ttl_s="1")
        wait_for(lambda: blocked_loader_backend(pg), 20, "the load to be in progress",
                 every=0.05)
        reader = psycopg2.connect(pg.env["SHARDLINE_WAREHOUSE_DSN"],
                                  options=f"-c search_path={pg.schema} "
                                          "-c statement_timeout=1000")
        try:
            with reader.cursor() as cur:
                t0 = time.monotonic()
                cur.execute("SELECT count(*) FROM page_views")
                (n,), took = cur.fetchone(), time.monotonic() - t0
        finally:
            reader.close()
        assert n == 5 and took < 1.0
    finally:
        holder.rollback()
        holder.close()
    assert proc.wait(60) == 0, output(proc)
    assert len(pg.stored()) == 49


# -- every value arrives unchanged --------------------------------------------------------

NASTY = [
    'he said "hi", then ""left""',
    "a,b,,c,",
    "tab\there\tand\t",
    "back\\slash\\\\ and C:\\path\\",
    "line1\nline2\r\nline3\r",
    "\\N",
    "\\.",
    "x\n\\.\ny",
    "ctl \x01\x02\x07\x08\x0b\x0c\x1b\x1f\x7f end",
    "emoji 😀👍🏽 and Zürich, 東京, مرحبا, ελληνικά",
    "",
    " leading and trailing spaces ",
    "NULL",
    "'single' quotes; -- and /* comments */",
] + [text for text in HOSTILE if text not in ("\\N", "\\.", "NULL")]


def test_special_values_round_trip_unchanged(pg):
    cols = PAGE_VIEWS.column_names
    rows = []
    for i, text in enumerate(NASTY):
        rows.append(page_view(i, i, url=text, url_path=text, user_agent=text,
                              url_query=text, referrer=None if i % 2 else text, user_id=text,
                              session_id=text,
                              occurred_at=datetime(2026, 1, 2, 3, 4, 5, i)))
    # empty string vs NULL side by side
    rows.append(page_view(100, 100, url_query="", referrer=None, user_id="\\N"))
    pg.stage("nasty", rows)
    r = pg.loader().step()
    assert r.state == "loaded", r.error
    got = {row[0]: list(row) for row in pg.query(f"SELECT {', '.join(cols)} FROM page_views")}
    assert len(got) == len(rows)
    for want in rows:
        have = got[want[0]]
        assert have == want, [(c, w, h) for c, w, h in zip(cols, want, have, strict=False)
                              if w != h]


def _hostile_events() -> list[dict]:
    """Two valid events per HOSTILE string: the string bare in every free-text field, and
    inside a url query, a search referrer and a user agent as the generator puts it."""
    out = []
    for i, text in enumerate(HOSTILE):
        base = {"occurred_at": f"2026-11-26T06:30:{i:02d}.25+00:00", "ip": "203.0.113.9"}
        out.append({**base, "event_id": event_id(500 + 2 * i),
                    "url": f"https://shop.example.com/search?q={text}",
                    "referrer": text, "user_agent": text, "user_id": text, "session_id": text})
        out.append({**base, "event_id": event_id(501 + 2 * i),
                    "url": f"https://shop.example.com/p/1?note={text}&size=M",
                    "referrer": f"https://www.google.com/search?q={text}",
                    "user_agent": f"Mozilla/5.0 (X11; Linux x86_64) Custom/{text}",
                    "user_id": f"u-{text}", "session_id": f"s-{i}-{text}"})
    return out


def test_hostile_text_round_trips_through_the_stage_worker_unchanged(pg):
    """SQL/CSV/COPY look-alikes in valid events land as the exact text sent; a
    deep_nesting record in the same batch is a dead letter and breaks nothing."""
    from shardline.workers.stage import StageJob
    from shardline.transforms.page_views import page_view as transform

    sent = _hostile_events()
    for e in sent:
        for name in ("referrer", "user_agent", "user_id", "session_id", "url"):
            assert len(e[name].encode()) <= events.MAX_BYTES[name], (name, e[name])
        assert events.check(json.dumps(e).encode()) == e  # valid by the reference rules
    deep = next(data for kind, _, data in events.generate(
        1, 1.0, 3, bad_kinds=["deep_nesting"]))
    datas = [json.dumps(e, ensure_ascii=bool(i % 2)).encode() for i, e in enumerate(sent)]
    datas.insert(len(datas) // 2, deep)
    batch = codec.Batch(STREAM, SHARD0, [
        codec.Record(seq(i + 1), 0, f"pk-{i}", data, 1_764_138_600_000 + i)
        for i, data in enumerate(datas)])
    job = StageJob(pg.settings(), s3=pg.s3, transform=transform)
    try:
        assert job.run(codec.encode(batch)) == b""  # the Gearman task body
    finally:
        job.close()
    (entry,) = pg.store.pending_files("page_views", 10)
    rows, dead, dl_key = entry.row_count, entry.dead_letter_count, entry.dead_letter_key
    assert rows == len(sent) and dead == 1
    body = pg.s3.get_object(Bucket=pg.bucket, Key=dl_key)["Body"].read()
    (dead,) = [json.loads(line) for line in gzip.decompress(body).splitlines()]
    assert dead["reason"].startswith("not JSON: maximum recursion depth exceeded while "
                                     "decoding a JSON"), dead["reason"]

    r = pg.loader().step()
    assert r.state == "loaded", r.error
    cols = ("event_id", "url", "url_host", "url_path", "url_query", "referrer", "referrer_host",
            "user_agent", "device_class", "ip_prefix", "user_id", "session_id")
    got = {row[0]: dict(zip(cols, row, strict=True))
           for row in pg.query(f"SELECT {', '.join(cols)} FROM page_views")}
    assert len(got) == len(sent)
    for e in sent:
        have = got[e["event_id"]]
        for name in ("url", "referrer", "user_agent", "user_id", "session_id"):
            assert have[name] == e[name], (name, e[name], have[name])
        assert have["url_query"] == e["url"].split("?", 1)[1]
        want = transform(e)
        assert have == {c: want[c] for c in cols}, [
            (c, want[c], have[c]) for c in cols if want[c] != have[c]]


# -- two loaders at once --------------------------------------------------------------------

def test_two_loaders_at_once_serialise_without_duplicates_or_losses(pg):
    """Two loaders: one holds the table's loader lease and loads, the other stands by;
    whichever loads, no file is loaded twice or lost."""
    n_files = 24
    entries = []
    for f in range(n_files):
        shard = SHARD0 if f % 2 == 0 else SHARD1
        base = (f // 2) * 10
        # consecutive files of a shard overlap by 2 records (replays) and every file
        # repeats one event of the other shard (producer retries)
        rows = [page_view(f"{shard[-1]}-{i:05d}".rjust(36, "0"), i, shard=shard)
                for i in range(base, base + 12)]
        rows.append(page_view(event_id(7), 1000 + f, shard=shard))
        entries.append(pg.stage(f"f{f:03d}", rows, shard=shard))
    results: dict[str, list] = {"x": [], "y": []}
    errors: list[BaseException] = []

    def run(name: str) -> None:
        try:
            loader = pg.loader(**{"loader.max_files_per_load": "3"})
            idle = 0
            while idle < 3:
                r = loader.step()
                results[name].append(r)
                idle = idle + 1 if r.state in ("idle", "nothing", "standby") else 0
                assert r.state != "failed", r.error
            loader.release()
            loader.close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    loads = [r.load for rs in results.values() for r in rs if r.state == "loaded"]
    assert sum(load.files for load in loads) == n_files  # no file loaded twice, none lost
    assert all(load.files <= 3 for load in loads)
    ledger = pg.ledger()
    assert {s for s, _ in ledger.values()} == {"loaded"}
    assert {lid for _, lid in ledger.values()} == {load.load_id for load in loads}
    assert len(pg.loads()) == len(loads)
    stored = pg.stored()  # raises on a duplicate
    expected = 2 * (10 * (n_files // 2 - 1) + 12) + 1
    assert len(stored) == expected
    assert sum(load.rows_inserted for load in loads) == expected
    assert stored[event_id(7)][:3] == (SHARD0, seq(1000), 0)  # first by position
    print("loads per loader:", {n: sum(r.state == "loaded" for r in rs)
                                for n, rs in results.items()})


# -- the CLI: --once, SIGTERM finishes the current load -------------------------------------

def test_once_with_nothing_due_exits_zero(pg, tmp_path):
    proc = start_loader(pg, tmp_path, "--once", max_interval_s="3600")
    pg.stage("young", [page_view(1, 1)],
             staged_at=datetime.now(timezone.utc).replace(tzinfo=None))
    assert proc.wait(60) == 0, output(proc)
    assert pg.ledger() and {s for s, _ in pg.ledger().values()} == {"pending"}


def test_sigterm_finishes_the_load_in_progress_then_exits_zero(pg, tmp_path):
    pg.stage("a", [page_view(1, 1), page_view(2, 2)])
    holder = holder_connection(pg)
    proc = None
    try:
        with holder.cursor() as cur:
            cur.execute("LOCK TABLE loads IN ACCESS EXCLUSIVE MODE")
        proc = start_loader(pg, tmp_path)  # the loop, not --once
        wait_for(lambda: blocked_loader_backend(pg), 20, "the load to be in progress", every=0.05)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        assert proc.poll() is None  # still finishing its load
    finally:
        holder.rollback()
        holder.close()
    assert proc.wait(30) == 0, output(proc)
    assert {s for s, _ in pg.ledger().values()} == {"loaded"}
    assert sorted(pg.stored()) == [event_id(1), event_id(2)]
    text = output(proc)
    assert "SIGTERM: finishing the current load" in text and "loader stopped" in text


def test_failed_once_exits_unavailable_and_logs_the_reason(pg, tmp_path):
    bad = pg.stage("bad", [page_view(1, 1, arrival_time="yesterday-ish")])
    proc = start_loader(pg, tmp_path, "--once")
    assert proc.wait(60) == 69, output(proc)
    text = output(proc)
    assert bad.s3_key in text and "table=page_views" in text and "load_id=" in text
    assert {s for s, _ in pg.ledger().values()} == {"pending"}
