#!/usr/bin/env python
"""Commits per second the pipeline puts on the warehouse, at 4 and 64 shards.

    .venv/bin/python bench/bench_commits.py [--shards 4,64] [--seconds 20]

Simulated consumers and stage workers (threads, production cadence: a staged batch per
shard per second, a checkpoint every 5 s, a status report every 5 s, a lease renewal every
10 s) and the real loader (``Loader.step()`` with ``max_interval_s`` 5 s: a faster cadence
than production's 180 s, so a 20 s window holds several loads) run for ``--seconds``.

What is counted: only the commits of shardline's own sessions. Every component reaches the
warehouse database through a relay of its own (``shardline.devstack.relay.TcpRelay`` with
``count_commits``: it reads the wire protocol and counts each COMMIT a session sends), with
its ``application_name`` set (``shardline-loader``, ``shardline-control``), so each count
belongs to one component. PostgreSQL's own ``pg_stat_database.xact_commit`` of the database
is read too, before and after: the difference between it and shardline's commits is the
database's background work (autovacuum and analyze, catalog maintenance; the bench's own
reads are subtracted), reported apart and never counted as the pipeline's. The loader takes its
lease (its fence row and its first reconcile, two commits once per lease) before the window, so
the window shows the steady state; the distinct ``application_name`` values seen on the
database during the window say which components touched it at all.

Two layouts in the same run:
- the layout before issue 11 (baseline): the control store's tables in the warehouse
  database (a PostgresStore pointed at it), so every checkpoint, report, renewal and ledger
  entry is a warehouse commit;
- the control store off the warehouse (``shardline_control`` database): the warehouse sees
  the loads only.

Reports per layout: shardline's warehouse commits (per component, per second, per load) and
PostgreSQL's background commits. Starts its own stack.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402

from shardline import devstack, migrate  # noqa: E402
from shardline.devstack.relay import TcpRelay  # noqa: E402
from shardline.records.control import Checkpoint  # noqa: E402
from shardline.controlstore.postgres import PostgresStore  # noqa: E402
from shardline.settings import Settings  # noqa: E402
from shardline.loaders.loader import Loader  # noqa: E402
from tests.contract.loader_kit import page_view, stage_file  # noqa: E402


def commits(dsn: str, db: str) -> int:
    """PostgreSQL's count of the database's committed transactions (all sessions)."""
    time.sleep(1.2)  # PostgreSQL flushes its statistics about once a second
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (db,))
        n = cur.fetchone()[0]
    conn.close()
    return n


def via(relay: TcpRelay, dsn: str, component: str) -> str:
    """``dsn`` through the component's relay, its sessions named after it."""
    parts = [p for p in dsn.split() if not p.startswith(("host=", "port="))]
    return " ".join([f"host=127.0.0.1 port={relay.port}", *parts,
                     f"application_name=shardline-{component}"])


class Sessions(threading.Thread):
    """The application_names connected to the database, sampled while the window runs."""

    def __init__(self, dsn: str, db: str):
        super().__init__(daemon=True)
        self.dsn, self.db, self.seen, self.queries = dsn, db, set(), 0
        self.stop = threading.Event()

    def run(self) -> None:
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            while not self.stop.is_set():
                cur.execute("SELECT DISTINCT COALESCE(NULLIF(application_name, ''), "
                            "backend_type) FROM pg_stat_activity WHERE "
                            "datname = %s AND pid <> pg_backend_pid()", (self.db,))
                self.seen |= {r[0] for r in cur.fetchall()}
                self.queries += 1  # each one a (read-only) transaction of the database
                self.stop.wait(0.5)
        conn.close()


