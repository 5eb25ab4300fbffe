"""Memory per process: PSS, USS and RSS of each kind of process of a small real fleet.

    .venv/bin/python bench/bench_memory.py [--shards 4] [--workers 2] [--rate 400]
                                           [--warm 20] [--samples 5] [--every 3]

One process per shard is the design, so a consumer's memory decides how many shards a host
holds. This starts the local stack (``shardline.devstack.up`` in a temporary directory) and
one agent-mode host under supervisord (``shardline.devstack.fleet.Fleet``): the agent, which
starts a consumer per shard, ``--workers`` stage workers and the loader, while ``shardline
produce`` keeps the stream flowing at ``--rate`` events/s. Once every consumer runs, rows reach
the warehouse and ``--warm`` more seconds have passed, it reads
``/proc/PID/smaps_rollup`` of every program ``--samples`` times, ``--every`` seconds apart,
and reports per kind of process the median over samples and processes:

- PSS: resident pages, each shared page divided by the number of processes mapping it (what
  N copies of the process really cost: shared libraries are counted once overall);
- USS: pages only this process maps (what stopping it would free);
- RSS: every resident page, shared ones in full (what ``ps`` shows).

``--imports`` also says what a consumer's memory is: in a fresh interpreter, the private
memory (USS) each step of a consumer's start adds (the interpreter, the command-line layer,
the consumer's modules, psycopg2, gearman, botocore, the Kinesis client), beside the running
consumers' figure (the difference is buffers, thread stacks and heap in use). The medians go
to ``bench/results/bench_memory.json`` (``bench/compare_revisions.py`` compares two
revisions).
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shardline import devstack  # noqa: E402
from shardline.devstack.fleet import DEMO_SETTINGS, SHARDLINE, Fleet, shardline  # noqa: E402
from shardline.devstack.fleet import wait_for  # noqa: E402
from shardline.devstack.fleet import warehouse_query as query  # noqa: E402
from shardline.ops.supervisor_render import program_names  # noqa: E402

FIELDS = {"Pss": "pss", "Rss": "rss", "Private_Clean": "uss", "Private_Dirty": "uss"}
KINDS = ("consumer", "worker", "loader", "agent", "metrics")


def smaps(pid: int) -> dict[str, float]:
    """PSS, USS and RSS of one process in MB (1 MB = 2**20 bytes), from smaps_rollup."""
    out = {"pss": 0.0, "uss": 0.0, "rss": 0.0}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        if key in FIELDS:
            out[FIELDS[key]] += int(rest.split()[0]) / 1024  # kB
    return out


def kind_of(program: str) -> str | None:
    names = program_names("")
    base = program.split(":")[-1]
    for kind in KINDS:
        if base.startswith(names[kind]):
            return kind
    return None


def sample(fleet: Fleet) -> dict[str, list[dict[str, float]]]:
    """kind -> one reading per running process of that kind."""
    out: dict[str, list[dict[str, float]]] = {}
    for program, (state, pid) in fleet.status().items():
        kind = kind_of(program)
        if kind and state == "RUNNING" and pid:
            try:
                out.setdefault(kind, []).append(smaps(pid))
            except OSError:  # it ended between status and the read
                continue
    return out


# A consumer's start, in its order: what each step adds to the process's private memory.
START_STEPS = (
    ("the interpreter", ""),
    ("shardline.cli (argparse, settings, logs, the extras check)", "import shardline.cli"),
    ("the consumer's modules (tenacity, prometheus_client, control store, ...)",
     "import shardline.consumers.main"),
    ("psycopg2 (the PostgreSQL control store)", "import psycopg2"),
    ("gearman (the dispatcher's client)", "import gearman"),
    ("botocore's modules", "import botocore.session"),
    ("the Kinesis client (service model, endpoints, ruleset)",
     "from shardline.kinesis import kinesis_client\n"
     "from shardline import settings\n"
     "kinesis_client(settings.load(None, env={'SHARDLINE_AWS_REGION': 'us-east-1', "
     "'SHARDLINE_KINESIS_ENDPOINT_URL': 'http://127.0.0.1:1'}), raw_timestamps=True)"),
)
STEP_SCRIPT = """
import json, os, sys
os.environ.update(AWS_ACCESS_KEY_ID='bench', AWS_SECRET_ACCESS_KEY='bench')
def uss():
    kb = 0
    for line in open('/proc/self/smaps_rollup').read().splitlines()[1:]:
        key, _, rest = line.partition(':')
        if key in ('Private_Clean', 'Private_Dirty'):
            kb += int(rest.split()[0])
    return kb / 1024
