"""Take docs/status-page.png: the status web page during a short real pipeline run.

A throwaway local stack, a supervisord with one consumer per shard, stage workers and
the loader (``shardline.devstack.fleet.Fleet``, as ``make demo``), a producer at two rates, and
``shardline status --serve`` sampling every 2 s; after the run the page is loaded in
headless Chromium (``tests/browser.py``) and captured, while the last phase runs with one
consumer stopped (so the picture has an alert). About two minutes.

    .venv/bin/python scripts/status_screenshot.py [--out docs/status-page.png]
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shardline import devstack  # noqa: E402
from shardline.devstack.state import free_ports  # noqa: E402
from shardline.devstack.fleet import DEMO_SETTINGS, SHARDLINE, Fleet, shardline  # noqa: E402
from tests.browser import Browser  # noqa: E402


def produce(env: dict[str, str], stream: str, seconds: int, rate: str) -> subprocess.Popen:
    count = seconds * int(rate)
    print(f"producing {count:,} events at {rate}/s", flush=True)
    return subprocess.Popen([SHARDLINE, "produce", "--stream", stream, "--count", str(count),
                             "--rate", rate, "--bad-fraction", "0.01", "--seed", "7", "--quiet"],
                            env=env, stdout=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT / "docs" / "status-page.png"))
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--phases", default="20:300,25:900,30:400",
                        help="SECONDS:EVENTS_PER_S,... the producer runs in turn")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="shardline-shot-"))
    stream = "page-views"
    fleet = serve = None
    info = devstack.up(work / "stack")
    try:
        env = {**os.environ, **info.env(), **DEMO_SETTINGS, "SHARDLINE_WAREHOUSE_SCHEMA": "shot",
               "SHARDLINE_CONTROL_SCHEMA": "shot", "SHARDLINE_KINESIS_STREAM": stream,
               "PYTHONUNBUFFERED": "1"}
        shardline("migrate", env=env)
        shardline("migrate", "--control", env=env)
        shardline("create-stream", "--stream", stream, "--shards", str(args.shards), env=env)
        fleet = Fleet(work / "supervisor", env, stream, 2)
        fleet.start()
        port = free_ports(1)[0]
        serve = subprocess.Popen([SHARDLINE, "status", "--serve", f"127.0.0.1:{port}",
                                  "--interval", "2"], env=env)
        phases = [p.split(":") for p in args.phases.split(",")]
        for seconds, rate in phases[:-1]:
            produce(env, stream, int(seconds), rate).wait()
        # the last phase runs while one consumer is stopped and the picture is taken: an
        # alert (its status row goes stale) with traffic still flowing on the others
        seconds, rate = phases[-1]
        last = produce(env, stream, int(seconds), rate)
        time.sleep(int(seconds) / 2)
        victim = sorted(name for name in fleet.status() if "consumer" in name)[-1]
        print(f"stopping {victim}", flush=True)
        fleet.ctl("stop", victim)
        time.sleep(8)
        with Browser(width=1360, height=900) as page:
            page.open(f"http://127.0.0.1:{port}/")
            page.wait_for("Number(document.body.dataset.refreshes) >= 1")
            time.sleep(0.5)
            page.screenshot(args.out)
        print(f"wrote {args.out}")
        last.wait()
        return 0
    finally:
        if serve is not None:
            serve.send_signal(signal.SIGTERM)
            serve.wait(timeout=10)
        if fleet is not None:
            fleet.stop()
        devstack.down(work / "stack")


if __name__ == "__main__":
    sys.exit(main())
