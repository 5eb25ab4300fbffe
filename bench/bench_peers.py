"""The consumer beside its peers: one shard drained by a bare boto3 loop, shardline, async-kinesis.

    .venv/bin/python bench/bench_peers.py [--records 100000] [--size 300] [--repeat 3]

One local stack (``shardline.devstack.up``), one 1-shard stream pre-filled with ``--records``
records of ``--size`` bytes, then rounds in which each contender drains the whole shard from
TRIM_HORIZON in a process of its own, the order rotated every round:

- ``bare``: a default boto3 client in a GetRecords loop (Limit 10,000) that only counts;
- ``bare-fast-ts``: the same loop with the consumer's client (``kinesis_client(...,
  raw_timestamps=True)``: no per-record datetime), the ceiling of the consumer's own reads;
- ``shardline``: the consumer (``shardline.consumers.main.build`` + ``run``, as
  ``bench/bench_consumer.py`` runs it, pacer lifted) from ``start()`` until its staged
  watermark reaches the last record: lease, reading, de-aggregation, batching and Gearman
  dispatch to a trivial stage worker (``tests/stub_stage.py``, its CPU not counted);
- ``async-kinesis``: the asyncio library from PyPI (``ASYNC_KINESIS``, pinned), installed in a
  virtualenv of its own under ``--cache`` (created on first use, never in the project's venv),
  tuned for a drain: StringProcessor (no JSON parse), Limit 10,000, fetch rate 100/s.

Each contender's process reads its CPU time (utime + stime of every thread) from
``/proc/self/stat`` around the drain, so start-up and imports are not counted. Medians of
``--repeat``; records/s and CPU-µs per record, and both as ratios to the bare loop.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
ASYNC_KINESIS = "async-kinesis==3.0.1"
CONTENDERS = ("bare", "bare-fast-ts", "shardline", "async-kinesis")
FUNCTION = "bench_peers_stage"
SHARD = "shardId-000000000000"


def cpu_s() -> float:
    """This process's user + system CPU seconds, all threads, from /proc."""
    fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measured(n: int, drain: Callable[[], None]) -> dict[str, float]:
    c0, t0 = cpu_s(), time.perf_counter()
    drain()
    seconds, cpu = time.perf_counter() - t0, cpu_s() - c0
    return {"records_per_s": n / seconds, "cpu_us_per_record": cpu * 1e6 / n,
            "seconds": seconds}


