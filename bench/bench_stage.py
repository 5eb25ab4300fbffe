"""Stage-worker CPU per record: today's stage path against a baseline revision, in one run.

    .venv/bin/python bench/bench_stage.py [--records 20000] [--batch 500] [--inflight 8]
                                          [--workers 1] [--runs 5] [--baseline-rev REV]

What it measures, old (``--baseline-rev``, default: the code before the speed-up; its
codec, csvformat, transform, rows and clients modules loaded from git by
``bench/stage_baseline.py``) beside new (this tree):

- in-process: the bare path of every batch (codec.decode, per-record UTF-8/JSON/transform/
  column checks, CSV, gzip), no Gearman, S3 or warehouse; old and new alternate every 4
  batches, so the shared machine's load hits both alike; CPU µs per record
  (``time.process_time``), medians of ``--runs`` and their ratio, plus a per-step
  breakdown (decode, json, transform, checks+CSV, gzip) of each, measured apart;
- N workers: ``shardline worker --functions stage`` subprocesses of each code (old ones
  started through ``bench/stage_baseline.py``) against a real local stack (gearmand, moto
  S3, PostgreSQL from ``shardline.devstack``), each set on its own Gearman function; a
  client keeps ``--inflight`` foreground jobs in flight (one thread and one pygearman client
  per slot, like the consumer's dispatch threads); runs alternate old/new; records per
  worker CPU-second from ``/proc``. Each run stages to a fresh stream name, so every batch
  is a new S3 object and a new ledger row.

Input: realistic page views from ``shardline.sample.events`` (~400 bytes each, seeded),
batched and ``codec.encode``d before the clock starts. Transform caches are emptied at the
start of every in-process repetition (cold, like a fresh worker).
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
from types import ModuleType, SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from shardline import codec  # noqa: E402
from shardline.sample import events  # noqa: E402
from shardline.tables import PAGE_VIEWS  # noqa: E402
from shardline.workers import rows as rows_mod  # noqa: E402
from shardline.transforms import page_views as page_views_mod  # noqa: E402
from shardline.workers import transform as transform_mod  # noqa: E402
from shardline.workers.stage import gzip_bytes  # noqa: E402

import stage_baseline  # noqa: E402  (bench/, beside this file)

SHARDLINE = str(Path(sys.executable).parent / "shardline")
FUNCTION = "bench_stage"


def make_batches(n: int, batch_size: int, stream: str, seed: int = 1) -> list[codec.Batch]:
    now_ms = int(time.time() * 1000)
    records = []
    for i, (_kind, key, data) in enumerate(events.generate(n, bad_fraction=0.0, seed=seed)):
        records.append(codec.Record(f"{10 ** 55 + i * 1000}", 0, key, data, now_ms + i))
    return [codec.Batch(stream, "shardId-000000000000", records[i:i + batch_size])
            for i in range(0, len(records), batch_size)]


def _clear_caches(impl: SimpleNamespace) -> None:
    """Empty the transform's LRU caches: every repetition starts cold, like a fresh worker."""
    for obj in vars(_page_views(impl)).values():
        if hasattr(obj, "cache_clear"):
            obj.cache_clear()


def _page_views(impl: SimpleNamespace) -> ModuleType:
    """The module with ``page_view`` and its caches: the transform API's ``page_views``, or
    in revisions from before it, ``workers/transform.py``."""
    return getattr(impl, "page_views", None) or impl.transform


def _cpu(fn) -> float:
    c0 = time.process_time()
    fn()
    return time.process_time() - c0


class InProcess:
    """The bare stage path of one implementation: decode + RowBuilder.build + gzip."""

    def __init__(self, impl: SimpleNamespace):
        self.impl = impl
        self.builder = impl.rows.RowBuilder(PAGE_VIEWS, _page_views(impl).page_view)
        self.cpu = self.wall = 0.0
        self.records = 0

    def run(self, payloads: list[bytes]) -> None:
        decode, build = self.impl.codec.decode, self.builder.build
        t0, c0 = time.perf_counter(), time.process_time()
        for payload in payloads:
            batch = decode(payload)
            staged = build(batch, datetime.now(timezone.utc))
            gzip_bytes(staged.csv_text)
            self.records += len(batch.records)
        self.cpu += time.process_time() - c0
        self.wall += time.perf_counter() - t0


