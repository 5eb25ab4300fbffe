"""A real ``shardline tail`` (kinesalite) seen through ``shardline status --tail`` and its own
``/metrics``: healthy while it keeps up, an alert (exit 3) once it is stopped (SIGSTOP) while
its file grows, healthy again once it runs on, and a file it lets go leaves the scrape."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shardline.devstack.fleet import shardline, wait_for
from shardline.exitcodes import ExitCode
from tests.pipeline import free_address
from tests.producer_kit import interpreter_env, python

pytestmark = pytest.mark.integration


def _status(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shardline.cli", "status", "--tail", "--json"],
                          env=env, capture_output=True, text=True, timeout=60)


def _scrape_tail(address: str) -> dict[tuple[str, str], float]:
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, s.labels.get("path", "")): s.value
            for f in text_string_to_metric_families(text) for s in f.samples
            if s.name.startswith("shardline_tail_")}


def test_status_and_metrics_see_a_stalled_tailer(stack_env, stream_name, tmp_path: Path):
    address = free_address()
    env = {**stack_env, **interpreter_env(), "SHARDLINE_KINESIS_STREAM": stream_name,
           "SHARDLINE_TAIL_STATE_DIR": str(tmp_path / "state"),
           "SHARDLINE_TAIL_POLL_S": "0.05", "SHARDLINE_TAIL_ROTATE_WAIT_S": "0.5",
           "SHARDLINE_TAIL_REPORT_INTERVAL_S": "0.2", "SHARDLINE_TAIL_STALL_ALERT_S": "1.5",
           "SHARDLINE_TAIL_METRICS_ADDRESS": address, "SHARDLINE_PRODUCER_LINGER_MS": "20"}
    shardline("create-stream", "--stream", stream_name, "--shards", "1", env=env)
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "app.log"
    log.write_text("first line\n")
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            with log.open("a") as f:
                f.write(f"line {n}\n")
            n += 1
            time.sleep(0.02)

    writer = threading.Thread(target=write, daemon=True)
    err = (tmp_path / "tail.err").open("wb")
    tail = python("-m", "shardline.cli", "tail", "--from-beginning", str(logs / "*.log"),
                  env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        writer.start()

        def healthy() -> bool:
            done = _status(env)
            if done.returncode != ExitCode.OK:
                return False
            files = json.loads(done.stdout)["files"]
            return [f["path"] for f in files] == [str(log)] and files[0]["offset"] > 0

        wait_for(healthy, 30, "status --tail healthy with the file's offset moving",
                 every=0.3)
        series = _scrape_tail(address)
        assert series[("shardline_tail_offset_bytes", str(log))] > 0
        assert series[("shardline_tail_stalled", str(log))] == 0
        assert series[("shardline_tail_oldest_unsent_age_seconds", str(log))] < 1.5

        tail.send_signal(signal.SIGSTOP)     # hung: no reading, no reporting
        time.sleep(2.0)
        stalled = _status(env)
        assert stalled.returncode == ExitCode.ALERT, (stalled.stdout, stalled.stderr)
        assert f"ALERT tail: {log} is not advancing" in stalled.stderr
        assert "last reported" in stalled.stdout  # and it says the tailer stopped reporting

        tail.send_signal(signal.SIGCONT)      # runs on: catches up, the alert clears
        wait_for(lambda: _status(env).returncode == ExitCode.OK, 20, "the alert to clear",
                 every=0.3)

        stop.set()
        writer.join(5)
        log.rename(logs / "app.log.1")        # rotated away and quiet: let go
        wait_for(lambda: not [k for k in _scrape_tail(address) if k[1]], 20,
                 "the file's series to leave the scrape", every=0.3)
        tail.send_signal(signal.SIGTERM)
        assert tail.wait(30) == 0, (tmp_path / "tail.err").read_text()[-3000:]
    finally:
        stop.set()
        if tail.poll() is None:
            tail.send_signal(signal.SIGCONT)
            tail.kill()
            tail.wait()
        err.close()