def run(info, shards: int, seconds: float, layout: str) -> dict:
    schema = f"b_{uuid.uuid4().hex[:8]}"
    upstream = ("127.0.0.1", info.pg_port)
    relays = {name: TcpRelay(upstream, count_commits=True).start()
              for name in ("loader", "control")}
    # baseline: the control tables in the warehouse database (a schema of their own there)
    control_dsn = via(relays["control"], info.direct_dsn, "control") \
        if layout == "baseline" else info.control_dsn
    cschema = f"{schema}_c"
    for dsn, name in ((info.direct_dsn, schema), (control_dsn, cschema)):
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute(f'CREATE SCHEMA "{name}"')
        conn.close()
    conn = psycopg2.connect(info.direct_dsn, options=f"-c search_path={schema}")
    migrate.migrate(conn, "postgres")
    conn.close()
    store = PostgresStore(control_dsn, cschema)
    store.create_tables()
    s3 = info.client("s3")
    prefix = f"bench-commits/{schema}"
    settings = Settings().replace(**{
        "warehouse.dsn": via(relays["loader"], info.direct_dsn, "loader"),
        "warehouse.schema": schema, "control.dsn": control_dsn, "control.schema": cschema,
        "s3.endpoint_url": info.s3_endpoint_url, "s3.bucket": info.bucket,
        "s3.prefix": prefix, "loader.max_interval_s": "5", "loader.poll_s": "0.5"})
    stop = threading.Event()
    stream = "bench"

    def shard(i: int) -> None:
        sid = f"shardId-{i:012d}"
        owner = f"bench:{i}"
        token = store.acquire_lease(stream, sid, owner, 30)
        n = 0
        start = time.monotonic()
        while not stop.is_set():
            n += 1
            rows = [page_view(i * 10_000_000 + n * 2 + j, n * 2 + j, shard=sid)
                    for j in range(2)]
            stage_file(s3, info.bucket, store, f"{prefix}/staged/{sid}/{n:06d}.csv.gz", rows,
                       shard=sid, stream=stream,
                       staged_at=datetime.now(timezone.utc).replace(tzinfo=None))
            if n % 5 == 0:
                store.checkpoint(stream, sid, owner, token, 30,
                                 Checkpoint(str(10 ** 55 + n * 2000), 0, True))
                store.report_status(stream, sid, owner=owner, state="reading")
            if n % 10 == 0:
                store.renew_lease(stream, sid, owner, token, 30)
            stop.wait(max(0.0, start + n - time.monotonic()))

    loader = Loader(settings, "page_views", s3=s3, store=store)
    assert loader.step().state == "idle"  # lease, fence row, first reconcile: once per lease
    # A backend reports its commits to pg_stat_database when it goes idle (at most once a
    # second, later if idle) and at exit: the loader's session is closed here (it reconnects
    # at its next transaction), the window's sessions before the count after it.
    loader.warehouse.close()
    time.sleep(1.0)  # let the relays count those before the window opens
    counted = {name: r.commits for name, r in relays.items()}
    sessions = Sessions(info.direct_dsn, "shardline")
    before = commits(info.direct_dsn, "shardline")
    sessions.start()
    threads = [threading.Thread(target=shard, args=(i,), daemon=True) for i in range(shards)]
    for t in threads:
        t.start()
    t0 = time.monotonic()
    loads = 0
    while time.monotonic() - t0 < seconds:
        r = loader.step()
        loads += r.state == "loaded"
        time.sleep(r.wait_s)
    stop.set()
    for t in threads:
        t.join(10)
    elapsed = time.monotonic() - t0
    loader.close()
    store.close()
    sessions.stop.set()
    sessions.join(5)
    time.sleep(0.5)
    ours = {name: r.commits - counted[name] for name, r in relays.items()}
    after = commits(info.direct_dsn, "shardline")
    for r in relays.values():
        r.stop()
    total = after - before - 1 - sessions.queries  # the bench's own transactions
    shardline_commits = sum(ours.values())
    return {"layout": layout, "shards": shards, "seconds": round(elapsed, 1),
            "loads": loads,
            "shardline_commits": shardline_commits,
            "shardline_commits_per_s": round(shardline_commits / elapsed, 2),
            "loader_commits": ours["loader"],
            "loader_commits_per_load": round(ours["loader"] / loads, 2) if loads else None,
            "control_store_commits_on_warehouse": ours["control"],
            "postgres_total_commits": total,
            "postgres_background_commits": total - shardline_commits,
            "sessions_seen": sorted(sessions.seen)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shards", default="4,64")
    ap.add_argument("--seconds", type=float, default=20)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-commits-"))
    info = devstack.up(tmp)
    results = []
    try:
        for shards in (int(x) for x in a.shards.split(",")):
            for layout in ("baseline", "control-store"):
                r = run(info, shards, a.seconds, layout)
                results.append(r)
                print(json.dumps(r), flush=True)
    finally:
        devstack.down(tmp)
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "commits.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
