"""`make bench`: every benchmark in turn, each on a local stack of its own.

Figures go to stdout and bench/results/*.json; docs/benchmarks.md quotes them.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_consumer.py", "bench_stage.py", "bench_loader.py", "bench_pipeline.py",
           "bench_producer.py", "bench_commits.py", "bench_dedup.py", "bench_modes.py",
           "bench_archive.py", "bench_tail.py", "bench_lake.py"]


def main() -> int:
    failed = []
    for script in SCRIPTS:
        print(f"\n=== {script}", flush=True)
        if subprocess.run([sys.executable, str(HERE / script)]).returncode != 0:
            failed.append(script)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
