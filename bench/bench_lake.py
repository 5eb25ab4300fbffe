#!/usr/bin/env python
"""The lake beside the warehouse: loader throughput and CPU, what a one-column query
reads, and latency to queryable, each against the warehouse in the same run.

    .venv/bin/python bench/bench_lake.py [--rows 100000] [--files 200] [--rounds 3]
                                         [--latency-rate 1700] [--latency-events 30000]

One local stack (``shardline.devstack.up``), three measurements:

1. **Loaders on the same staged files**: ``--files`` gzip CSV objects (``--rows`` page
   views, bench_loader's rows) are staged once; each round loads them into a fresh
   warehouse schema with ONE ``Loader.step()`` and into a fresh Iceberg table with
   ``LakeLoader.step()`` (until nothing is lake-pending), alternating which goes first.
   Per loader: rows/s (wall) and CPU per row, split into the loader's own process
   (``time.process_time``: the bench process, every thread), this stack's PostgreSQL
   (the postmaster and its backends) and this stack's moto S3, from /proc. Medians.
2. **Latency to queryable at the demo's cadence** (``DEMO_SETTINGS``, 2 stage workers,
   4 shards, page_views in both targets): the producer puts ``--latency-events`` at
   ``--latency-rate``; the warehouse's latency is ``loaded_at - arrival_time`` (the
   pipeline benchmark's), the lake's the commit time of the snapshot that added the row's
   data file minus its ``arrival_time`` (a pyiceberg scan sees a row from that commit on).
   A warm-up of ``WARMUP`` events lands in both first: the fleet's start is not measured.
3. **Bytes a one-column aggregate reads**, over that run's data:
   ``count(DISTINCT session_id)`` over the lake (the files pyiceberg plans for a scan of
   that column, each opened with pyarrow through a file object that counts the bytes
   actually read: pyarrow's speculative footer read and the column's chunks; and the least
   any engine needs, the column's chunks plus each footer, from the Parquet metadata),
   as loaded and again after ``shardline lake compact``, beside the same aggregate over
   the raw gzip archive of JSON records (every object read whole: JSON has no column to
   skip to). The three answers (lake, archive, warehouse) are checked equal.
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
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import pyarrow.parquet as pq  # noqa: E402

from bench_loader import SHARDS, T0, make_rows  # noqa: E402
from shardline import clients, codec, csvformat, devstack, migrate  # noqa: E402
from shardline.controlstore import MemoryStore  # noqa: E402
from shardline.devstack.fleet import DEMO_SETTINGS as DEMO  # noqa: E402
from shardline.devstack.fleet import Fleet, control_query, shardline, wait_for  # noqa: E402
from shardline.devstack.fleet import warehouse_query as query  # noqa: E402
from shardline.lake import catalog as lake_catalog  # noqa: E402
from shardline.layout import ARCHIVE  # noqa: E402
from shardline.loaders.lake.loader import LakeLoader  # noqa: E402
from shardline.loaders.loader import Loader  # noqa: E402
from shardline.records.ledger import PENDING, StagedFile  # noqa: E402
from shardline.settings import Settings, load as load_settings  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")
EPOCH = datetime(1970, 1, 1)
WARMUP = 200  # events landed in both targets before the latency run is measured


# -- CPU of this stack's servers ---------------------------------------------------------

def _proc_cpu(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process, None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def server_cpu(postmaster: int, moto_port: str) -> dict[int, tuple[str, float]]:
    """pid -> (server, CPU seconds so far) of this stack's PostgreSQL (the postmaster and
    its backends) and moto server (other engineers' stacks on the machine are left out)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        got = _proc_cpu(pid)
        if got is None:
            continue
        ppid, secs = got
        if pid == postmaster or ppid == postmaster:
            out[pid] = ("postgres", secs)
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "devstack.moto_server" in cmd and f" {moto_port}" in cmd:
            out[pid] = ("moto", secs)
    return out


def cpu_delta(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
              ) -> dict[str, float]:
    """CPU seconds per server between two snapshots, of the processes alive at the second
    (a backend that ended in between, another load's, is left out)."""
    out = {"postgres": 0.0, "moto": 0.0}
    for pid, (name, secs) in after.items():
        out[name] += secs - before.get(pid, (name, 0.0))[1]
    return out


Snapshot = dict[int, tuple[str, float]]


def timed(fn: Callable[[], Snapshot], cpu: Callable[[], Snapshot]) -> dict[str, float]:
    """Wall seconds and CPU seconds (this process, the servers) of ``fn()``, which returns
    ``cpu()`` read before it closes its connections (a backend's CPU goes with it)."""
    before, own, t = cpu(), time.process_time(), time.perf_counter()
    after = fn()
    wall, own = time.perf_counter() - t, time.process_time() - own
    return {"wall": wall, "loader": own, **cpu_delta(before, after)}


# -- 1. the two loaders on the same staged files ---------------------------------------------

def stage_files(s3: Any, bucket: str, prefix: str, files: int, per_file: int
                ) -> list[tuple[str, str, str, str, int, int]]:
    out = []
    for f in range(files):
        shard = SHARDS[f % len(SHARDS)]
        rows = make_rows(per_file, shard, f * per_file)
        body = gzip.compress("".join(csvformat.format_row(r) for r in rows).encode(), 6)
        key = f"{prefix}/staged/page_views/bench/{shard}/{f:05d}.csv.gz"
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        out.append((key, shard, rows[0][14], rows[-1][14], len(rows), len(body)))
    return out


def ledger(files: list[tuple[str, str, str, str, int, int]]) -> MemoryStore:
    store = MemoryStore()  # the ledger is the control store's; in memory here
    for key, shard, first, last, n, size in files:
        store.record_file(StagedFile(
            s3_key=key, target_table="page_views", stream="bench", shard_id=shard,
            first_sequence=first, first_sub_sequence=0, last_sequence=last,
            last_sub_sequence=0, row_count=n, byte_count=size, staged_at=T0,
            lake_state=PENDING, transform_version="bench"))
    return store


def loader_rounds(env: dict[str, str], args: argparse.Namespace, postmaster: int,
                  moto_port: str) -> dict[str, list[dict[str, float]]]:
    per_file = args.rows // args.files
    total = per_file * args.files
    prefix = f"bench-lake-{uuid.uuid4().hex[:8]}"
    base = Settings().replace(**{
        "warehouse.dsn": env["SHARDLINE_WAREHOUSE_DSN"],
        "s3.endpoint_url": env["SHARDLINE_S3_ENDPOINT_URL"],
        "s3.bucket": env["SHARDLINE_S3_BUCKET"], "s3.prefix": prefix,
        "lake.tables": "page_views", "lake.catalog": "sql",
        "lake.catalog_uri": env["SHARDLINE_LAKE_CATALOG_URI"],
        "loader.max_interval_s": "0", "loader.max_files_per_load": "100000",
        "log.level": "WARNING"})
    s3 = clients.s3_client(base)
    t = time.perf_counter()
    files = stage_files(s3, base.s3.bucket, prefix, args.files, per_file)
    print(f"staged {args.files} files, {total:,} rows, "
          f"{sum(f[5] for f in files) / 1e6:.1f} MB gzip in {time.perf_counter() - t:.1f}s",
          flush=True)
    admin = clients.warehouse_connect(base, autocommit=True)

    def cpu() -> Snapshot:
        return server_cpu(postmaster, moto_port)

    results: dict[str, list[dict[str, float]]] = {"warehouse": [], "lake": []}
    for rnd in range(args.rounds):
        schema = f"bench_lake_{uuid.uuid4().hex[:8]}"
        with admin.cursor() as cur:
            cur.execute(f'CREATE SCHEMA "{schema}"')
        cfg = base.replace(**{"warehouse.schema": schema, "lake.namespace": schema})
        conn = clients.warehouse_connect(cfg)
        migrate.migrate(conn, "postgres")
        conn.close()
        lake_catalog.migrate(cfg)

        def warehouse(cfg: Settings = cfg) -> Snapshot:
            store = ledger(files)
            loader = Loader(cfg, "page_views", s3=s3, store=store)
            result = loader.step()
            assert result.state == "loaded" and result.load is not None \
                and result.load.rows_inserted == total, result
            after = cpu()
            loader.close()
            return after

        def lake(cfg: Settings = cfg) -> Snapshot:
            store = ledger(files)
            loader = LakeLoader(cfg, "page_views", s3=s3, store=store)
            while store.lake_pending_stats("page_views").files:
                assert loader.step().state == "loaded"
            after = cpu()
            loader.release()
            loader.close()
            return after

        order = [("warehouse", warehouse), ("lake", lake)]
        for name, fn in order if rnd % 2 == 0 else order[::-1]:
            results[name].append(timed(fn, cpu))
        got = lake_catalog.open_table(cfg, "page_views").scan(
            selected_fields=("event_id",)).count()
        assert got == total, (got, total)
        with admin.cursor() as cur:
            cur.execute(f'DROP SCHEMA "{schema}" CASCADE')
        print(f"round {rnd + 1}: " + ", ".join(
            f"{name} {results[name][-1]['wall']:.2f}s" for name, _ in order), flush=True)
    admin.close()
    return results


def report_loaders(results: dict[str, list[dict[str, float]]], total: int) -> dict[str, Any]:
    med = {name: {k: statistics.median(r[k] for r in runs) for k in runs[0]}
           for name, runs in results.items()}
    print(f"\nloaders on the same {total:,} staged rows, median of {len(results['lake'])}:")
    print(f"  {'':<10}{'rows/s':>10}{'CPU us/row: loader':>21}{'postgres':>10}{'moto':>8}"
          f"{'total':>8}")
    for name, m in med.items():
        cpu = m["loader"] + m["postgres"] + m["moto"]
        print(f"  {name:<10}{total / m['wall']:>10,.0f}{m['loader'] / total * 1e6:>21.1f}"
              f"{m['postgres'] / total * 1e6:>10.1f}{m['moto'] / total * 1e6:>8.1f}"
              f"{cpu / total * 1e6:>8.1f}")
    ratio = med["warehouse"]["wall"] / med["lake"]["wall"]
    print(f"  lake / warehouse throughput: {ratio:.2f}x")
    return {"median": med, "lake_over_warehouse_rows_per_s": ratio}


# -- 2. latency to queryable, 3. what a one-column query reads -------------------------------

def lake_latencies(table: Any, since: datetime) -> list[float]:
    """Per row arrived from ``since`` on: the commit time of the snapshot that added its
    data file minus its arrival time (seconds)."""
    committed = {s.snapshot_id: s.timestamp_ms / 1000 for s in table.snapshots()}
    entries = table.inspect.entries().to_pylist()
    added_by = {e["data_file"]["file_path"]: e["snapshot_id"] for e in entries
                if e["status"] == 1}  # ADDED
    out: list[float] = []
    for task in table.scan().plan_files():
        path = task.file.file_path
        with table.io.new_input(path).open() as f:
            arrivals = pq.read_table(f, columns=["arrival_time"]).column(0).to_pylist()
        at = committed[added_by[path]]
        out += [at - (a - EPOCH).total_seconds() for a in arrivals if a >= since]
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Counting(io.RawIOBase):
    """A file object that counts the bytes read through it."""

    def __init__(self, inner: Any):
        self.inner, self.read_bytes = inner, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return int(self.inner.seek(offset, whence))

    def tell(self) -> int:
        return int(self.inner.tell())

    def readinto(self, b: Any) -> int:
        data = self.inner.read(len(b))
        b[:len(data)] = data
        self.read_bytes += len(data)
        return len(data)


def lake_column_read(table: Any, column: str) -> tuple[int, int, int, set[str]]:
    """(bytes read, data files, their total size, the column's distinct values)."""
    read = size = files = 0
    values: set[str] = set()
    for task in table.scan(selected_fields=(column,)).plan_files():
        with table.io.new_input(task.file.file_path).open() as raw:
            f = Counting(raw)
            values.update(pq.ParquetFile(f).read(columns=[column]).column(0).to_pylist())
            read += f.read_bytes
        size += task.file.file_size_in_bytes
        files += 1
    return read, files, size, values


def archive_column_read(s3: Any, bucket: str, prefix: str, column: str
                        ) -> tuple[int, int, set[str]]:
    """(bytes read, objects, the field's distinct values) over the raw archive, each
    record once (a retried batch's object holds the same records)."""
    read = objects = 0
    values: set[str] = set()
    seen: set[tuple[str, str, int]] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{prefix}/{ARCHIVE}/"):
        for obj in page.get("Contents", []):
            body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
            read += len(body)
            objects += 1
            batch = codec.decode(gzip.decompress(body))
            for rec in batch.records:
                pos = (batch.shard_id, rec.sequence_number, rec.sub_sequence_number)
                if pos not in seen:
                    seen.add(pos)
                    values.add(json.loads(rec.data)[column])
    return read, objects, values


def produce(env: dict[str, str], work: Path, stream: str, count: int, rate: int,
            seed: int) -> int:
    summary = work / f"produce-{seed}.json"
    shardline("produce", "--stream", stream, "--count", str(count), "--rate", str(rate),
              "--bad-fraction", "0", "--seed", str(seed), "--summary-json", str(summary),
              "--quiet", env=env, timeout=count / rate * 3 + 120)
    return int(json.loads(summary.read_text())["good"])


def wait_both(env: dict[str, str], rows: int) -> None:
    wait_for(lambda: query(env, "SELECT count(*) FROM page_views")[0][0] >= rows and
             control_query(env, "SELECT count(*) FROM staged_files WHERE lake_state = "
                                "'pending'")[0][0] == 0, 180, f"{rows} rows in both", every=0.5)


def lake_reads(table: Any, column: str) -> dict[str, int]:
    read, files, size, values = lake_column_read(table, column)
    minimum = 0  # what the query needs at least: the column's chunks and each footer
    for task in table.scan(selected_fields=(column,)).plan_files():
        with table.io.new_input(task.file.file_path).open() as f:
            meta = pq.ParquetFile(f).metadata
        idx = meta.schema.names.index(column)
        minimum += meta.serialized_size + 8 + sum(
            meta.row_group(g).column(idx).total_compressed_size
            for g in range(meta.num_row_groups))
    return {"read": read, "minimum": minimum, "files": files, "bytes": size,
            "answer": len(values)}


def latency_run(base_env: dict[str, str], work: Path, rate: int, count: int
                ) -> dict[str, Any]:
    stream = f"bench-lake-latency-{int(time.time())}"
    schema = "bench_lake_latency"
    env = {**base_env, **DEMO, "SHARDLINE_WAREHOUSE_SCHEMA": schema,
           "SHARDLINE_CONTROL_SCHEMA": schema, "SHARDLINE_S3_PREFIX": "bench/lake-latency",
           "SHARDLINE_KINESIS_STREAM": stream, "SHARDLINE_LAKE_TABLES": "page_views",
           "SHARDLINE_LAKE_NAMESPACE": schema}
    shardline("create-stream", "--stream", stream, "--shards", "4", env=env)
    shardline("migrate", env=env)
    fleet = Fleet(work / "latency", env, stream, 2)
    fleet.start()
    try:
        # a warm-up until both targets hold it: the fleet's start is not measured
        warm = produce(env, work, stream, WARMUP, rate, seed=4)
        wait_both(env, warm)
        since = query(env, "SELECT now() AT TIME ZONE 'UTC'")[0][0]
        good = warm + produce(env, work, stream, count, rate, seed=5)
        wait_both(env, good)
    except TimeoutError:
        print(fleet.logs(400), file=sys.stderr)
        raise
    finally:
        fleet.stop()
    (p50, p99, n), = query(env, """
        SELECT percentile_cont(0.5) WITHIN GROUP
                   (ORDER BY extract(epoch FROM loaded_at - arrival_time)),
               percentile_cont(0.99) WITHIN GROUP
                   (ORDER BY extract(epoch FROM loaded_at - arrival_time)), count(*)
        FROM page_views WHERE arrival_time >= %s""", (since,))
    cfg = load_settings(None, env)
    table = lake_catalog.open_table(cfg, "page_views")
    lake = lake_latencies(table, since)
    assert len(lake) == n == count, (len(lake), n, count)
    column = "session_id"
    loaded = lake_reads(table, column)
    s3 = clients.s3_client(cfg)
    arch_read, arch_objects, arch_values = archive_column_read(
        s3, cfg.s3.bucket, cfg.s3.prefix, column)
    (wh_distinct,), = query(env, f"SELECT count(DISTINCT {column}) FROM page_views")
    assert loaded["answer"] == len(arch_values) == wh_distinct
    shardline("lake", "compact", "--table", "page_views", env=env)  # the documented upkeep
    table = lake_catalog.open_table(cfg, "page_views")
    compacted = lake_reads(table, column)
    assert compacted["answer"] == wh_distinct
    return {"rate": rate, "events": count, "snapshots": len(table.snapshots()) - 1,
            "warehouse_p50_s": float(p50), "warehouse_p99_s": float(p99),
            "lake_p50_s": percentile(lake, 0.5), "lake_p99_s": percentile(lake, 0.99),
            "query": f"count(DISTINCT {column})", "answer": wh_distinct,
            "lake_as_loaded": loaded, "lake_compacted": compacted,
            "archive_bytes_read": arch_read, "archive_objects": arch_objects}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-rate", type=int, default=1700)
    parser.add_argument("--latency-events", type=int, default=30_000)
    parser.add_argument("--skip-latency", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-lake-"))
    info = devstack.up(work / "stack")
    os.environ.update(info.env())  # the stack's dummy AWS credentials for this process too
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    results: dict[str, Any] = {"rows": args.rows, "files": args.files}
    try:
        postmaster = int((info.pg_socket_dir / "data" / "postmaster.pid").read_text().split()[0])
        moto_port = env["SHARDLINE_S3_ENDPOINT_URL"].rsplit(":", 1)[1].strip("/")
        runs = loader_rounds(env, args, postmaster, moto_port)
        results["loaders"] = runs
        results["loaders_summary"] = report_loaders(runs, args.rows // args.files * args.files)
        if not args.skip_latency:
            lat = latency_run(env, work, args.latency_rate, args.latency_events)
            results["latency"] = lat
            print(f"\nlatency to queryable at {lat['rate']:,} events/s ({lat['events']:,} "
                  f"events, demo cadence, 2 stage workers, {lat['snapshots']} lake commits):")
            print(f"  warehouse (loaded_at - arrival)      p50 {lat['warehouse_p50_s']:.2f} s, "
                  f"p99 {lat['warehouse_p99_s']:.2f} s")
            print(f"  lake (snapshot commit - arrival)     p50 {lat['lake_p50_s']:.2f} s, "
                  f"p99 {lat['lake_p99_s']:.2f} s")
            arch = lat["archive_bytes_read"]
            print(f"\n{lat['query']} = {lat['answer']:,} over the same "
                  f"{lat['events'] + WARMUP:,} events; the gzip JSON archive: {arch:,} bytes "
                  f"read ({lat['archive_objects']} objects, read whole)")
            for label, key in (("lake as loaded", "lake_as_loaded"),
                               ("lake after lake compact", "lake_compacted")):
                got = lat[key]
                print(f"  {label:<24} {got['read']:>10,} bytes read ({got['read'] / arch:.1%} "
                      f"of the archive; column chunks + footers {got['minimum']:,}, "
                      f"{got['minimum'] / arch:.1%}) of {got['bytes']:,} in {got['files']} "
                      f"data files")
        out = ROOT / "bench" / "results"
        out.mkdir(exist_ok=True)
        (out / "bench_lake.json").write_text(json.dumps(results, indent=1, default=str))
    finally:
        devstack.down(work / "stack")
    return 0


if __name__ == "__main__":
    sys.exit(main())
