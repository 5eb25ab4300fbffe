"""`make demo`: the whole pipeline on the local stack, end to end, in a few minutes.

Starts the local stack, a supervisord with one consumer per shard (4 shards),
2 stage workers and the loader, and the status web page (`shardline status --serve`)
on a free loopback port, whose URL it prints before anything is produced; produces
100,000 page views (1% malformed) at a steady rate with a progress bar and a live
status line; waits until everything is loaded; prints a summary and sample queries;
then stops everything it started, unless asked to leave it running for exploring
(`--keep`, or "y" at the prompt shown when stdin is a terminal).
Any failure is said plainly, with the log to look at, and exits non-zero.
"""
from __future__ import annotations

import argparse
import json
import os
import select
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shardline import devstack, layout  # noqa: E402
from shardline.settings import S3Settings  # noqa: E402
from shardline.devstack.fleet import DEMO_SETTINGS, SHARDLINE, Fleet, control_query, shardline  # noqa: E402
from shardline.devstack.fleet import warehouse_query as query  # noqa: E402

class DemoFailed(Exception):
    pass


def step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def live_line(env: dict[str, str], produced: int | None) -> str:
    (rows,), = query(env, "SELECT count(*) FROM page_views")
    # the ledger and the leases are in the control store (its own database), not the warehouse
    (pending, dead), = control_query(
        env, "SELECT coalesce(sum(CASE WHEN state='pending' THEN 1 END),0), "
             "coalesce(sum(dead_letter_count),0) FROM staged_files")
    (owned,), = control_query(env, "SELECT count(*) FROM shard_leases WHERE owner IS NOT NULL "
                                   "AND stream NOT LIKE '@%'")
    made = "" if produced is None else f"produced {produced:>7,}  "
    return (f"{made}loaded {rows:>7,}  dead letters {dead:>5,}  pending files {pending:>4}  "
            f"consumers {owned}")


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_status_page(env: dict[str, str], stream: str,
                      log_path: Path) -> tuple[subprocess.Popen, int]:
    """`shardline status --serve` for the demo's stream on a free loopback port.

    A session of its own, so that a stack left running for exploring keeps its page
    after the demo (and the terminal's Ctrl-C) is gone."""
    port = free_loopback_port()
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [SHARDLINE, "status", "--stream", stream, "--serve", f"127.0.0.1:{port}",
             "--interval", "1"], env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
    return proc, port


def status_page_report(url: str, timeout: float = 20) -> dict[str, Any]:
    """/api/status of the page; it answers 503 until its first sample, so retry a while."""
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "api/status", timeout=5) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            if time.time() > deadline:
                raise DemoFailed(f"the status page {url} did not answer: {exc}") from None
            time.sleep(0.5)


