#!/usr/bin/env python
"""Load time as the target grows (1 M -> 20 M rows), redshift-like mode: the dedup merge
bounded by the sort key beside today's unbounded one, in the same run.

    .venv/bin/python bench/bench_dedup.py [--sizes 1,5,20] [--batch 4000] [--repeat 3]

The warehouse is the redshift-like stand-in (``devstack up --warehouse redshift-like``,
commit latency 0 so only the merge is measured): no index on event_id (Redshift has none),
a BRIN index on occurred_at (its zone maps). ``page_views`` is filled with ``--sizes``
million rows in arrival (occurred_at) order. At each size, ``--repeat`` times per variant, a
load of ``--batch`` new rows in 8 staged files (10% of them copies of events already stored
near the tip, as a replay would stage) is timed end to end (``Loader.load``):

- bounded: ``DELETE ... USING page_views WHERE event_id = ... AND occurred_at BETWEEN
  min - 1 h AND max + 1 h`` (the shipped plan);
- unbounded: the same table spec without a sort key (the plan before issue 11): the join
  reads every event_id ever stored.

Reports medians (seconds) and each size's ratio to the 1 M figure of the same variant.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg2  # noqa: E402

from shardline import devstack, migrate  # noqa: E402
from shardline.controlstore import MemoryStore  # noqa: E402
from shardline.settings import Settings  # noqa: E402
from shardline.tables import PAGE_VIEWS  # noqa: E402
from shardline.loaders.loader import Loader  # noqa: E402
from tests.contract.loader_kit import page_view, stage_file  # noqa: E402

T0 = datetime(2026, 1, 1)
STEP_MS = 10  # one event every 10 ms: 20 M rows span ~2.3 days


def fill(conn, start: int, stop: int) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO page_views SELECT '00000000-0000-4000-8000-' || lpad(i::text, 12, '0'), "
            "%s + i * interval '10 milliseconds', 'https://shop.example.com/p/' || (i %% 5000), "
            "'shop.example.com', '/p/' || (i %% 5000), NULL, NULL, NULL, 'Mozilla/5.0', "
            "'desktop', '203.0.113.0/24', NULL, 's-' || (i / 20), 'shardId-000000000000', "
            "'1' || lpad(i::text, 55, '0'), 0, %s + i * interval '10 milliseconds', "
            "%s + i * interval '10 milliseconds', %s FROM generate_series(%s, %s - 1) AS i",
            (T0, T0, T0, T0, start, stop))
    conn.commit()
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("VACUUM ANALYZE page_views")
    conn.autocommit = False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1,5,20", help="millions of rows")
    ap.add_argument("--batch", type=int, default=4000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-dedup-"))
    info = devstack.up(tmp, warehouse="redshift-like", commit_latency_ms=0)
    schema = f"b_{uuid.uuid4().hex[:8]}"
    results = []
    try:
        conn = psycopg2.connect(info.direct_dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE SCHEMA "{schema}"')
            cur.execute(f'SET search_path TO "{schema}"')
        migrate.migrate(conn, "redshift-like")
        conn.autocommit = False
        s3 = info.client("s3")
        settings = Settings().replace(**{
            "warehouse.dsn": info.direct_dsn, "warehouse.schema": schema,
            "s3.endpoint_url": info.s3_endpoint_url, "s3.bucket": info.bucket,
            "s3.prefix": f"bench-dedup/{schema}", "loader.max_interval_s": "0",
            "loader.dedup_window_s": "3600"})
        stored, fresh, n_load = 0, 10 ** 9, 0
        for size in (int(x) * 1_000_000 for x in a.sizes.split(",")):
            fill(conn, stored, size)
            stored = size
            print(f"target: {size:,} rows", flush=True)
            row = {"rows": size}
            for variant in ("bounded", "unbounded"):
                times = []
                for _ in range(a.repeat):
                    store = MemoryStore()
                    tip = T0 + timedelta(milliseconds=STEP_MS * stored)
                    per_file = a.batch // 8
                    for f in range(8):
                        rows = []
                        for j in range(per_file):
                            if j % 10 == 0:  # a copy of an event stored near the tip
                                i = stored - 1 - (f * per_file + j)
                                rows.append(page_view(
                                    f"00000000-0000-4000-8000-{i:012d}", str(10 ** 55 + i),
                                    occurred_at=T0 + timedelta(milliseconds=STEP_MS * i)))
                            else:
                                fresh += 1
                                rows.append(page_view(fresh, str(10 ** 56 + fresh),
                                                      occurred_at=tip + timedelta(
                                                          milliseconds=f * per_file + j)))
                        n_load += 1
                        stage_file(s3, info.bucket, store,
                                   f"bench-dedup/{schema}/staged/{n_load:06d}.csv.gz", rows,
                                   staged_at=datetime.utcnow())
                    loader = Loader(settings, "page_views", s3=s3, store=store)
                    if variant == "unbounded":
                        loader.spec = dataclasses.replace(PAGE_VIEWS, sort_key=None)
                    assert loader.hold_lease()
                    t0 = time.perf_counter()
                    result = loader.load("bench")
                    times.append(time.perf_counter() - t0)
                    assert result is not None and result.rows_inserted == \
                        a.batch - a.batch // 10, result
                    loader.close()
                row[variant] = round(statistics.median(times), 3)
                print(f"  {variant:9s} median {row[variant]:.3f}s  ({times})", flush=True)
            results.append(row)
        for row in results:
            for variant in ("bounded", "unbounded"):
                row[f"{variant}_vs_first"] = round(row[variant] / results[0][variant], 2)
        print(json.dumps(results, indent=1))
        out = ROOT / "bench" / "results"
        out.mkdir(exist_ok=True)
        (out / "dedup.json").write_text(json.dumps(results, indent=1) + "\n")
    finally:
        devstack.down(tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
