"""Stage-worker throughput: records/s through real `shardline worker` processes.

    .venv/bin/python bench/bench_stage.py [--records 20000] [--batch 500] [--inflight 8]
                                          [--workers 1,2] [--runs 3]

What it measures:

- baseline: the bare in-process path of one batch (codec.decode, per-record
  UTF-8/JSON/transform/column checks, CSV, gzip), no Gearman, S3 or warehouse;
- N workers: ``shardline worker --functions stage`` subprocesses against a
  real local stack (gearmand, moto S3, PostgreSQL from ``shardline.devstack``);
  a client keeps ``--inflight`` foreground jobs in flight (one thread and one
  pygearman client per slot, like the consumer's dispatch threads) and times
  from the first submit to the last result. Each run stages to a fresh stream
  name, so every batch is a new S3 object and a new ledger row.

Input: realistic page views from ``shardline.producer.events`` (~300 bytes each, seeded),
batched and ``codec.encode``d before the clock starts. Medians of ``--runs``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shardline import codec  # noqa: E402
from shardline.producer import events  # noqa: E402
from shardline.tables import PAGE_VIEWS  # noqa: E402
from shardline.workers.rows import RowBuilder  # noqa: E402
from shardline.workers.stage import gzip_bytes  # noqa: E402
from shardline.workers.transform import page_view  # noqa: E402

SHARDLINE = str(Path(sys.executable).parent / "shardline")
FUNCTION = "bench_stage"


def make_batches(n: int, batch_size: int, stream: str, seed: int = 1) -> list[codec.Batch]:
    now_ms = int(time.time() * 1000)
    records = []
    for i, (_kind, key, data) in enumerate(events.generate(n, bad_fraction=0.0, seed=seed)):
        records.append(codec.Record(f"{10 ** 55 + i * 1000}", 0, key, data, now_ms + i))
    return [codec.Batch(stream, "shardId-000000000000", records[i:i + batch_size])
            for i in range(0, len(records), batch_size)]


def baseline(payloads: list[bytes]) -> tuple[float, float]:
    """(records per wall second, records per CPU second) of decode + build + gzip here."""
    builder = RowBuilder(PAGE_VIEWS, page_view)
    n = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for payload in payloads:
        batch = codec.decode(payload)
        staged = builder.build(batch, datetime.now(timezone.utc))
        gzip_bytes(staged.csv_text)
        n += len(batch.records)
    return n / (time.perf_counter() - t0), n / (time.process_time() - c0)


def cpu_seconds(pids: list[int]) -> float:
    """user+system CPU time of these processes so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def submit_all(servers: list[str], payloads: list[tuple[str, bytes]], inflight: int,
               timeout: float = 120.0) -> float:
    """Foreground-submit every payload with `inflight` jobs in flight; returns seconds taken."""
    import gearman

    queue = list(reversed(payloads))
    lock = threading.Lock()
    errors: list[str] = []

    def slot() -> None:
        client = gearman.GearmanClient(servers)
        while True:
            with lock:
                if not queue or errors:
                    return
                unique, payload = queue.pop()
            job = client.submit_job(FUNCTION.encode(), payload, unique=unique,
                                    poll_timeout=timeout)
            if job.state != gearman.JOB_COMPLETE:
                errors.append(f"job {unique} ended {job.state}")
                return

    threads = [threading.Thread(target=slot) for _ in range(inflight)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"bench failed: {errors[0]}")
    return elapsed


def wait_workers(server: str, n: int, timeout: float = 30.0) -> None:
    from shardline.ops import gearman_admin

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = gearman_admin.server_status(server)
        if st.up and any(f.name == FUNCTION and f.workers >= n for f in st.functions):
            return
        time.sleep(0.1)
    raise SystemExit(f"{n} workers did not register {FUNCTION} within {timeout}s")


def start_stack(workdir: Path) -> dict[str, str]:
    from shardline import devstack

    info = devstack.up(workdir)
    env = dict(os.environ)
    env.update(info.env() if hasattr(info, "env") else devstack.env(workdir))
    return env


