#!/usr/bin/env python
"""Loader throughput into PostgreSQL, beside a bare COPY of the same data (same run).

    .venv/bin/python bench/bench_loader.py [--rows 200000] [--files 400] [--repeat 3]

Stages ``--files`` gzip'd CSV objects (``--rows`` page views in all) in S3 once, then
``--repeat`` times, each in a fresh schema:

- loader: ledger rows inserted as ``pending``, then ONE ``Loader.step()`` timed end to
  end: trigger query, lock, re-read, manifest put, 400 S3 GETs streamed and gunzipped
  into one ``COPY FROM STDIN``, dedup merge into ``page_views`` (primary key + position
  index), ledger UPDATE, ``loads`` row, watermarks, commit;
- merge-again: the same step over the same files staged again under new keys (every row
  is a duplicate: the cost of the dedup merge against a 200k-row target);
- baseline: the same CSV, already fetched and decompressed in memory, through a bare
  psycopg2 ``copy_expert`` into an empty UNLOGGED table with the same columns and no
  index, committed: the ceiling for getting these bytes into PostgreSQL;
- indexed (context): the same bare COPY into a logged table with page_views' indexes;
- s3-read: fetching and gunzipping the 400 objects alone (what the loader adds to COPY).

Reports medians (rows/s) and loader/baseline ratios. Uses the stack from the
environment when SHARDLINE_WAREHOUSE_DSN and SHARDLINE_S3_BUCKET are set, otherwise
starts its own with ``shardline.devstack.up(tmpdir)`` and stops it at the end.
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from typing import Any
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shardline import clients, csvformat, migrate  # noqa: E402
from shardline.settings import Settings  # noqa: E402
from shardline.tables import PAGE_VIEWS  # noqa: E402
from shardline.records.ledger import StagedFile  # noqa: E402
from shardline.controlstore import MemoryStore  # noqa: E402
from shardline.loaders.warehouse.plan import Manifest  # noqa: E402
from shardline.loaders.warehouse.postgres_dialect import ManifestReader  # noqa: E402
from shardline.loaders.loader import Loader  # noqa: E402

SHARDS = [f"shardId-{i:012d}" for i in range(4)]
T0 = datetime(2026, 1, 1, 0, 0, 0)


def make_rows(n: int, shard: str, start: int) -> list[list]:
    rows = []
    for i in range(start, start + n):
        t = T0 + timedelta(milliseconds=i * 7)
        rows.append([
            str(uuid.UUID(int=i + (SHARDS.index(shard) << 64))), t,
            f"https://shop.example.com/products/{i % 5000}?ref=nav&page={i % 7}",
            "shop.example.com", f"/products/{i % 5000}", f"ref=nav&page={i % 7}",
            "https://www.google.com/" if i % 3 else None, "www.google.com" if i % 3 else None,
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/120.0 Safari/537.36", ("desktop", "mobile", "tablet")[i % 3],
            f"203.0.{i % 256}.0/24", f"user-{i % 10007}" if i % 2 else None,
            f"sess-{i // 20}", shard, str(10 ** 55 + i * 1000), 0,
            t + timedelta(milliseconds=40), t + timedelta(seconds=1)])
    return rows


def stack_env(tmp: Path) -> tuple[dict, object]:
    if os.environ.get("SHARDLINE_WAREHOUSE_DSN") and os.environ.get("SHARDLINE_S3_BUCKET"):
        return dict(os.environ), None
    from shardline import devstack  # written by another engineer

    info = devstack.up(str(tmp))
    env = info.env() if hasattr(info, "env") else dict(info)
    os.environ.update(env)
    return env, devstack


def settings_for(env: dict, schema: str, prefix: str) -> Settings:
    return Settings().replace(**{
        "warehouse.dsn": env["SHARDLINE_WAREHOUSE_DSN"], "warehouse.schema": schema,
        "s3.endpoint_url": env.get("SHARDLINE_S3_ENDPOINT_URL", ""),
        "s3.bucket": env["SHARDLINE_S3_BUCKET"], "s3.prefix": prefix,
        "loader.max_interval_s": "0", "loader.max_files_per_load": "100000",
        "log.level": "WARNING"})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--files", type=int, default=400)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    per_file = args.rows // args.files
    total = per_file * args.files

    with tempfile.TemporaryDirectory(prefix="bench-loader-") as tmp:
        env, devstack = stack_env(Path(tmp))
        try:
            return run(env, args, per_file, total)
        finally:
            if devstack is not None:
                devstack.down(tmp)



def bare_copy(conn: Any, create_sql: str, table: str, csv_all: bytes) -> float:
    """Seconds for one plain COPY FROM STDIN of the CSV into a fresh table."""
    with conn.cursor() as cur:
        cur.execute(create_sql)
    conn.commit()
    t = time.perf_counter()
    with conn.cursor() as cur:
        cur.copy_expert(f"COPY {table} ({', '.join(PAGE_VIEWS.column_names)}) FROM STDIN WITH "
                        f"{csvformat.POSTGRES_COPY_OPTIONS}", io.BytesIO(csv_all),
                        size=256 * 1024)
    conn.commit()
    return time.perf_counter() - t

def run(env: dict, args: argparse.Namespace, per_file: int, total: int) -> int:
    prefix = f"bench-loader-{uuid.uuid4().hex[:8]}"
    base = settings_for(env, "public", prefix)
    s3 = clients.s3_client(base)
    bucket = base.s3.bucket
    try:
        s3.create_bucket(Bucket=bucket)
    except Exception:  # noqa: BLE001 - exists already
        pass

    # -- stage the files once ------------------------------------------------------------
    t = time.perf_counter()
    files = []  # (key, shard, first, last, rows, size, csv bytes)
    for f in range(args.files):
        shard = SHARDS[f % len(SHARDS)]
        start = f * per_file
        rows = make_rows(per_file, shard, start)
        csv = "".join(csvformat.format_row(r) for r in rows).encode()
        body = gzip.compress(csv, compresslevel=6)
        key = f"{prefix}/staged/page_views/bench/{shard}/{f:05d}.csv.gz"
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        files.append((key, shard, rows[0][14], rows[-1][14], len(rows), len(body), csv))
    raw = sum(len(f[6]) for f in files)
    packed = sum(f[5] for f in files)
    print(f"staged {args.files} files, {total} rows, {raw / 1e6:.1f} MB CSV, "
          f"{packed / 1e6:.1f} MB gzip in {time.perf_counter() - t:.1f}s", flush=True)
    csv_all = b"".join(f[6] for f in files)

    admin = clients.warehouse_connect(base, autocommit=True)
    loader_s, merge_s, base_s, s3_s, idx_s = [], [], [], [], []
    steps: list[dict] = []
    for rep in range(args.repeat):
        schema = f"bench_loader_{uuid.uuid4().hex[:8]}"
        with admin.cursor() as cur:
            cur.execute(f'CREATE SCHEMA "{schema}"')
        cfg = settings_for(env, schema, prefix)
        conn = clients.warehouse_connect(cfg)
        migrate.migrate(conn, "postgres")
        conn.autocommit = True

        store = MemoryStore()  # the ledger is the control store's; in memory here

        def ledger(suffix: str, store: MemoryStore = store) -> None:
            for key, shard, first, last, n, size, _ in files:
                store.record_file(StagedFile(
                    s3_key=key + suffix, target_table="page_views", stream="bench",
                    shard_id=shard, first_sequence=first, first_sub_sequence=0,
                    last_sequence=last, last_sub_sequence=0, row_count=n, byte_count=size,
                    staged_at=T0))

        # loader, into an empty target
        ledger("")
        loader = Loader(cfg, "page_views", s3=s3, store=store)
        t = time.perf_counter()
        result = loader.step()
        loader_s.append(time.perf_counter() - t)
        assert result.state == "loaded" and result.load.rows_inserted == total, result
        steps.append(result.load.timings)

        # the same files again under new keys: all duplicates (merge cost on a full target)
        with conn.cursor() as cur:
            for key, *_ in files:
                s3.copy_object(Bucket=bucket, Key=key + ".again",
                               CopySource={"Bucket": bucket, "Key": key})
        ledger(".again")
        t = time.perf_counter()
        result = loader.step()
        merge_s.append(time.perf_counter() - t)
        assert result.state == "loaded" and result.load.rows_inserted == 0, result
        loader.close()

        # baseline: bare copy_expert of the same decompressed CSV into an UNLOGGED table;
        # context: the same bare COPY into a LOGGED table with page_views' indexes
        conn.autocommit = False
        base_s.append(bare_copy(conn, "CREATE UNLOGGED TABLE bare (LIKE page_views "
                                      "INCLUDING DEFAULTS)", "bare", csv_all))
        idx_s.append(bare_copy(conn, "CREATE TABLE bare_idx (LIKE page_views INCLUDING ALL)",
                               "bare_idx", csv_all))
        conn.autocommit = True

        # S3 fetch + gunzip alone, as the loader streams it
        manifest = Manifest(bucket, "x", tuple(
            StagedFile(s3_key=k, target_table="page_views", stream="bench", shard_id=sh,
                       first_sequence=a, first_sub_sequence=0, last_sequence=b,
                       last_sub_sequence=0, row_count=n, byte_count=size, staged_at=T0)
            for k, sh, a, b, n, size, _ in files))
        t = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            reader = ManifestReader(s3, manifest, pool, 4)
            got = 0
            while chunk := reader.read(256 * 1024):
                got += len(chunk)
        s3_s.append(time.perf_counter() - t)
        assert got == raw
        conn.close()
        with admin.cursor() as cur:
            cur.execute(f'DROP SCHEMA "{schema}" CASCADE')
        print(f"run {rep + 1}: loader {loader_s[-1]:.2f}s, merge-again {merge_s[-1]:.2f}s, "
              f"baseline {base_s[-1]:.2f}s, indexed {idx_s[-1]:.2f}s, s3-read {s3_s[-1]:.2f}s",
              flush=True)
    admin.close()

    med = {k: statistics.median(v) for k, v in
           (("loader", loader_s), ("merge_again", merge_s), ("baseline", base_s),
            ("indexed", idx_s), ("s3_read", s3_s))}
    print()
    print(f"{'median of ' + str(args.repeat):<34}{'seconds':>9}{'rows/s':>12}")
    for name, label in (("loader", "loader step (empty target)"),
                        ("merge_again", "loader step (all duplicates)"),
                        ("baseline", "bare copy_expert, UNLOGGED"),
                        ("indexed", "bare copy_expert, logged+indexes"),
                        ("s3_read", "S3 GET + gunzip only")):
        print(f"{label:<34}{med[name]:>9.2f}{total / med[name]:>12,.0f}")
    for name in steps[0]:
        sec = statistics.median(st[name] for st in steps)
        if sec >= 0.01:
            print(f"  loader step {name:<22}{sec:>9.2f}")
    print(f"loader / baseline: {med['loader'] / med['baseline']:.2f}x the time "
          f"({med['baseline'] / med['loader']:.0%} of bare COPY throughput); "
          f"loader / logged+indexed COPY: {med['loader'] / med['indexed']:.2f}x")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "bench_loader.json").write_text(json.dumps({
        "rows": total, "files": args.files, "repeat": args.repeat,
        "loader_steps": steps,
        "seconds": {"loader": loader_s, "merge_again": merge_s, "baseline": base_s,
                    "indexed": idx_s, "s3_read": s3_s},
        "median_rows_per_s": {k: total / v for k, v in med.items()}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