def interleaved(old: SimpleNamespace, new: SimpleNamespace, payloads: list[bytes],
                chunk: int = 4) -> dict[str, tuple[float, float, float]]:
    """One repetition over all payloads, old and new alternating every ``chunk`` batches
    (ABBA), so the machine's load changes hit both alike; cold transform caches at the start.
    -> name: (records per wall second, per CPU second, CPU µs per record)."""
    _clear_caches(old)
    _clear_caches(new)
    paths = {"old": InProcess(old), "new": InProcess(new)}
    for k, i in enumerate(range(0, len(payloads), chunk)):
        part = payloads[i:i + chunk]
        for name in (("old", "new") if k % 2 == 0 else ("new", "old")):
            paths[name].run(part)
    return {name: (p.records / p.wall, p.records / p.cpu, p.cpu / p.records * 1e6)
            for name, p in paths.items()}


def breakdown(impl: SimpleNamespace, payloads: list[bytes]) -> dict[str, float]:
    """CPU µs per record of each step alone: decode, json, transform, checks+CSV (the rest of
    RowBuilder.build: column checks, worker columns, CSV line, dead letters), gzip."""
    n = 0
    batches = []
    dec = _cpu(lambda: batches.extend(impl.codec.decode(p) for p in payloads))
    datas = [r.data for b in batches for r in b.records]
    n = len(datas)
    rows = impl.rows
    if hasattr(rows, "_fast_loads"):  # the new read: orjson, json.loads when it must
        def parse(d, loads=rows._fast_loads, simple=rows._SIMPLE_TYPES):
            try:
                e = loads(d)
            except rows._FastJSONError:
                e = None
            if type(e) is not dict or not simple.issuperset(map(type, e.values())):
                e = json.loads(d.decode("utf-8"))
            return e
    else:
        def parse(d, loads=json.loads):
            return loads(d.decode("utf-8"))
    events_: list = []
    js = _cpu(lambda: events_.extend(map(parse, datas)))
    _clear_caches(impl)
    page_view = _page_views(impl).page_view
    tr = _cpu(lambda: [page_view(e) for e in events_])
    _clear_caches(impl)
    builder = rows.RowBuilder(PAGE_VIEWS, page_view)
    now = datetime.now(timezone.utc)
    staged = []
    build = _cpu(lambda: staged.extend(builder.build(b, now) for b in batches))
    gz = _cpu(lambda: [gzip_bytes(s.csv_text) for s in staged])
    us = 1e6 / n
    return {"decode": dec * us, "json": js * us, "transform": tr * us,
            "checks+csv": (build - js - tr) * us, "gzip": gz * us,
            "total": (dec + build + gz) * us}


