"""``shardline tail``: lines/s and CPU per line into kinesalite, beside the producer alone
sending the same lines in the same run, and memory while tailing a large file.

1. A file of ``--lines`` nginx "combined" access-log lines. The tailer (``shardline tail
   --table access_log --from-beginning FILE``, KPL aggregation on, no spool: a line is
   durable once Kinesis acknowledged it) runs until its report (``shardline.tail.report``)
   shows the whole file durable. Beside it, the baseline: a process that reads the same file
   and puts the same events (``line_event``, as the tailer builds them) through the same
   ``Producer`` with the same settings, then ``close()`` (sent). ``shardline produce`` itself
   only makes sample page views, so the baseline is its loop over these lines. Both are
   child processes, their CPU from ``wait4`` (interpreter start and imports included on
   both sides); lines/s is the wall time from start to all durable.
2. Memory: the tailer reads a ``--big-mb`` file into ``bench/kinesis_sink.py`` (which takes
   every PutRecords at once, so the run is not paced by kinesalite); its RSS sampled every
   0.5 s against the offset it reached.

    .venv/bin/python bench/bench_tail.py [--lines 300000] [--repeat 2] [--big-mb 200]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shardline import devstack  # noqa: E402
from shardline.devstack.fleet import shardline  # noqa: E402
from shardline.tail.report import read_report  # noqa: E402

RESULTS = ROOT / "bench" / "results"
HOST = "bench-1"


def write_log(path: Path, lines: int, start: int = 0) -> int:
    """``lines`` access-log lines; returns the file's size."""
    with path.open("w") as f:
        for n in range(start, start + lines):
            f.write(f'10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255} - - '
                    f'[08/Dec/2026:03:{n // 60 % 60:02d}:{n % 60:02d} +0000] '
                    f'"GET /products/item-{n % 5000}?ref=bench&page={n % 17} HTTP/1.1" '
                    f'{200 + n % 3} {1000 + n % 9000} "https://example.com/p/{n % 300}" '
                    f'"Mozilla/5.0 (X11; Linux x86_64) bench/{n % 7}"\n')
    return path.stat().st_size


def cpu_of(proc: subprocess.Popen) -> float:
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def durable(state: Path) -> int:
    try:
        rep = read_report(str(state))
    except Exception:  # noqa: BLE001 - not created yet, or mid-write: not there yet
        return 0
    return sum(f.offset for f in rep.files)


