"""End-to-end pipeline benchmark: Kinesis -> consumers -> stage workers -> S3 -> loader ->
warehouse.

Two measurements, both with the real fleet under supervisord on a local stack:

1. **Throughput, draining a pre-filled 4-shard stream** (the producer's cost is not
   counted): the stream is filled once; each run starts the fleet on a fresh schema and
   S3 prefix (so consumers start from TRIM_HORIZON) and times until every valid event is
   queryable. Run for 1, 2 and 4 stage workers, ``--repeat`` times each, medians.
   Baseline in the same run: a bare boto3 GetRecords drain of the same 4 shards, one
   thread per shard, doing nothing with the records (the read ceiling here).
2. **Latency at a steady rate** (default 1,700 events/s, demo buffering settings): the
   fleet runs while the producer puts events at the rate; p50/p99 of
   ``loaded_at - arrival_time`` (PutRecords to row visible).

    .venv/bin/python bench/bench_pipeline.py                  # everything, ~8 min
    .venv/bin/python bench/bench_pipeline.py --events 100000 --workers 1,2,4 --repeat 3

``--timeline``: the throughput runs log at DEBUG, and each is summarised per batch (median
and p90, seconds): from the fleet's start to the first batch staged (process start, lease,
first read), in the consumer's in-flight window before dispatch, dispatch to staged (Gearman
and the stage worker), staged to checkpointable (an earlier batch still in flight), and
staged to loaded (the loader's cadence and COPY, from the ledger's ``staged_at`` and
``loaded_at``); with the cores busy over the run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shardline import devstack  # noqa: E402
from shardline.devstack.fleet import DEMO_SETTINGS as DEMO  # noqa: E402
from shardline.devstack.fleet import Fleet, shardline, wait_for  # noqa: E402
from shardline.devstack.fleet import warehouse_query as query  # noqa: E402

# Throughput settings: bigger batches, loads every couple of seconds.
DRAIN = {
    "SHARDLINE_CONSUMER_BATCH_MAX_RECORDS": "2000",
    "SHARDLINE_CONSUMER_BATCH_MAX_AGE_S": "1",
    "SHARDLINE_CONSUMER_IDLE_SLEEP_S": "0.2",
    "SHARDLINE_CONSUMER_CHECKPOINT_INTERVAL_S": "2",
    "SHARDLINE_LOADER_MAX_INTERVAL_S": "2",
    "SHARDLINE_LOADER_POLL_S": "0.5",
    "SHARDLINE_LOADER_MIN_FILES": "200",
}
CATEGORIES = (("kinesalite", "kinesalite"), ("moto_server", "moto S3"), ("gearmand", "gearmand"),
              ("shardline consumer", "consumers"), ("shardline worker", "stage workers"),
              ("shardline loader", "loader"), ("supervisord", "supervisord"))


def cpu_snapshot() -> dict[int, tuple[str, float]]:
    """pid -> (component, CPU seconds) for every process of the pipeline and the stack."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = "postgres" if cmd.startswith("postgres") or "/postgres " in cmd else None
        for needle, label in CATEGORIES:
            if needle in cmd:
                name = label
        if name:
            out[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def cpu_by_component(before: dict, after: dict) -> dict[str, float]:
    totals: dict[str, float] = {}
    for pid, (name, secs) in after.items():
        start = before.get(pid, (name, 0.0))[1]
        totals[name] = totals.get(name, 0.0) + secs - start
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def bare_drain(info: devstack.StackInfo, stream: str) -> tuple[int, float]:
    """Read every shard from TRIM_HORIZON, one thread per shard; records and seconds."""
    kinesis = info.client("kinesis")
    shards = [s["ShardId"] for s in kinesis.list_shards(StreamName=stream)["Shards"]]
    counts = [0] * len(shards)

    def drain(i: int) -> None:
        client = info.client("kinesis")
        it = client.get_shard_iterator(StreamName=stream, ShardId=shards[i],
                                       ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while it:
            resp = client.get_records(ShardIterator=it, Limit=10000)
            counts[i] += len(resp["Records"])
            if not resp["Records"]:
                break
            it = resp.get("NextShardIterator")

    start = time.perf_counter()
    threads = [threading.Thread(target=drain, args=(i,)) for i in range(len(shards))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts), time.perf_counter() - start


TIMELINE = re.compile(r"timeline batch=\S+ records=\d+ dispatch_wait=(\S+) stage=(\S+) "
                      r"prefix_wait=(\S+)")


def quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0, "median": float("nan"), "p90": float("nan")}
    values = sorted(values)
    return {"n": len(values), "median": statistics.median(values),
            "p90": values[min(len(values) - 1, int(0.9 * len(values)))]}


def timeline(env: dict[str, str], logs: Path, start: float) -> dict[str, dict[str, float]]:
    """Per-batch waits of one run: the consumers' DEBUG timeline lines and the ledger."""
    import psycopg2

    waits: dict[str, list[float]] = {"window": [], "stage": [], "prefix": []}
    for path in logs.glob("*.log"):
        for m in TIMELINE.finditer(path.read_text(errors="replace")):
            for key, value in zip(waits, m.groups(), strict=True):
                waits[key].append(float(value))
    conn = psycopg2.connect(env["SHARDLINE_CONTROL_DSN"])
    with conn.cursor() as cur:
        cur.execute(f"SET search_path TO {env['SHARDLINE_CONTROL_SCHEMA']}")
        cur.execute("SELECT extract(epoch FROM staged_at), extract(epoch FROM loaded_at) "
                    "FROM staged_files WHERE loaded_at IS NOT NULL AND row_count > 0")
        files = [(float(a), float(b)) for a, b in cur.fetchall()]
    conn.close()
    # the ledger's times are naive UTC: epoch seconds as written
    out = {"start_to_first_staged": quantiles([min(a for a, _ in files) - start]),
           "window (closed->dispatched)": quantiles(waits["window"]),
           "stage (dispatched->staged)": quantiles(waits["stage"]),
           "prefix (staged->checkpointable)": quantiles(waits["prefix"]),
           "load (staged->loaded)": quantiles([b - a for a, b in files]),
           "start_to_last_loaded": quantiles([max(b for _, b in files) - start])}
    return out


def run_fleet(base_env: dict[str, str], work: Path, stream: str, name: str, workers: int,
              good: int, bad: int, settings: dict[str, str], timeout: float,
              with_timeline: bool = False) -> dict:
    env = {**base_env, **settings, "SHARDLINE_WAREHOUSE_SCHEMA": name,
           "SHARDLINE_CONTROL_SCHEMA": name,  # fresh checkpoints: read from TRIM_HORIZON
           "SHARDLINE_S3_PREFIX": f"bench/{name}", "SHARDLINE_KINESIS_STREAM": stream}
    if with_timeline:
        env["SHARDLINE_LOG_LEVEL"] = "DEBUG"
    shardline("migrate", env=env)
    fleet = Fleet(work / name, env, stream, workers)
    cpu_before = cpu_snapshot()
    start = time.time()
    fleet.start()
    try:
        def done() -> bool:
            (rows,), = query(env, "SELECT count(*) FROM page_views")
            return rows >= good

        wait_for(done, timeout, f"{good} rows ({name})", every=0.25)
        elapsed = time.time() - start
        cpu = cpu_by_component(cpu_before, cpu_snapshot())
    except TimeoutError:
        print(fleet.logs(400), file=sys.stderr)
        raise
    finally:
        fleet.stop()
    (rows, distinct), = query(env, "SELECT count(*), count(DISTINCT event_id) FROM page_views")
    assert rows == distinct == good, (rows, distinct, good)
    out = {"workers": workers, "seconds": elapsed, "events_per_s": (good + bad) / elapsed,
           "cpu_s": cpu, "cores_busy": sum(cpu.values()) / elapsed}
    if with_timeline:
        out["timeline"] = timeline(env, fleet.conf_dir / "logs", start)
    return out


def latency_run(base_env: dict[str, str], info: devstack.StackInfo, work: Path, rate: int,
                count: int, workers: int) -> dict:
    stream = f"bench-latency-{int(time.time())}"
    env = {**base_env, **DEMO, "SHARDLINE_WAREHOUSE_SCHEMA": "bench_latency",
           "SHARDLINE_CONTROL_SCHEMA": "bench_latency",
           "SHARDLINE_S3_PREFIX": "bench/latency", "SHARDLINE_KINESIS_STREAM": stream}
    shardline("create-stream", "--stream", stream, "--shards", "4", env=env)
    shardline("migrate", env=env)
    fleet = Fleet(work / "latency", env, stream, workers)
    fleet.start()
    try:
        summary = work / "latency.json"
        shardline("produce", "--stream", stream, "--count", str(count), "--rate", str(rate),
                  "--bad-fraction", "0.01", "--seed", "5", "--summary-json", str(summary),
                  "--quiet", env=env, timeout=count / rate * 3 + 120)
        good = json.loads(summary.read_text())["good"]
        wait_for(lambda: query(env, "SELECT count(*) FROM page_views")[0][0] >= good, 120,
                 "latency run rows", every=0.5)
    finally:
        fleet.stop()
    (p50, p99, mx), = query(env, """
        SELECT percentile_cont(0.5) WITHIN GROUP
                   (ORDER BY extract(epoch FROM loaded_at - arrival_time)),
               percentile_cont(0.99) WITHIN GROUP
                   (ORDER BY extract(epoch FROM loaded_at - arrival_time)),
               max(extract(epoch FROM loaded_at - arrival_time)) FROM page_views""")
    return {"rate": rate, "events": count, "p50_s": float(p50), "p99_s": float(p99),
            "max_s": float(mx)}


def print_timeline(runs: list[dict], worker_counts: list[int]) -> None:
    """Medians over the runs of each worker count of the per-run median and p90."""
    print("\nper-batch timeline, seconds (median over runs of each run's median / p90):")
    for workers in worker_counts:
        mine = [r for r in runs if r["workers"] == workers]
        busy = statistics.median(r["cores_busy"] for r in mine)
        print(f"  {workers} stage worker(s), {busy:.2f} cores busy:")
        for stage in mine[0]["timeline"]:
            med = statistics.median(r["timeline"][stage]["median"] for r in mine)
            p90 = statistics.median(r["timeline"][stage]["p90"] for r in mine)
            n = statistics.median(r["timeline"][stage]["n"] for r in mine)
            print(f"    {stage:<34} {med:>7.3f} / {p90:>7.3f}   ({n:.0f} batches)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency-rate", type=int, default=1700)
    parser.add_argument("--latency-events", type=int, default=60_000)
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--timeline", action="store_true",
                        help="per-batch waits of each throughput run (DEBUG logs, ledger)")
    args = parser.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")]

    work = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    info = devstack.up(work / "stack")
    base_env = {**os.environ, **info.env(), "PYTHONUNBUFFERED": "1"}
    results: dict = {"events": args.events, "runs": [], "bare": []}
    try:
        stream = "bench-drain"
        shardline("create-stream", "--stream", stream, "--shards", "4", env=base_env)
        summary = work / "fill.json"
        shardline("produce", "--stream", stream, "--count", str(args.events), "--rate", "0",
                  "--bad-fraction", "0.01", "--seed", "3", "--summary-json", str(summary),
                  "--quiet", env=base_env, timeout=600)
        filled = json.loads(summary.read_text())
        good, bad = filled["good"], filled["bad"]
        print(f"pre-filled {stream}: {good:,} valid + {bad:,} malformed events over 4 shards")
        n = 0
        for rep in range(args.repeat):
            records, secs = bare_drain(info, stream)
            results["bare"].append(records / secs)
            print(f"  rep {rep + 1}: bare GetRecords drain  {records / secs:>9,.0f} records/s")
            for workers in worker_counts:
                n += 1
                run = run_fleet(base_env, work, stream, f"bench_{n}", workers, good, bad, DRAIN,
                                timeout=600, with_timeline=args.timeline)
                results["runs"].append(run)
                print(f"  rep {rep + 1}: pipeline, {workers} stage worker(s) "
                      f"{run['events_per_s']:>9,.0f} events/s ({run['seconds']:.1f} s, "
                      f"{run['cores_busy']:.2f} cores busy)")
        bare = statistics.median(results["bare"])
        print(f"\nmedians of {args.repeat} ({args.events:,} events, 4 shards):")
        print(f"  bare GetRecords drain (read ceiling)   {bare:>9,.0f} records/s")
        for workers in worker_counts:
            rates = [r["events_per_s"] for r in results["runs"] if r["workers"] == workers]
            med = statistics.median(rates)
            results[f"median_{workers}"] = med
            print(f"  pipeline, {workers} stage worker(s)          {med:>9,.0f} events/s  "
                  f"({med / bare:.0%} of the read ceiling)")
        last = {r["workers"]: r for r in results["runs"]}
        for workers, run in sorted(last.items()):
            busy = sum(run["cpu_s"].values())
            parts = ", ".join(f"{k} {v:.1f}" for k, v in run["cpu_s"].items())
            print(f"  CPU seconds, last run with {workers} worker(s): {busy:.1f} in "
                  f"{run['seconds']:.1f} s wall ({busy / run['seconds']:.2f} cores busy): {parts}")
        if args.timeline:
            print_timeline(results["runs"], worker_counts)
        if not args.skip_latency:
            lat = latency_run(base_env, info, work, args.latency_rate, args.latency_events, 2)
            results["latency"] = lat
            print(f"\nlatency at {lat['rate']:,} events/s ({lat['events']:,} events, 2 workers, "
                  f"demo buffering): p50 {lat['p50_s']:.2f} s, p99 {lat['p99_s']:.2f} s, "
                  f"max {lat['max_s']:.2f} s")
        out = ROOT / "bench" / "results"
        out.mkdir(exist_ok=True)
        (out / "bench_pipeline.json").write_text(json.dumps(results, indent=2))
    finally:
        devstack.down(work / "stack")
    return 0


if __name__ == "__main__":
    sys.exit(main())
