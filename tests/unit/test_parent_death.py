"""A program of a SIGKILLed supervisord stops gracefully instead of living on as an orphan."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

# The "program": installs the two-step stop with follow_parent, then waits for a stop and
# reports what it saw; a second phase shows that a later SIGTERM is a first one, not a
# forcing second.
CHILD = """
import sys, time
from shardline.lifecycle import StopSignals
out = open(sys.argv[1], "w", buffering=1)
stop = StopSignals()
stop.install(follow_parent=True)
out.write(f"ready {stop.follow_parent()}\\n")
while not stop.requested:
    time.sleep(0.02)
out.write(f"stopping reason={stop.reason} asks={stop.asks} forced={stop.forced}\\n")
seen = stop.asks
deadline = time.monotonic() + 5
while stop.asks == seen and time.monotonic() < deadline:
    time.sleep(0.02)
out.write(f"then asks={stop.asks} forced={stop.forced}\\n")
"""
# The "supervisord": starts the program and waits (SIGKILLed by the test).
PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]])
print(child.pid, flush=True)
time.sleep(120)
"""


def _wait_for(path: Path, text: str, timeout: float = 10.0) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in {path.read_text() if path.exists() else ''!r}")


def _start(tmp_path: Path, supervised: bool) -> tuple[subprocess.Popen[str], int, Path]:
    out = tmp_path / "child.out"
    env = {k: v for k, v in os.environ.items() if k != "SUPERVISOR_ENABLED"}
    if supervised:
        env["SUPERVISOR_ENABLED"] = "1"  # what supervisord gives its programs
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, str(out)], env=env,
                              stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    _wait_for(out, "ready")
    return parent, child, out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_supervisord_killed_program_stops_gracefully(tmp_path: Path) -> None:
    parent, child, out = _start(tmp_path, supervised=True)
    try:
        assert "ready True" in out.read_text()
        parent.kill()  # supervisord SIGKILLed: the program is not signalled by anyone
        parent.wait(10)
        text = _wait_for(out, "stopping")
        assert "reason=supervisord is gone asks=1 forced=False" in text, text
        os.kill(child, signal.SIGTERM)  # the agent's or an operator's SIGTERM afterwards
        text = _wait_for(out, "then")
        assert "then asks=2 forced=False" in text, text  # a first SIGTERM, not a forcing one
    finally:
        parent.kill()
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_outside_supervisord_nothing_changes(tmp_path: Path) -> None:
    parent, child, out = _start(tmp_path, supervised=False)
    try:
        assert "ready False" in out.read_text()
        parent.kill()
        parent.wait(10)
        time.sleep(1.0)
        assert "stopping" not in out.read_text()  # a program started by hand goes on
        os.kill(child, signal.SIGTERM)
        assert "reason=signal SIGTERM asks=1" in _wait_for(out, "stopping")
    finally:
        parent.kill()
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
