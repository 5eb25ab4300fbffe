"""shardline.fleet.supervisor against a real supervisord: what the agent relies on.

A `supervisor-config --agent`-style config (rendered by the same code) with a stand-in
program instead of the real consumer, and the include file rewritten by hand the way the
agent does it. Checks: an added group with autostart=false stays STOPPED and never-started;
start/stop do not block (a stop is STOPPING while the program drains); a running group cannot
be removed; reloadConfig reports added/changed/removed from the include file; a program
stopped after it ran reads as started; a changed program reads as changed.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from shardline.fleet.supervisor import Supervisor
from shardline.devstack.fleet import wait_for, wait_gone
from shardline.ops.supervisor_render import Selection, agent_include_name, render, \
    render_consumers
from shardline.settings import Settings

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
# Drains for 1.5 s after SIGTERM, like a consumer finishing its in-flight batches.
STANDIN = """\
import signal, sys, time
def stop(*a):
    time.sleep(1.5)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    time.sleep(1)
"""


@pytest.fixture
def sup_dir():
    out = Path(tempfile.mkdtemp(prefix="slagt-", dir="/tmp"))  # short: unix socket path limit
    yield out
    shutil.rmtree(out, ignore_errors=True)


def test_supervisor_client_against_real_supervisord(sup_dir):
    standin = sup_dir / "standin.py"
    standin.write_text(STANDIN)
    template = f"{sys.executable} {standin} {{args}}"
    include = sup_dir / agent_include_name("")
    settings = Settings().replace(**{"consumer.shutdown_timeout_s": "2"})
    conf = sup_dir / "shardline.conf"
    (sup_dir / "logs").mkdir()
    conf.write_text(render(stream="s", shards=Selection((), (), "-"), out_dir=str(sup_dir),
                           shardline_cmd=["shardline"], settings=settings, workers=1,
                           command_template=template, agent_include=str(include)))

    def write(shards, s=settings):
        include.write_text(render_consumers(stream="s", shards=shards, include=str(include),
                                            shardline_cmd=["shardline"], settings=s,
                                            command_template=template))

    write([])
    subprocess.run([str(BIN / "supervisord"), "-c", str(conf)], check=True)
    pidfile = sup_dir / "supervisord.pid"
    sup = Supervisor(f"unix://{sup_dir / 'supervisor.sock'}")
    try:
        wait_for(lambda: pidfile.exists() and "agent" in sup.processes(), 10, "supervisord")
        assert set(sup.processes()) == {"agent", "stage-worker", "loader"}

        write(["shardId-1", "shardId-2"])
        assert sup.reload() == (["consumer-shardId-1", "consumer-shardId-2"], [], [])
        sup.add("consumer-shardId-1")
        sup.add("consumer-shardId-2")
        sup.add("consumer-shardId-2")  # already added: not an error
        p = sup.processes()["consumer-shardId-1"]
        assert (p.state, p.started, p.running) == ("STOPPED", False, False)

        sup.start("consumer-shardId-1")
        sup.start("consumer-shardId-1")  # already started: not an error
        wait_for(lambda: sup.processes()["consumer-shardId-1"].state == "RUNNING", 10,
                 "RUNNING")
        assert sup.processes()["consumer-shardId-1"].started

        write(["shardId-2"])
        assert sup.reload() == ([], [], ["consumer-shardId-1"])
        t = time.monotonic()
        sup.stop("consumer-shardId-1")
        assert time.monotonic() - t < 1.0, "stop must not wait for the drain"
        assert sup.processes()["consumer-shardId-1"].state == "STOPPING"
        assert sup.remove("consumer-shardId-1") is False  # still running
        wait_for(lambda: sup.processes()["consumer-shardId-1"].state == "STOPPED", 10, "drain")
        assert sup.remove("consumer-shardId-1") is True
        assert sup.remove("consumer-shardId-1") is True  # gone already: not an error
        assert "consumer-shardId-1" not in sup.processes()

        # a program stopped after it ran (by a person) reads as started
        sup.start("consumer-shardId-2")
        wait_for(lambda: sup.processes()["consumer-shardId-2"].state == "RUNNING", 10, "RUN")
        sup.stop("consumer-shardId-2")
        wait_for(lambda: sup.processes()["consumer-shardId-2"].state == "STOPPED", 10, "stop")
        assert sup.processes()["consumer-shardId-2"].started

        # a setting change reads as "changed"
        write(["shardId-2"], Settings().replace(**{"consumer.shutdown_timeout_s": "30"}))
        assert sup.reload() == ([], ["consumer-shardId-2"], [])
        assert sup.state() == "RUNNING"
    finally:
        pid = int(pidfile.read_text()) if pidfile.exists() else None
        subprocess.run([str(BIN / "supervisorctl"), "-c", str(conf), "shutdown"],
                       capture_output=True)
        if pid is not None:
            assert wait_gone(pid, 20)