def migrate(env: dict[str, str], schema: str) -> None:
    subprocess.run([SHARDLINE, "migrate"], env={**env, "SHARDLINE_WAREHOUSE_SCHEMA": schema},
                   check=True, capture_output=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--inflight", type=int, default=8)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workdir", help="stack directory (default: a temp dir, removed after)")
    args = ap.parse_args()

    sample = make_batches(args.records, args.batch, "bench")
    sizes = [len(r.data) for b in sample for r in b.records]
    payloads = [codec.encode(b) for b in sample]
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    print(f"input: {len(sizes)} page views, mean {statistics.mean(sizes):.0f} bytes, "
          f"{len(payloads)} batches of {args.batch}")
    runs = [baseline(payloads) for _ in range(args.runs)]
    base = statistics.median(r[0] for r in runs)
    base_cpu = statistics.median(r[1] for r in runs)
    print(f"baseline in-process (decode+transform+checks+CSV+gzip): {base:,.0f} records/s "
          f"wall, {base_cpu:,.0f} records per CPU-second")

    tmp = tempfile.TemporaryDirectory(prefix="bench-stage-") if not args.workdir else None
    workdir = Path(args.workdir or tmp.name)
    from shardline import devstack

    env = start_stack(workdir)
    results: dict[int, float] = {}
    results_cpu: dict[int, float] = {}
    try:
        schema = f"bench_{os.getpid()}"
        migrate(env, schema)
        env.update({"SHARDLINE_WAREHOUSE_SCHEMA": schema, "SHARDLINE_GEARMAN_STAGE_FUNCTION":
                    FUNCTION, "SHARDLINE_S3_PREFIX": f"bench-{os.getpid()}",
                    "SHARDLINE_LOG_LEVEL": "WARNING"})
        servers = env["SHARDLINE_GEARMAN_SERVERS"].split(",")
        for n in [int(x) for x in args.workers.split(",")]:
            procs = [subprocess.Popen([SHARDLINE, "worker", "--functions", "stage", "--id",
                                       f"bench-{i}"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                     for i in range(n)]
            try:
                wait_workers(servers[0], n)
                # warm-up: connections to S3 and the warehouse opened in every worker
                warm = make_batches(n * 4, 1, f"warm-{n}")
                submit_all(servers, [(hashlib.sha1(f"w{n}/{b.batch_id}".encode()).hexdigest(),
                                      codec.encode(b)) for b in warm], n * 2)
                rates, cpu_rates = [], []
                pids = [p.pid for p in procs]
                for run in range(args.runs):
                    stream = f"bench-{n}w-r{run}"
                    batches = make_batches(args.records, args.batch, stream)
                    jobs = [(hashlib.sha1(f"{stream}/{b.batch_id}".encode()).hexdigest(),
                             codec.encode(b)) for b in batches]
                    cpu0 = cpu_seconds(pids)
                    elapsed = submit_all(servers, jobs, args.inflight)
                    cpu = cpu_seconds(pids) - cpu0
                    rates.append(args.records / elapsed)
                    cpu_rates.append(args.records / cpu)
                    print(f"  {n} worker(s) run {run + 1}: {args.records / elapsed:,.0f} "
                          f"records/s ({elapsed:.2f} s; workers used {cpu:.2f} CPU-s = "
                          f"{args.records / cpu:,.0f} records per worker CPU-second)")
                results[n] = statistics.median(rates)
                results_cpu[n] = statistics.median(cpu_rates)
            finally:
                for p in procs:
                    p.send_signal(signal.SIGTERM)
                for p in procs:
                    rc = p.wait(timeout=30)
                    if rc != 0:
                        print(f"worker exited {rc}: {p.stderr.read().decode()[-2000:]}")
    finally:
        devstack.down(workdir)
        if tmp is not None:
            tmp.cleanup()

    print("\nsummary (median of %d runs, %d-record batches, %d jobs in flight, "
          "load average %.2f):" % (args.runs, args.batch, args.inflight, os.getloadavg()[0]))
    print(f"  baseline in-process: {base:>10,.0f} records/s "
          f"({base_cpu:,.0f} per CPU-second)")
    for n, rate in results.items():
        print(f"  {n} worker process(es): {rate:>8,.0f} records/s  "
              f"({rate / base:.0%} of baseline; {results_cpu[n]:,.0f} per worker CPU-second, "
              f"{results_cpu[n] / base_cpu:.0%} of the baseline's)")
    out = ROOT / "bench" / "results" / "bench_stage.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "records": args.records, "batch": args.batch, "inflight": args.inflight,
        "runs": args.runs, "mean_record_bytes": round(statistics.mean(sizes)),
        "baseline_records_per_s": round(base),
        "baseline_records_per_cpu_s": round(base_cpu),
        "workers_records_per_s": {str(n): round(r) for n, r in results.items()},
        "workers_records_per_worker_cpu_s": {str(n): round(r) for n, r in results_cpu.items()},
        "loadavg_1m": os.getloadavg()[0]}, indent=2) + "\n")
    print(f"  (written to {out.relative_to(ROOT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
