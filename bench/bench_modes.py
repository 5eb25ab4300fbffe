#!/usr/bin/env python
"""End-to-end throughput with the warehouse in the redshift-like mode (SERIALIZABLE, 300 ms
per COMMIT, no index on event_id) beside the plain PostgreSQL mode, in the same run.

    .venv/bin/python bench/bench_modes.py [--events 40000] [--repeat 3] [--latency-ms 300]

Two local stacks (one per mode), each with a 4-shard stream pre-filled with the same
``--events`` (same seed); each run starts the real fleet (supervisord, 2 stage workers, the
loader, the control store on PostgreSQL beside the warehouse) on a fresh schema and times
until every valid event is queryable (``bench_pipeline.run_fleet``, drain settings).
Alternating modes, ``--repeat`` times; medians and the redshift-like / postgres ratio.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_pipeline import DRAIN, run_fleet  # noqa: E402
from shardline import devstack  # noqa: E402
from shardline.devstack.fleet import shardline  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--latency-ms", type=int, default=300)
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-modes-"))
    stacks, envs, filled = {}, {}, {}
    results: dict = {"events": a.events, "latency_ms": a.latency_ms, "runs": []}
    try:
        for mode in ("postgres", "redshift-like"):
            info = devstack.up(work / mode, warehouse=mode,
                               commit_latency_ms=a.latency_ms if mode != "postgres" else None)
            stacks[mode] = info
            envs[mode] = {**os.environ, **info.env(), "PYTHONUNBUFFERED": "1"}
            envs[mode].pop("SHARDLINE_CONFIG", None)
            shardline("create-stream", "--stream", "bench-modes", "--shards", "4",
                      env=envs[mode])
            summary = work / f"{mode}.json"
            shardline("produce", "--stream", "bench-modes", "--count", str(a.events),
                      "--rate", "0", "--bad-fraction", "0.01", "--seed", "3",
                      "--summary-json", str(summary), "--quiet", env=envs[mode], timeout=600)
            filled[mode] = json.loads(summary.read_text())
        n = 0
        for rep in range(a.repeat):
            for mode in ("postgres", "redshift-like"):
                n += 1
                good, bad = filled[mode]["good"], filled[mode]["bad"]
                run = run_fleet(envs[mode], work, "bench-modes", f"modes_{n}", 2, good, bad,
                                DRAIN, timeout=600)
                run["mode"] = mode
                results["runs"].append(run)
                print(f"  rep {rep + 1}: {mode:14s} {run['events_per_s']:>8,.0f} events/s "
                      f"({run['seconds']:.1f} s)", flush=True)
        med = {m: statistics.median(r["events_per_s"] for r in results["runs"] if r["mode"] == m)
               for m in ("postgres", "redshift-like")}
        results["medians"] = med
        results["ratio"] = med["redshift-like"] / med["postgres"]
        print(f"medians: postgres {med['postgres']:,.0f} events/s, redshift-like "
              f"({a.latency_ms} ms commits) {med['redshift-like']:,.0f} events/s: "
              f"{results['ratio']:.2f}x")
        out = ROOT / "bench" / "results"
        out.mkdir(exist_ok=True)
        (out / "modes.json").write_text(json.dumps(results, indent=1) + "\n")
    finally:
        for mode in stacks:
            devstack.down(work / mode)
    return 0


if __name__ == "__main__":
    sys.exit(main())