out = []
for code in json.loads(sys.argv[1]):
    exec(code)
    out.append([uss(), len(sys.modules)])
print(json.dumps(out))
"""


def start_report() -> list[dict[str, object]]:
    """USS (MB) and modules each step of a consumer's start adds, in a fresh interpreter."""
    codes = json.dumps([code for _, code in START_STEPS])
    done = subprocess.run([sys.executable, "-c", STEP_SCRIPT, codes], text=True,
                          capture_output=True, timeout=120, check=True)
    readings = json.loads(done.stdout)
    report, previous = [], (0.0, 0)
    for (what, _), (uss, modules) in zip(START_STEPS, readings, strict=True):
        report.append({"step": what, "uss_mb": uss - previous[0],
                       "modules": modules - previous[1]})
        previous = (uss, modules)
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rate", type=int, default=400, help="events/s while measuring")
    parser.add_argument("--warm", type=float, default=20.0, help="seconds before sampling")
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--every", type=float, default=3.0)
    parser.add_argument("--imports", action="store_true", help="also a consumer's imports")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    info = devstack.up(work / "stack")
    stream = "bench-memory"
    env = {**os.environ, **info.env(), **DEMO_SETTINGS, "PYTHONUNBUFFERED": "1",
           "SHARDLINE_KINESIS_STREAM": stream}
    producer: subprocess.Popen[bytes] | None = None
    fleet = Fleet(work / "fleet", env, stream, args.workers, agent_host="bench-host")
    readings: dict[str, list[dict[str, float]]] = {}
    try:
        shardline("create-stream", "--stream", stream, "--shards", str(args.shards), env=env)
        shardline("migrate", env=env)
        producer = subprocess.Popen(
            [SHARDLINE, "produce", "--stream", stream, "--count", str(args.rate * 3600),
             "--rate", str(args.rate), "--quiet"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        fleet.start()
        consumers = program_names("")["consumer"]

        def all_consumers() -> bool:
            running = [p for p, (st, _) in fleet.status().items()
                       if p.split(":")[-1].startswith(consumers) and st == "RUNNING"]
            return len(running) >= args.shards

        wait_for(all_consumers, 180, f"{args.shards} running consumers", every=1)
        wait_for(lambda: query(env, "SELECT count(*) FROM page_views")[0][0] > 0, 180,
                 "rows in the warehouse (the whole path flowing)", every=1)
        time.sleep(args.warm)
        for i in range(args.samples):
            if i:
                time.sleep(args.every)
            for kind, values in sample(fleet).items():
                readings.setdefault(kind, []).extend(values)
    except TimeoutError:
        print(fleet.logs(600), file=sys.stderr)
        raise
    finally:
        if producer is not None:
            producer.terminate()
            producer.wait(30)
        fleet.stop()
        devstack.down(work / "stack")

    median: dict[str, float] = {}
    kinds: dict[str, dict[str, float]] = {}
    print(f"memory per process, MB (2**20 B), medians of {args.samples} samples x processes "
          f"({args.shards} shards, {args.workers} stage workers, {args.rate} events/s):")
    print(f"  {'kind':<10} {'procs':>5} {'PSS':>8} {'USS':>8} {'RSS':>8}")
    for kind in KINDS:
        values = readings.get(kind)
        if not values:
            continue
        procs = len(values) // args.samples or 1
        row = {m: statistics.median(v[m] for v in values) for m in ("pss", "uss", "rss")}
        kinds[kind] = {"processes": procs, **row}
        for m, v in row.items():
            median[f"{kind}_{m}_mb"] = v
        print(f"  {kind:<10} {procs:>5} {row['pss']:>8.1f} {row['uss']:>8.1f} {row['rss']:>8.1f}")
    results: dict[str, object] = {"shards": args.shards, "workers": args.workers,
                                  "rate": args.rate, "samples": args.samples,
                                  "kinds": kinds, "median": median}
    if args.imports:
        report = start_report()
        results["consumer_start"] = report
        print("\na consumer's start, step by step (USS added, MB; modules added):")
        for entry in report:
            print(f"  {entry['step']:<72} {entry['uss_mb']:>6.1f} {entry['modules']:>5}")
        total = sum(float(str(e["uss_mb"])) for e in report)
        print(f"  {'together (the rest of a running consumer: buffers, threads, heap)':<72} "
              f"{total:>6.1f}")
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "bench_memory.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