def compare(old: SimpleNamespace, payloads: list[bytes], runs: int) -> dict:
    """Old and new in-process paths interleaved, medians of ``runs`` repetitions each, plus
    each one's per-step breakdown (measured apart, after each repetition)."""
    new = SimpleNamespace(codec=codec, rows=rows_mod, transform=transform_mod,
                          page_views=page_views_mod)
    res: dict[str, list] = {"old": [], "new": []}
    parts: dict[str, list] = {"old": [], "new": []}
    interleaved(old, new, payloads[:4])  # warm-up, not counted: first-call costs
    for run in range(runs):
        for name, r in interleaved(old, new, payloads).items():
            res[name].append(r)
        for name, impl in ((("old", old), ("new", new)) if run % 2 == 0
                           else (("new", new), ("old", old))):
            parts[name].append(breakdown(impl, payloads))
    out = {}
    for name in ("old", "new"):
        out[name] = {"records_per_s": statistics.median(r[0] for r in res[name]),
                     "records_per_cpu_s": statistics.median(r[1] for r in res[name]),
                     "cpu_us_per_record": statistics.median(r[2] for r in res[name]),
                     "cpu_us_runs": [round(r[2], 2) for r in res[name]],
                     "breakdown_us": {k: round(statistics.median(p[k] for p in parts[name]), 2)
                                      for k in parts[name][0]}}
    out["ratio_old_over_new"] = (out["old"]["cpu_us_per_record"]
                                 / out["new"]["cpu_us_per_record"])
    out["pair_ratio_median"] = statistics.median(o[2] / n[2] for o, n in
                                                 zip(res["old"], res["new"], strict=True))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """user+system CPU time of these processes so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / tick


def submit_all(servers: list[str], payloads: list[tuple[str, bytes]], inflight: int,
               function: str = FUNCTION, timeout: float = 120.0) -> float:
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
            job = client.submit_job(function.encode(), payload, unique=unique,
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


def wait_workers(server: str, n: int, function: str = FUNCTION, timeout: float = 30.0) -> None:
    from shardline.ops import gearman_admin

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = gearman_admin.server_status(server)
        if st.up and any(f.name == function and f.workers >= n for f in st.functions):
            return
        time.sleep(0.1)
    raise SystemExit(f"{n} workers did not register {function} within {timeout}s")


def start_stack(workdir: Path) -> dict[str, str]:
    from shardline import devstack

    info = devstack.up(workdir)
    env = dict(os.environ)
    env.update(info.env() if hasattr(info, "env") else devstack.env(workdir))
    return env


def migrate(env: dict[str, str], schema: str) -> None:
    """The warehouse and the control store (the ledger the stage workers write)."""
    for args in (["migrate"], ["migrate", "--control"]):
        subprocess.run([SHARDLINE, *args], env={**env, "SHARDLINE_WAREHOUSE_SCHEMA": schema,
                                                "SHARDLINE_CONTROL_SCHEMA": schema},
                       check=True, capture_output=True)


# The stage path before the per-record speed-up (the branch point of that work): the default
# baseline, fixed so that the comparison still means something once the work is merged.
PRE_SPEEDUP_REV = "d89c0d2"


def worker_runs(env: dict[str, str], servers: list[str], n: int, old_rev: str, args) -> dict:
    """n old-code and n new-code worker processes (each set on its own Gearman function),
    runs interleaved old/new/new/old...; -> per set: medians of records/s and per CPU-s."""
    sets = {"old": [sys.executable, str(ROOT / "bench" / "stage_baseline.py"), old_rev],
            "new": [SHARDLINE]}
    procs: dict[str, list[subprocess.Popen]] = {}
    rates: dict[str, list[float]] = {"old": [], "new": []}
    cpu_rates: dict[str, list[float]] = {"old": [], "new": []}
    try:
        for name, cmd in sets.items():
            fenv = {**env, "SHARDLINE_GEARMAN_STAGE_FUNCTION": f"{FUNCTION}_{name}"}
            procs[name] = [subprocess.Popen(cmd + ["worker", "--functions", "stage", "--id",
                                                   f"bench-{name}-{i}"], env=fenv,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                           for i in range(n)]
        for name in sets:
            function = f"{FUNCTION}_{name}"
            wait_workers(servers[0], n, function)
            # warm-up: connections to S3 and the warehouse opened in every worker
            warm = make_batches(n * 4, 1, f"warm-{name}-{n}")
            submit_all(servers, [(hashlib.sha1(f"w{name}{n}/{b.batch_id}".encode()).hexdigest(),
                                  codec.encode(b)) for b in warm], n * 2, function)
        for run in range(args.runs):
            order = ("old", "new") if run % 2 == 0 else ("new", "old")
            for name in order:
                stream = f"bench-{name}-{n}w-r{run}"
                batches = make_batches(args.records, args.batch, stream)
                jobs = [(hashlib.sha1(f"{stream}/{b.batch_id}".encode()).hexdigest(),
                         codec.encode(b)) for b in batches]
                pids = [p.pid for p in procs[name]]
                cpu0 = cpu_seconds(pids)
                elapsed = submit_all(servers, jobs, args.inflight, f"{FUNCTION}_{name}")
                cpu = cpu_seconds(pids) - cpu0
                rates[name].append(args.records / elapsed)
                cpu_rates[name].append(args.records / cpu)
                print(f"  {name} code, {n} worker(s) run {run + 1}: "
                      f"{args.records / elapsed:,.0f} records/s ({elapsed:.2f} s; workers used "
                      f"{cpu:.2f} CPU-s = {args.records / cpu:,.0f} records per worker "
                      f"CPU-second = {cpu / args.records * 1e6:.1f} µs per record)")
    finally:
        for ps in procs.values():
            for p in ps:
                p.send_signal(signal.SIGTERM)
        for ps in procs.values():
            for p in ps:
                rc = p.wait(timeout=30)
                if rc != 0 or sys.exc_info()[0] is not None:  # a failed job: say why
                    print(f"worker exited {rc}: {p.stderr.read().decode()[-2000:]}")
    pair_ratios = [n / o for o, n in zip(cpu_rates["old"], cpu_rates["new"], strict=True)]
    print(f"  {n} worker(s): new/old records per worker CPU-second, run by run: "
          f"{', '.join(f'{r:.2f}' for r in pair_ratios)} (median "
          f"{statistics.median(pair_ratios):.2f}x)")
    return {"pair_ratio_median": statistics.median(pair_ratios),
            **{name: {"records_per_s": statistics.median(rates[name]),
                   "records_per_worker_cpu_s": statistics.median(cpu_rates[name]),
                   "runs_records_per_worker_cpu_s": [round(r) for r in cpu_rates[name]]}
               for name in sets}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--inflight", type=int, default=8)
    ap.add_argument("--workers", default="1",
                    help="worker counts to measure, e.g. 1,2 ('' = in-process only)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--baseline-rev", default=PRE_SPEEDUP_REV,
                    help="git revision whose stage path is the baseline (default: "
                         f"{PRE_SPEEDUP_REV}, the code before the per-record speed-up)")
    ap.add_argument("--workdir", help="stack directory (default: a temp dir, removed after)")
    args = ap.parse_args()

    old = stage_baseline.load(args.baseline_rev)
    sample = make_batches(args.records, args.batch, "bench")
    sizes = [len(r.data) for b in sample for r in b.records]
    payloads = [codec.encode(b) for b in sample]
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    print(f"input: {len(sizes)} page views, mean {statistics.mean(sizes):.0f} bytes, "
          f"{len(payloads)} batches of {args.batch}; baseline = revision {old.rev}")
    cmp = compare(old, payloads, args.runs)
    print(f"in-process decode+transform+checks+CSV+gzip, CPU µs per record "
          f"(median of {args.runs}, interleaved):")
    for name in ("old", "new"):
        r = cmp[name]
        print(f"  {name} ({old.rev if name == 'old' else 'this tree'}): "
              f"{r['cpu_us_per_record']:.1f} µs ({r['records_per_cpu_s']:,.0f} records per "
              f"CPU-second, {r['records_per_s']:,.0f} records/s wall; runs {r['cpu_us_runs']})")
        print("      where: " + ", ".join(f"{k} {v:.1f}" for k, v in r["breakdown_us"].items()))
    print(f"  ratio old/new: {cmp['ratio_old_over_new']:.2f}x of the medians, "
          f"{cmp['pair_ratio_median']:.2f}x median of the repetitions' ratios")

    workers: dict[str, dict] = {}
    counts = [int(x) for x in args.workers.split(",") if x.strip()]
    if counts:
        tmp = tempfile.TemporaryDirectory(prefix="bench-stage-") if not args.workdir else None
        workdir = Path(args.workdir or tmp.name)
        from shardline import devstack

        env = start_stack(workdir)
        try:
            schema = f"bench_{os.getpid()}"
            migrate(env, schema)
            env.update({"SHARDLINE_WAREHOUSE_SCHEMA": schema, "SHARDLINE_CONTROL_SCHEMA": schema,
                        "SHARDLINE_S3_PREFIX": f"bench-{os.getpid()}",
                        "SHARDLINE_LOG_LEVEL": "WARNING"})
            servers = env["SHARDLINE_GEARMAN_SERVERS"].split(",")
            for n in counts:
                workers[str(n)] = worker_runs(env, servers, n, old.rev, args)
        finally:
            devstack.down(workdir)
            if tmp is not None:
                tmp.cleanup()

    print("\nsummary (median of %d runs, %d-record batches, %d jobs in flight, "
          "load average %.2f):" % (args.runs, args.batch, args.inflight, os.getloadavg()[0]))
    for name in ("old", "new"):
        print(f"  in-process {name}: {cmp[name]['cpu_us_per_record']:.1f} CPU µs per record "
              f"({cmp[name]['records_per_cpu_s']:,.0f} per CPU-second)")
    print(f"  in-process ratio old/new: {cmp['ratio_old_over_new']:.2f}x")
    for n, w in workers.items():
        for name in ("old", "new"):
            r = w[name]
            print(f"  {n} worker process(es), {name} code: {r['records_per_s']:>8,.0f} records/s, "
                  f"{r['records_per_worker_cpu_s']:,.0f} per worker CPU-second "
                  f"({1e6 / r['records_per_worker_cpu_s']:.1f} µs per record)")
        print(f"  {n} worker(s) ratio new/old records per worker CPU-second: "
              f"{w['new']['records_per_worker_cpu_s'] / w['old']['records_per_worker_cpu_s']:.2f}x"
              f" of the medians, {w['pair_ratio_median']:.2f}x median of run pairs")
    out = ROOT / "bench" / "results" / "bench_stage.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "baseline_rev": old.rev,
        "records": args.records, "batch": args.batch, "inflight": args.inflight,
        "runs": args.runs, "mean_record_bytes": round(statistics.mean(sizes)),
        "in_process": cmp, "workers": workers,
        "loadavg_1m": os.getloadavg()[0]}, indent=2) + "\n")
    print(f"  (written to {out.relative_to(ROOT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