def ask_to_keep(timeout: float = 60) -> bool:
    """Only on a terminal (CI has no stdin); no answer within ``timeout`` means no."""
    if not sys.stdin.isatty():
        return False
    print("\nLeave the stack running for exploring? [y/N] ", end="", flush=True)
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    answer = sys.stdin.readline().strip().lower() if ready else ""
    if not ready:
        print()
    return answer in ("y", "yes")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=1700, help="events/s the producer keeps")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bad-fraction", type=float, default=0.01)
    parser.add_argument("--timeout", type=float, default=240, help="seconds to wait for loads")
    parser.add_argument("--keep", action="store_true",
                        help="leave the stack, the fleet and the status page running at the "
                             "end and print how to stop them (`make demo KEEP=1`)")
    parser.add_argument("--stack-dir", type=Path, default=ROOT / ".devstack",
                        help="the local stack's directory (default: .devstack)")
    args = parser.parse_args()

    started = time.time()
    stack_dir = args.stack_dir.resolve()
    run_id = time.strftime("%H%M%S")
    stream = f"demo-page-views-{run_id}"
    sup_dir = stack_dir / f"supervisor-{run_id}"
    fleet: Fleet | None = None
    page: subprocess.Popen | None = None
    page_url = ""
    keep = args.keep
    try:
        step("starting the local stack (gearmand, kinesalite, moto S3, PostgreSQL) on 127.0.0.1")
        info = devstack.up(stack_dir)
        env = {**os.environ, **info.env(), **DEMO_SETTINGS,
               "SHARDLINE_WAREHOUSE_SCHEMA": f"demo_{run_id}",
               "SHARDLINE_CONTROL_SCHEMA": f"demo_{run_id}",
               # page_views also goes to the lake: an Iceberg table in the SQL catalog
               "SHARDLINE_LAKE_TABLES": "page_views",
               "SHARDLINE_LAKE_NAMESPACE": f"demo_{run_id}",
               "SHARDLINE_KINESIS_STREAM": stream, "PYTHONUNBUFFERED": "1"}
        for key, value in sorted(info.env().items()):
            if key.startswith("SHARDLINE_"):
                print(f"   {key}={value}")

        step(f"schema demo_{run_id}: migrate (warehouse, control store, lake table)")
        shardline("migrate", env=env)
        shardline("migrate", "--control", env=env)  # leases, checkpoints, the ledger

        step(f"stream {stream}: {args.shards} shards")
        print(shardline("create-stream", "--stream", stream, "--shards", str(args.shards),
                        env=env).stdout.rstrip())

        sup_dir.mkdir(parents=True, exist_ok=True)
        page, port = start_status_page(env, stream, sup_dir / "status-page.log")
        page_url = f"http://127.0.0.1:{port}/"
        step(f"status page: open {page_url} to watch the run")
        print(f"   (from another machine: ssh -L {port}:127.0.0.1:{port} THIS_HOST, "
              f"then the same URL; its log: {sup_dir}/status-page.log)")

        step(f"supervisord: {args.shards} consumers, {args.workers} stage workers, "
             f"1 warehouse loader, 1 lake loader")
        fleet = Fleet(sup_dir, env, stream, args.workers)
        fleet.start()
        time.sleep(2)
        print(fleet.ctl("status").rstrip())

        step(f"producing {args.events:,} page views at {args.rate:,}/s "
             f"({args.bad_fraction:.0%} malformed)")
        summary_file = sup_dir / "produce.json"
        producer = subprocess.Popen(
            [SHARDLINE, "produce", "--stream", stream, "--count", str(args.events),
             "--rate", str(args.rate), "--bad-fraction", str(args.bad_fraction), "--seed", "7",
             "--summary-json", str(summary_file), "--progress"], env=env)
        produce_start = time.time()
        while producer.poll() is None:
            time.sleep(3)
            print(f"\n   status: {live_line(env, None)}", flush=True)
        if producer.returncode != 0:
            raise DemoFailed(f"the producer exited {producer.returncode}")
        produced = json.loads(summary_file.read_text())
        good, bad = produced["good"], produced["bad"]
        print(f"   sent {good:,} valid + {bad:,} malformed events")

        step("waiting until every valid event is in the warehouse and the lake")
        deadline = time.time() + args.timeout
        while True:
            (rows,), = query(env, "SELECT count(*) FROM page_views")
            (dead, lake_pending), = control_query(
                env, "SELECT coalesce(sum(dead_letter_count),0), "
                     "count(*) FILTER (WHERE lake_state = 'pending') FROM staged_files")
            print(f"   {live_line(env, good + bad)}, {lake_pending} files pending for the lake",
                  flush=True)
            if rows >= good and dead >= bad and lake_pending == 0:
                break
            if time.time() > deadline:
                raise DemoFailed(f"only {rows:,} of {good:,} rows loaded after {args.timeout:.0f}s;"
                                 f" see the logs in {sup_dir}/logs and `shardline status`")
            time.sleep(2)
        done = time.time()

        step("shardline status")
        status = subprocess.run([SHARDLINE, "status", "--stream", stream], env=env, text=True,
                                capture_output=True)
        print(status.stdout.rstrip())
        report = status_page_report(page_url)
        print(f"   status page answered: {page_url} "
              f"({'HEALTHY' if report.get('healthy') else 'ALERT'}, "
              f"{len(report.get('shards', []))} shards)")

        step("summary")
        (p50, p99, first_arrival, last_loaded), = query(env, """
            SELECT percentile_cont(0.5) WITHIN GROUP
                       (ORDER BY extract(epoch FROM loaded_at - arrival_time)),
                   percentile_cont(0.99) WITHIN GROUP
                       (ORDER BY extract(epoch FROM loaded_at - arrival_time)),
                   min(arrival_time), max(loaded_at) FROM page_views""")
        (rows, distinct_ids), = query(
            env, "SELECT count(*), count(DISTINCT event_id) FROM page_views")
        span = (last_loaded - first_arrival).total_seconds()
        print(f"   events produced        {good + bad:>9,}  ({good:,} valid, {bad:,} malformed)")
        print(f"   rows loaded            {rows:>9,}  ({distinct_ids:,} distinct event_id)")
        dl_prefix = layout.dead_letter_prefix(env.get("SHARDLINE_S3_PREFIX", S3Settings().prefix))
        print(f"   dead letters           {dead:>9,}  (in s3://{info.bucket}/{dl_prefix})")
        print(f"   end-to-end latency     p50 {p50:.2f} s   p99 {p99:.2f} s  "
              f"(PutRecords -> row visible)")
        print(f"   throughput             {rows / span:>9,.0f} rows/s over {span:.1f} s "
              f"(producer paced at {args.rate:,}/s)")
        print(f"   producing took {done - produce_start:.0f} s; "
              f"whole demo {time.time() - started:.0f} s")

        step("top pages")
        for host, path, views in query(env, "SELECT url_host, url_path, count(*) FROM page_views "
                                            "GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT 5"):
            print(f"   {views:>7,}  {host}{path}")
        step("views per device class")
        for device, views in query(env, "SELECT device_class, count(*) FROM page_views "
                                        "GROUP BY 1 ORDER BY 2 DESC"):
            print(f"   {views:>7,}  {device}")
        if rows != good or distinct_ids != rows:
            raise DemoFailed(f"expected exactly {good:,} rows, found {rows:,} "
                             f"({distinct_ids:,} distinct)")
        show_lake(env, rows)
        print("\nDemo finished: every valid event landed exactly once.")
        keep = keep or ask_to_keep()
        return 0
    except (DemoFailed, RuntimeError, TimeoutError) as exc:
        if fleet is not None:
            print(f"\nlast lines of the fleet's logs ({sup_dir}/logs):\n{fleet.logs(600)}",
                  file=sys.stderr)
        print(f"\nDEMO FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        if keep:
            print_how_to_stop(stack_dir, run_id, stream, page, page_url, fleet)
        else:
            step("stopping everything the demo started")
            if page is not None:
                page.terminate()
                page.wait(10)
            if fleet is not None:
                fleet.stop()
            devstack.down(stack_dir)


def show_lake(env: dict[str, str], warehouse_rows: int) -> None:
    """The lake's side: the Iceberg table read by pyiceberg (code we did not write), and
    the hour-by-hour reconciliation of ledger, warehouse and lake."""
    from shardline import settings as settings_mod
    from shardline.lake.catalog import open_table

    step("the lake: page_views as an Apache Iceberg table (read by pyiceberg)")
    print(shardline("lake", "describe", "--table", "page_views", env=env).stdout.rstrip())
    table = open_table(settings_mod.load(None, env), "page_views")
    files = list(table.scan().plan_files())
    devices = table.scan(selected_fields=("device_class",)).to_arrow()
    lake_rows = devices.num_rows
    print(f"   rows {lake_rows:,} in {len(files)} Parquet data files, "
          f"{len(table.snapshots())} snapshots")
    by_device: dict[str, int] = {}
    for value in devices.column("device_class").to_pylist():
        by_device[value] = by_device.get(value, 0) + 1
    for device, views in sorted(by_device.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"   {views:>7,}  {device}")
    step("reconciliation, hour by hour: ledger, warehouse, lake (`shardline reconcile`)")
    recon = subprocess.run([SHARDLINE, "reconcile", "--table", "page_views",
                            "--include-open-hours"], env=env, text=True, capture_output=True)
    print(recon.stdout.rstrip())
    if recon.returncode != 0 or lake_rows != warehouse_rows:
        raise DemoFailed(f"the lake holds {lake_rows:,} rows, the warehouse "
                         f"{warehouse_rows:,}; reconcile exited {recon.returncode}: "
                         f"{recon.stderr.strip()}")
    print(f"   every hour equal: {lake_rows:,} rows in the warehouse and in the lake")


def print_how_to_stop(stack_dir: Path, run_id: str, stream: str,
                      page: subprocess.Popen | None, page_url: str, fleet: Fleet | None) -> None:
    bin_dir = Path(SHARDLINE).parent
    step("the stack stays up for exploring")
    if page is not None:
        print(f"   status page   {page_url}")
    print(f"""   settings      eval "$({SHARDLINE} devstack env --dir {stack_dir})"
                 export SHARDLINE_WAREHOUSE_SCHEMA=demo_{run_id} \\
                        SHARDLINE_CONTROL_SCHEMA=demo_{run_id} SHARDLINE_KINESIS_STREAM={stream}
   then          {SHARDLINE} status
                 psql "$SHARDLINE_WAREHOUSE_DSN" -c 'select count(*) from demo_{run_id}.page_views'
   to stop it all:""")
    if page is not None:
        print(f"                 kill {page.pid}    # the status page")
    if fleet is not None:
        print(f"                 {bin_dir / 'supervisorctl'} -c {fleet.conf} stop all")
        print(f"                 {bin_dir / 'supervisorctl'} -c {fleet.conf} shutdown")
    print(f"                 {SHARDLINE} devstack down --dir {stack_dir}")


if __name__ == "__main__":
    sys.exit(main())
