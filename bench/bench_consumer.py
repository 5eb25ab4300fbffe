"""Consumer throughput: one consumer drains a pre-filled 1-shard stream into a trivial stage.

    .venv/bin/python bench/bench_consumer.py [--records 100000] [--size 300] [--naive 5000]
                                             [--repeat 3]

Beside it, in the same run and on the same stream:

- read ceiling: a bare boto3 GetRecords loop (Limit 10,000) that does nothing with the records,
  with a default boto3 client, and again with the consumer's client (same boto3, but
  ApproximateArrivalTimestamp parsed without botocore's per-record tzlocal());
- naive: one Gearman foreground job per record (one client, serial), on ``--naive`` records.

The consumer runs in this process (``shardline.consumers.main.build`` + ``run`` in a thread, real
Kinesis/Gearman/PostgreSQL clients); the trivial stage worker (``tests/stub_stage.py``,
decode + count) runs as a subprocess. Its time runs from ``start()`` (lease, checkpoint
read) until the staged watermark reaches the last record. It runs twice: with the AWS
per-shard byte limit (2 MB/s, the default) and with the pacer lifted to 100 MB/s, since
kinesalite does not enforce the limit and the bare loop does not pace. The script starts
its own stack with ``shardline.devstack.up`` in a temporary directory. Medians of
``--repeat``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import gearman  # noqa: E402
import psycopg2  # noqa: E402

from shardline.consumers import main as consumer_main  # noqa: E402
from shardline import devstack, migrate, settings as settings_mod  # noqa: E402
from shardline.codec import Batch, Record, encode  # noqa: E402
from shardline.kinesis import kinesis_client  # noqa: E402
from shardline.lifecycle import StopSignals  # noqa: E402
from shardline.controlstore.postgres import SQL_DIR as CONTROL_SQL  # noqa: E402

FUNCTION = "bench_consumer_stage"


def fill(kinesis, stream: str, n: int, size: int) -> list[str]:
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    while kinesis.describe_stream_summary(StreamName=stream)[
            "StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
        time.sleep(0.1)
    seqs: list[str] = []
    pad = b"x" * size
    for i in range(0, n, 500):
        recs = [{"Data": (f'{{"i":{j},"p":"'.encode() + pad)[:size - 2] + b'"}',
                 "PartitionKey": f"k{j}"} for j in range(i, min(n, i + 500))]
        resp = kinesis.put_records(StreamName=stream, Records=recs)
        assert not resp.get("FailedRecordCount")
        seqs += [r["SequenceNumber"] for r in resp["Records"]]
    return seqs


def bare_loop(kinesis, stream: str, n: int) -> float:
    """records/s of GetRecords alone (the read ceiling)."""
    t0 = time.perf_counter()
    it = kinesis.get_shard_iterator(StreamName=stream, ShardId="shardId-000000000000",
                                    ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    got = 0
    while got < n:
        resp = kinesis.get_records(ShardIterator=it, Limit=10000)
        got += len(resp["Records"])
        it = resp["NextShardIterator"]
    return got / (time.perf_counter() - t0)


def naive(kinesis, stream: str, servers: list[str], n: int) -> float:
    """records/s of one Gearman foreground job per record (read included)."""
    client = gearman.GearmanClient(servers)
    fn = FUNCTION.encode()
    t0 = time.perf_counter()
    it = kinesis.get_shard_iterator(StreamName=stream, ShardId="shardId-000000000000",
                                    ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    done = 0
    while done < n:
        resp = kinesis.get_records(ShardIterator=it, Limit=min(10000, n - done))
        it = resp["NextShardIterator"]
        for r in resp["Records"]:
            payload = encode(Batch(stream, "shardId-000000000000",
                                   [Record(r["SequenceNumber"], 0, r["PartitionKey"], r["Data"],
                                           0)]))
            req = client.submit_job(fn, payload, unique=uuid.uuid4().hex, poll_timeout=30)
            assert req.state == "COMPLETE", req.state
            done += 1
    return done / (time.perf_counter() - t0)


def dispatch_only(settings_env: dict[str, str], n: int, size: int, batch: int = 500) -> float:
    """records/s of the consumer's dispatch path alone (Dispatcher threads, batches of
    ``batch``) on records already in memory: what batching buys over one job per record."""
    from shardline.consumers.dispatcher import Dispatcher
    from shardline import clients

    settings = settings_mod.load(path=os.devnull, env=settings_env)
    recs = [Record(str(10 ** 55 + i), 0, f"k{i}", b"x" * size, 0) for i in range(n)]
    batches = [Batch("dispatch-only", "shardId-000000000000", recs[i:i + batch])
               for i in range(0, n, batch)]
    d = Dispatcher(lambda: clients.gearman_client(settings), FUNCTION,
                   threads=settings.consumer.dispatch_threads, job_timeout_s=60,
                   max_attempts=1, retry_max_s=1)
    d.start()
    t0 = time.perf_counter()
    for i, b in enumerate(batches):
        d.submit(i + 1, f"dispatch-{uuid.uuid4().hex[:6]}", b)
    done = 0
    while done < len(batches):
        d.wait(0.05)
        out = d.poll()
        assert all(o.ok for o in out), out
        done += len(out)
    elapsed = time.perf_counter() - t0
    d.stop()
    return n / elapsed


def consumer_run(env: dict[str, str], stream: str, last_seq: str, n: int,
                 extra: dict[str, str]) -> dict:
    """records/s of one in-process consumer from start() until everything is staged."""
    settings = settings_mod.load(path=os.devnull, env={**env, **extra})
    stop = StopSignals()
    consumer = consumer_main.build(settings, "shardId-000000000000", stop)
    result: dict = {}
    t0 = time.perf_counter()
    thread = threading.Thread(target=lambda: result.update(rc=consumer_main.run(consumer,
                                                                                stop)))
    thread.start()
    while (consumer.staged_cp is None or consumer.staged_cp.sequence_number != last_seq) \
            and thread.is_alive():
        time.sleep(0.005)
    elapsed = time.perf_counter() - t0
    stop.handler(signal.SIGTERM)
    thread.join(60)
    assert result.get("rc") == 0, result
    return {"seconds": elapsed, "records_per_s": n / elapsed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--size", type=int, default=300)
    ap.add_argument("--naive", type=int, default=5000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="consumer setting override for both consumer runs (repeatable)")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-consumer-"))
    stack = devstack.up(tmp / "stack")
    worker = None
    try:
        sets = {f"SHARDLINE_{k.split('.')[0].upper()}_{k.split('.')[1].upper()}": v
                for k, v in settings_mod.parse_set_flags(args.set).items()}
        env = {**stack.env(), **sets, "SHARDLINE_GEARMAN_STAGE_FUNCTION": FUNCTION,
               "SHARDLINE_CONSUMER_IDLE_SLEEP_S": "0.05", "SHARDLINE_LOG_LEVEL": "WARNING"}
        os.environ.update({k: v for k, v in stack.env().items() if k.startswith("AWS_")})
        kinesis = stack.client("kinesis")
        worker = subprocess.Popen([sys.executable, str(ROOT / "tests" / "stub_stage.py"),
                                   "--servers", stack.gearman_server, "--function", FUNCTION,
                                   "--threads", "2"], env={**os.environ, "PYTHONPATH": str(ROOT)})
        stream = f"bench-{uuid.uuid4().hex[:6]}"
        t0 = time.perf_counter()
        seqs = fill(kinesis, stream, args.records, args.size)
        print(f"filled {len(seqs)} records of {args.size} bytes in "
              f"{time.perf_counter() - t0:.1f}s", flush=True)
        conn = psycopg2.connect(stack.dsn)
        conn.autocommit = True
        bare_loop(kinesis, stream, args.records)  # warm-up: kinesalite's first full read is slow
        fast_kinesis = kinesis_client(settings_mod.load(path=os.devnull, env=env),
                                      raw_timestamps=True)
        rows: dict[str, list[float]] = {"bare": [], "bare_fast_ts": [], "naive": [],
                                        "consumer_2MBps": [], "consumer_unpaced": [],
                                        "dispatch_only": []}
        for rep in range(args.repeat):
            schema = f"bench_{rep}_{uuid.uuid4().hex[:6]}"
            with conn.cursor() as cur:
                cur.execute(f"CREATE SCHEMA {schema}")
                cur.execute(f"SET search_path TO {schema}")
            migrate.migrate(conn, "postgres")
            conn.autocommit = True
            # leases and checkpoints: the control store, a schema of the same name there
            cconn = psycopg2.connect(stack.control_dsn)
            cconn.autocommit = True
            with cconn.cursor() as cur:
                cur.execute(f"CREATE SCHEMA {schema}")
                cur.execute(f"SET search_path TO {schema}")
            migrate.migrate(cconn, "postgres", CONTROL_SQL)
            cconn.autocommit = True
            renv = {**env, "SHARDLINE_WAREHOUSE_SCHEMA": schema,
                    "SHARDLINE_CONTROL_SCHEMA": schema, "SHARDLINE_KINESIS_STREAM": stream}
            rows["bare"].append(bare_loop(kinesis, stream, args.records))
            rows["bare_fast_ts"].append(bare_loop(fast_kinesis, stream, args.records))
            with cconn.cursor() as cur:
                cur.execute(f"TRUNCATE {schema}.checkpoints, {schema}.checkpoint_history, "
                            f"{schema}.shard_leases")
            rows["consumer_unpaced"].append(consumer_run(
                renv, stream, seqs[-1], args.records,
                {"SHARDLINE_CONSUMER_MAX_BYTES_PER_S": "100000000"})["records_per_s"])
            with cconn.cursor() as cur:
                cur.execute(f"TRUNCATE {schema}.checkpoints, {schema}.checkpoint_history, "
                            f"{schema}.shard_leases")
            rows["consumer_2MBps"].append(consumer_run(renv, stream, seqs[-1], args.records,
                                                       {})["records_per_s"])
            rows["naive"].append(naive(kinesis, stream, [stack.gearman_server], args.naive))
            rows["dispatch_only"].append(dispatch_only(env, args.records, args.size))
            print(f"run {rep + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rows.items()),
                  flush=True)
        med = {k: statistics.median(v) for k, v in rows.items()}
        print()
        print(f"median of {args.repeat}            records/s")
        print(f"  bare GetRecords loop        {med['bare']:>10,.0f}   (read ceiling, "
              f"default boto3)")
        print(f"  bare loop, fast timestamps  {med['bare_fast_ts']:>10,.0f}   (the consumer's "
              f"client; consumer = {med['consumer_unpaced'] / med['bare_fast_ts']:.0%} of it)")
        print(f"  consumer, pacer lifted      {med['consumer_unpaced']:>10,.0f}   "
              f"{med['consumer_unpaced'] / med['bare']:.0%} of bare, "
              f"{med['consumer_unpaced'] / med['naive']:.0f}x naive")
        print(f"  consumer, 2 MB/s AWS pacing {med['consumer_2MBps']:>10,.0f}   "
              f"({args.size}-byte records: limit {2_000_000 / args.size:,.0f}/s)")
        print(f"  naive: 1 job per record     {med['naive']:>10,.0f}   (on {args.naive} records)")
        print(f"  dispatch path alone         {med['dispatch_only']:>10,.0f}   "
              f"{med['dispatch_only'] / med['naive']:.0f}x naive (batches of 500, no reading)")
        print(f"  read ceiling / naive        {med['bare'] / med['naive']:>10.1f}x  "
              f"(bounds consumer / naive)")
        out = ROOT / "bench" / "results"
        out.mkdir(exist_ok=True)
        (out / "bench_consumer.json").write_text(json.dumps(
            {"args": vars(args), "runs": rows, "median": med}, indent=2))
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(10)
        devstack.down(tmp / "stack")


if __name__ == "__main__":
    main()
