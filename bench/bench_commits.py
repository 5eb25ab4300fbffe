#!/usr/bin/env python
"""Commits per second the pipeline puts on the warehouse, at 4 and 64 shards.

    .venv/bin/python bench/bench_commits.py [--shards 4,64] [--seconds 20]

Simulated consumers and stage workers (threads, production cadence: a staged batch per
shard per second, a checkpoint every 5 s, a status report every 5 s, a lease renewal every
10 s) and the real loader (``Loader.step()`` with ``max_interval_s`` 5 s: a faster cadence
than production's 180 s, so a 20 s window holds several loads) run for ``--seconds``. The
warehouse's commits are counted by PostgreSQL itself (``pg_stat_database.xact_commit`` of the
warehouse database, before and after, idle connections excluded by the same-run idle window).

Two layouts in the same run:
- today's layout before issue 11 (baseline): the control store's tables in the warehouse
  database (a PostgresStore pointed at it), so every checkpoint, report, renewal and ledger
  entry is a warehouse commit;
- the control store off the warehouse (``shardline_control`` database): the warehouse sees
  the loads only.

Reports warehouse commits/s, loads, commits per load. Starts its own stack.
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
from shardline.control import Checkpoint  # noqa: E402
from shardline.controlstore.postgres import PostgresStore  # noqa: E402
from shardline.settings import Settings  # noqa: E402
from shardline.workers.loader import Loader  # noqa: E402
from tests.contract.loader_kit import page_view, stage_file  # noqa: E402


def commits(dsn: str, db: str) -> int:
    time.sleep(1.2)  # PostgreSQL flushes its statistics about once a second
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = %s", (db,))
        n = cur.fetchone()[0]
    conn.close()
    return n


def run(info, shards: int, seconds: float, layout: str) -> dict:
    schema = f"b_{uuid.uuid4().hex[:8]}"
    # baseline: the control tables in the warehouse database (a schema of their own there)
    control_dsn = info.direct_dsn if layout == "baseline" else info.control_dsn
    cschema = f"{schema}_c"
    for dsn, name in ((info.direct_dsn, schema), (control_dsn, cschema)):
        with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
            cur.execute(f'CREATE SCHEMA "{name}"')
        conn.close()
    conn = psycopg2.connect(info.direct_dsn, options=f"-c search_path={schema}")
    migrate.migrate(conn, "postgres")
    with conn.cursor() as cur:  # autovacuum's transactions would count as commits too
        for table in ("page_views", "loaded_files", "loads", "load_fence"):
            cur.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    conn.commit()
    conn.close()
    store = PostgresStore(control_dsn, cschema)
    store.create_tables()
    if layout == "baseline":
        with psycopg2.connect(control_dsn, options=f"-c search_path={cschema}") as c, \
                c.cursor() as cur:
            for table in ("shard_leases", "checkpoints", "checkpoint_history", "shard_status",
                          "staged_files"):
                cur.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        c.close()
    s3 = info.client("s3")
    prefix = f"bench-commits/{schema}"
    settings = Settings().replace(**{
        "warehouse.dsn": info.direct_dsn, "warehouse.schema": schema,
        "control.dsn": control_dsn, "control.schema": cschema,
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
    before = commits(info.direct_dsn, "shardline")
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
    after = commits(info.direct_dsn, "shardline")
    loader.close()
    store.close()
    warehouse_commits = after - before - 1  # our own counting transaction
    return {"layout": layout, "shards": shards, "seconds": round(elapsed, 1),
            "warehouse_commits": warehouse_commits,
            "warehouse_commits_per_s": round(warehouse_commits / elapsed, 2),
            "loads": loads,
            "commits_per_load": round(warehouse_commits / loads, 2) if loads else None}


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