def run_tail(env: dict, log: Path, size: int, state: Path, sample_rss: bool = False) -> dict:
    env = {**env, "SHARDLINE_TAIL_STATE_DIR": str(state),
           "SHARDLINE_TAIL_REPORT_INTERVAL_S": "0.2", "SHARDLINE_TAIL_POLL_S": "0.05"}
    began = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "shardline.cli", "tail", "--table",
                             "access_log", "--from-beginning", str(log)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    samples: list[tuple[float, int, int]] = []   # (seconds, offset, rss kB)
    done_at = None
    while time.monotonic() - began < 1800:
        offset = durable(state)
        if sample_rss:
            samples.append((round(time.monotonic() - began, 2), offset, rss_kb(proc.pid)))
        if offset >= size:
            done_at = time.monotonic()
            break
        if proc.poll() is not None:
            raise RuntimeError(f"the tailer exited: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.5 if sample_rss else 0.05)
    if done_at is None:
        raise RuntimeError("the tailer did not finish in 30 minutes")
    proc.send_signal(signal.SIGTERM)
    cpu = cpu_of(proc)
    return {"wall_s": done_at - began, "cpu_s": cpu, "exit": proc.returncode,
            "samples": samples}


def run_producer(env: dict, log: Path) -> dict:
    began = time.monotonic()
    proc = subprocess.Popen([sys.executable, __file__, "--child-produce", str(log)], env=env,
                            cwd=ROOT)
    cpu = cpu_of(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"the producer child exited {proc.returncode}")
    return {"wall_s": time.monotonic() - began, "cpu_s": cpu}


def child_produce(path: str) -> int:
    """The baseline: the same events through the same Producer, then close (all sent)."""
    from shardline.producer import Producer
    from shardline.settings import load
    from shardline.tail.identity import FINGERPRINT_BYTES, fingerprint, line_event

    settings = load(None, env=dict(os.environ))
    producer = Producer(settings=settings, on_full="block")
    with open(path, "rb") as f:
        fp = fingerprint(f.read(FINGERPRINT_BYTES)) or ""
        f.seek(0)
        offset = 0
        key = f"{HOST}:{fp}"
        read_at = "2026-12-08T03:00:00Z"
        for line in f:
            event = line_event(HOST, fp, path, offset, line, read_at)
            event["type"] = "access_log"
            producer.put(dict(event), partition_key=key)
            offset += len(line)
    return 0 if producer.close() else 1


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--big-mb", type=int, default=200, help="0: skip the memory run")
    ap.add_argument("--child-produce", metavar="FILE", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_produce:
        return child_produce(args.child_produce)
    os.environ.update(devstack.DUMMY_AWS_ENV)
    tmp = Path(tempfile.mkdtemp(prefix="bench-tail-"))
    info = devstack.up(tmp / "stack")
    from bench.bench_producer import Sink

    sink = Sink()
    results: dict = {"args": vars(args), "runs": [], "load_at_start": os.getloadavg()[0]}
    try:
        base = {**info.env(), "SHARDLINE_PRODUCER_AGGREGATE": "true",
                "SHARDLINE_AGENT_HOST_ID": HOST, "PYTHONPATH": str(ROOT)}
        log = tmp / "access.log"
        size = write_log(log, args.lines)
        for rep in range(args.repeat):
            for side in ("producer", "tail") if rep % 2 == 0 else ("tail", "producer"):
                stream = f"bench-tail-{side}-{rep}-{int(time.time())}"
                shardline("create-stream", "--stream", stream, "--shards", "4", env=base)
                env = {**base, "SHARDLINE_KINESIS_STREAM": stream}
                got = run_tail(env, log, size, tmp / f"state-{rep}") if side == "tail" \
                    else run_producer(env, log)
                got.pop("samples", None)
                got.update(side=side, rep=rep, lines_per_s=args.lines / got["wall_s"],
                           cpu_us_per_line=got["cpu_s"] / args.lines * 1e6)
                results["runs"].append(got)
                print(json.dumps(got), flush=True)
        if args.big_mb:
            big = tmp / "big.log"
            lines = args.big_mb * 1024 * 1024 // 190
            big_size = write_log(big, lines, start=10**6)
            env = {**base, "SHARDLINE_KINESIS_STREAM": "bench-tail-big",
                   "SHARDLINE_KINESIS_ENDPOINT_URL": sink.url}
            got = run_tail(env, big, big_size, tmp / "state-big", sample_rss=True)
            samples = got.pop("samples")
            rss = [s[2] for s in samples if s[1] > 0]
            got.update(bytes=big_size, lines=lines, rss_first_kb=rss[0] if rss else None,
                       rss_max_kb=max(rss) if rss else None,
                       rss_by_progress={f"{q}%": next((s[2] for s in samples
                                                       if s[1] >= big_size * q / 100), None)
                                        for q in (10, 25, 50, 75, 100)},
                       lines_per_s=lines / got["wall_s"],
                       cpu_us_per_line=got["cpu_s"] / lines * 1e6)
            results["memory"] = got
            print(json.dumps({"memory": got}), flush=True)
    finally:
        sink.stop()
        devstack.down(tmp / "stack")
        shutil.rmtree(tmp, ignore_errors=True)  # the big file alone is --big-mb
    summary = {}
    for side in ("producer", "tail"):
        runs = [r for r in results["runs"] if r["side"] == side]
        summary[f"{side}_lines_per_s"] = statistics.median(r["lines_per_s"] for r in runs)
        summary[f"{side}_cpu_us_per_line"] = statistics.median(r["cpu_us_per_line"]
                                                               for r in runs)
    summary["tail_cpu_over_producer"] = (summary["tail_cpu_us_per_line"]
                                         / summary["producer_cpu_us_per_line"])
    summary["tail_lines_per_cpu_s"] = 1e6 / summary["tail_cpu_us_per_line"]
    results["summary"] = summary
    print(json.dumps({"summary": summary}), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_tail.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