# -- the contenders, each run as ``--child NAME`` in a process of its own ------------------
def child_bare(args: argparse.Namespace, fast_ts: bool = False) -> dict[str, float]:
    import boto3

    if fast_ts:
        from shardline.kinesis import kinesis_client
        from shardline.settings import load

        kinesis = kinesis_client(load(path=os.devnull), raw_timestamps=True)
    else:
        kinesis = boto3.client("kinesis", endpoint_url=args.endpoint)

    def drain() -> None:
        it = kinesis.get_shard_iterator(StreamName=args.stream, ShardId=SHARD,
                                        ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        got = 0
        while got < args.records:
            resp = kinesis.get_records(ShardIterator=it, Limit=10000)
            got += len(resp["Records"])
            it = resp["NextShardIterator"]

    return measured(args.records, drain)


def child_shardline(args: argparse.Namespace) -> dict[str, float]:
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_consumer import consumer_run

    env = dict(os.environ)
    out: dict[str, Any] = {}
    res = measured(args.records, lambda: out.update(consumer_run(
        env, args.stream, args.last_seq, args.records,
        {"SHARDLINE_CONSUMER_MAX_BYTES_PER_S": "100000000"})))
    return res


def child_async_kinesis(args: argparse.Namespace) -> dict[str, float]:
    import asyncio

    from kinesis import Consumer, StringProcessor  # type: ignore[import-not-found]

    async def drain() -> None:
        got = 0
        async with Consumer(args.stream, endpoint_url=args.endpoint,
                            region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
                            iterator_type="TRIM_HORIZON", record_limit=10000,
                            max_queue_size=20000, shard_fetch_rate=100,
                            sleep_time_no_records=0.05, idle_timeout=5.0,
                            processor=StringProcessor()) as consumer:
            while got < args.records:
                async for _item in consumer:
                    got += 1
                    if got >= args.records:
                        break

    return measured(args.records, lambda: asyncio.run(drain()))


CHILDREN = {"bare": child_bare, "bare-fast-ts": lambda a: child_bare(a, fast_ts=True),
            "shardline": child_shardline,
            "async-kinesis": child_async_kinesis}


# -- the parent ------------------------------------------------------------------------------
def async_kinesis_python(cache: Path) -> Path:
    """The python of async-kinesis's own virtualenv, made on first use."""
    venv = cache / ASYNC_KINESIS.replace("==", "-")
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", ASYNC_KINESIS], check=True)
    return python


def run_child(python: Path, name: str, env: dict[str, str], args: list[str]) -> dict[str, float]:
    out = subprocess.run([str(python), __file__, "--child", name, *args], env=env,
                         check=True, capture_output=True, text=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def fresh_control_schema(dsn: str) -> str:
    """A control-store schema of its own per shardline run: no lease or checkpoint left over."""
    import psycopg2

    from shardline import migrate
    from shardline.controlstore.postgres import SQL_DIR as CONTROL_SQL

    schema = f"peers_{uuid.uuid4().hex[:8]}"
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
        cur.execute(f"SET search_path TO {schema}")
    migrate.migrate(conn, "postgres", CONTROL_SQL)
    conn.close()
    return schema


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get(
        "XDG_CACHE_HOME", Path.home() / ".cache")) / "shardline-bench",
        help="where async-kinesis's virtualenv is made")
    ap.add_argument("--child", choices=CONTENDERS, help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    ap.add_argument("--stream", help=argparse.SUPPRESS)
    ap.add_argument("--last-seq", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return

    sys.path.insert(0, str(ROOT))
    from bench_consumer import bare_loop, fill  # the same filling and read loop

    from shardline import devstack

    ak_python = async_kinesis_python(args.cache)
    tmp = Path(tempfile.mkdtemp(prefix="bench-peers-"))
    stack = devstack.up(tmp / "stack")
    worker = None
    try:
        base_env = {**os.environ, **stack.env(), "PYTHONPATH": str(ROOT),
                    "SHARDLINE_GEARMAN_STAGE_FUNCTION": FUNCTION,
                    "SHARDLINE_CONSUMER_IDLE_SLEEP_S": "0.05", "SHARDLINE_LOG_LEVEL": "WARNING"}
        endpoint = stack.env()["SHARDLINE_KINESIS_ENDPOINT_URL"]
        os.environ.update({k: v for k, v in stack.env().items() if k.startswith("AWS_")})
        kinesis = stack.client("kinesis")
        worker = subprocess.Popen([sys.executable, str(ROOT / "tests" / "stub_stage.py"),
                                   "--servers", stack.gearman_server, "--function", FUNCTION,
                                   "--threads", "2"], env=base_env)
        stream = f"peers-{uuid.uuid4().hex[:6]}"
        t0 = time.perf_counter()
        seqs = fill(kinesis, stream, args.records, args.size)
        print(f"filled {len(seqs)} records of {args.size} bytes in "
              f"{time.perf_counter() - t0:.1f}s", flush=True)
        bare_loop(kinesis, stream, args.records)  # warm-up: kinesalite's first full read is slow
        child_args = ["--endpoint", endpoint, "--stream", stream, "--records",
                      str(args.records), "--last-seq", seqs[-1]]
        pythons = {c: Path(sys.executable) for c in CONTENDERS} | {"async-kinesis": ak_python}
        runs: dict[str, list[dict[str, float]]] = {c: [] for c in CONTENDERS}
        for rep in range(args.repeat):
            k = rep % len(CONTENDERS)
            order = CONTENDERS[k:] + CONTENDERS[:k]
            for name in order:
                env = dict(base_env)
                if name == "shardline":
                    env.update(SHARDLINE_CONTROL_SCHEMA=fresh_control_schema(stack.control_dsn),
                               SHARDLINE_KINESIS_STREAM=stream)
                if name == "async-kinesis":
                    env.pop("PYTHONPATH")  # nothing of the project's in its process
                runs[name].append(run_child(pythons[name], name, env, child_args))
            print(f"round {rep + 1} ({', '.join(order)}): " + ", ".join(
                f"{c} {runs[c][-1]['records_per_s']:,.0f}/s "
                f"{runs[c][-1]['cpu_us_per_record']:.1f} µs" for c in CONTENDERS), flush=True)
        med = {c: {k: statistics.median(r[k] for r in runs[c])
                   for k in ("records_per_s", "cpu_us_per_record")} for c in CONTENDERS}
        bare = med["bare"]
        print(f"\nmedian of {args.repeat}, 1 shard x {args.records:,} records of {args.size} B, "
              f"load average {os.getloadavg()[0]:.2f}")
        print(f"  {'':<16}{'records/s':>11}{'x bare':>8}{'CPU-µs/rec':>12}{'x bare':>8}")
        for c in CONTENDERS:
            m = med[c]
            print(f"  {c:<16}{m['records_per_s']:>11,.0f}"
                  f"{m['records_per_s'] / bare['records_per_s']:>8.2f}"
                  f"{m['cpu_us_per_record']:>12.1f}"
                  f"{m['cpu_us_per_record'] / bare['cpu_us_per_record']:>8.2f}")
        out = ROOT / "bench" / "results"
        out.mkdir(exist_ok=True)
        (out / "bench_peers.json").write_text(json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "async_kinesis": ASYNC_KINESIS,
             "runs": runs, "median": med}, indent=2))
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(10)
        devstack.down(tmp / "stack")


if __name__ == "__main__":
    main()
