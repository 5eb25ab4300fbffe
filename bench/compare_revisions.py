"""Before/after: run one benchmark alternately in two checkouts, in one session.

A refactor must not make things slower, and this 2-core machine is shared: two runs of
the same code minutes apart can differ 2x. So the old and the new checkout (each with its
own ``.venv``, e.g. a ``git worktree`` of the old revision) take turns, ``--rounds`` times,
and the report gives each metric's median per side and the new/old ratio.

    .venv/bin/python bench/compare_revisions.py --old ../old --new . \\
        --bench bench_consumer.py --rounds 3 -- --records 100000 --repeat 1

Each round runs ``<checkout>/.venv/bin/python <checkout>/bench/<bench> ARGS`` and reads
the JSON the benchmark writes to ``<checkout>/bench/results/<name>.json``; numbers found
under ``median`` or ``summary`` (or at the top level) are the metrics.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path


def metrics(result: dict) -> dict[str, float]:
    source = result.get("median") or result.get("summary") or result
    out = {}
    for k, v in source.items():
        if isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v):
            v = statistics.median(v)  # e.g. a baseline measured in every repetition
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out


def run_once(checkout: Path, bench: str, args: list[str]) -> dict[str, float]:
    python = checkout / ".venv" / "bin" / "python"
    subprocess.run([str(python), str(checkout / "bench" / bench), *args], cwd=checkout,
                   check=True, stdout=sys.stderr)
    out = checkout / "bench" / "results" / (Path(bench).stem + ".json")
    return metrics(json.loads(out.read_text()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", type=Path, required=True, help="checkout of the old revision")
    ap.add_argument("--new", type=Path, required=True, help="checkout of the new revision")
    ap.add_argument("--bench", required=True, help="script name under bench/")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, help="write every round's metrics here")
    ap.add_argument("args", nargs="*", help="arguments for the benchmark (after --)")
    ns = ap.parse_args(argv)
    sides: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    for i in range(ns.rounds):
        order = ("old", "new") if i % 2 == 0 else ("new", "old")  # neither side always first
        for side in order:
            print(f"round {i + 1}/{ns.rounds}: {side}", file=sys.stderr, flush=True)
            sides[side].append(run_once(getattr(ns, side).resolve(), ns.bench, ns.args))
    keys = sorted(set(sides["old"][0]) & set(sides["new"][0]))
    print(f"{ns.bench}: medians of {ns.rounds} alternating rounds")
    print(f"  {'metric':<28} {'old':>12} {'new':>12} {'new/old':>8}")
    for key in keys:
        old = statistics.median(r[key] for r in sides["old"])
        new = statistics.median(r[key] for r in sides["new"])
        ratio = f"{new / old:.2f}" if old else "-"
        print(f"  {key:<28} {old:>12,.1f} {new:>12,.1f} {ratio:>8}")
    if ns.json:
        ns.json.write_text(json.dumps(sides, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
