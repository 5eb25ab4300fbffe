"""supervisor-config + a real supervisord: one consumer per shard, and a reshard adds the
children's programs through `supervisorctl update` without restarting anything else.

The real consumer/worker/loader are not needed here: the generated commands are
swapped for a stand-in (hidden --command-template) that sleeps until SIGTERM, keeping
the program names and every other option.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from shardline import migrate
from shardline.records.control import SHARD_END, Checkpoint
from shardline.devstack.fleet import wait_gone
from tests.pipeline import wait_active

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
STANDIN = """\
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
while True:
    time.sleep(1)
"""


def _run(args, env, timeout=60):
    return subprocess.run(args, env=env, text=True, capture_output=True, timeout=timeout)


def _shardline(env, *args):
    proc = _run([sys.executable, "-m", "shardline.cli", *args], env)
    assert proc.returncode == 0, f"shardline {args} -> {proc.returncode}\n{proc.stdout}\n" \
                                 f"{proc.stderr}"
    return proc


def _status(conf: Path, env) -> dict[str, tuple[str, int | None]]:
    out = _run([str(BIN / "supervisorctl"), "-c", str(conf), "status"], env).stdout
    result = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            pid = int(parts[parts.index("pid") + 1].rstrip(",")) if "pid" in parts else None
            result[parts[0]] = (parts[1], pid)
    return result


def _wait_running(conf: Path, env, names: set[str], timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = _status(conf, env)
        if all(st.get(n, ("",))[0] == "RUNNING" for n in names):
            return st
        if time.monotonic() > deadline:
            raise AssertionError(f"not all RUNNING: wanted {sorted(names)}, got {st}")
        time.sleep(0.2)


def _wait_pid(pidfile: Path, timeout: float = 10) -> int:
    """supervisord daemonizes: its pid file appears a moment after the launcher exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return int(pidfile.read_text())
        except (FileNotFoundError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _stop_supervisord(conf: Path, env, pidfile: Path) -> None:
    """Always called: shutdown through the socket, then make sure the daemon is gone."""
    pid = None
    try:
        pid = _wait_pid(pidfile, timeout=3)
    except (FileNotFoundError, ValueError):
        pass
    _run([str(BIN / "supervisorctl"), "-c", str(conf), "shutdown"], env)
    if pid is not None and not wait_gone(pid, 20):
        os.kill(pid, 9)


def test_supervisor_config_and_reshard_update(stack_env, stream_name, pg_schema, pg_conn,
                                              kinesis, control_store):
    migrate.migrate(pg_conn, "postgres")
    env = {**stack_env, "SHARDLINE_WAREHOUSE_SCHEMA": pg_schema}
    kinesis.create_stream(StreamName=stream_name, ShardCount=2)
    wait_active(kinesis, stream_name)
    shards = sorted(s["ShardId"] for s in kinesis.list_shards(StreamName=stream_name)["Shards"])
    assert len(shards) == 2

    out = Path(tempfile.mkdtemp(prefix="slsup-", dir="/tmp"))  # short: unix socket path limit
    standin = out / "standin.py"
    standin.write_text(STANDIN)
    template = f"{sys.executable} {standin} {{args}}"
    conf = out / "shardline.conf"
    gen = ["supervisor-config", "--stream", stream_name, "--workers", "2", "--out", str(out),
           "--command-template", template, "--env", "SHARDLINE_LOG_LEVEL=DEBUG",
           "--tail", str(out / "in" / "*.log"), "--tail-table", "access_log",
           "--env", f"SHARDLINE_TAIL_STATE_DIR={out / 'tail'}"]
    launched = False
    try:
        _shardline(env, *gen)
        first = conf.read_bytes()
        _shardline(env, *gen)
        assert conf.read_bytes() == first  # same input -> byte-identical file
        text = first.decode()
        assert "AWS_SECRET_ACCESS_KEY" not in text and "AWS_ACCESS_KEY_ID" not in text

        launched = True
        started = _run([str(BIN / "supervisord"), "-c", str(conf)], env)
        assert started.returncode == 0, started.stderr
        consumers = {f"consumer-{s}" for s in shards}
        others = {"stage-worker:stage-worker_00", "stage-worker:stage-worker_01", "loader",
                  "tail"}
        before = _wait_running(conf, env, consumers | others)
        assert {n for n in before if n.startswith("consumer-")} == consumers

        # the consumer command line the stand-in got: the real arguments
        pid = before[f"consumer-{shards[0]}"][1]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        assert cmdline[-5:] == [b"consumer", b"--stream", stream_name.encode(), b"--shard",
                                shards[0].encode()]
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert b"SHARDLINE_LOG_LEVEL=DEBUG" in environ  # environment= from --env
        assert b"AWS_SECRET_ACCESS_KEY=" in environ  # passed through by supervisord
        # the tailer gets its glob unexpanded (it expands it itself, again and again)
        tail_pid = before["tail"][1]
        cmdline = Path(f"/proc/{tail_pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        assert cmdline[-6:] == [b"tail", b"--stream", stream_name.encode(), b"--table",
                                b"access_log", str(out / "in" / "*.log").encode()]

        # reshard: split the first shard in two
        parent = kinesis.list_shards(StreamName=stream_name)["Shards"][0]
        lo = int(parent["HashKeyRange"]["StartingHashKey"])
        hi = int(parent["HashKeyRange"]["EndingHashKey"])
        kinesis.split_shard(StreamName=stream_name, ShardToSplit=parent["ShardId"],
                            NewStartingHashKey=str((lo + hi) // 2))
        wait_active(kinesis, stream_name)
        children = sorted(s["ShardId"] for s in kinesis.list_shards(StreamName=stream_name)[
            "Shards"] if s.get("ParentShardId") == parent["ShardId"])
        assert len(children) == 2

        _shardline(env, *gen)
        assert conf.read_bytes() != first
        upd = _run([str(BIN / "supervisorctl"), "-c", str(conf), "update"], env)
        assert upd.returncode == 0, upd.stdout + upd.stderr
        new = {f"consumer-{c}" for c in children}
        after = _wait_running(conf, env, consumers | others | new)
        for name, (_, pid) in before.items():  # nothing that was there was restarted
            assert after[name] == ("RUNNING", pid), name
        # the closed parent keeps its consumer: it has no SHARD_END checkpoint yet

        # once the parent is drained (SHARD_END), regenerating drops its program only
        lease = control_store.get_lease(stream_name, parent["ShardId"])
        if lease is not None and lease.live(control_store.now()):  # written as its consumer
            control_store.checkpoint(stream_name, parent["ShardId"], lease.owner, lease.token,
                                     30, Checkpoint(SHARD_END, 0, True))
        else:
            control_store.move_checkpoint(stream_name, parent["ShardId"],
                                          Checkpoint(SHARD_END, 0, True), "test: drained")
        _shardline(env, *gen)
        assert f"[program:consumer-{parent['ShardId']}]" not in conf.read_text()
        upd = _run([str(BIN / "supervisorctl"), "-c", str(conf), "update"], env)
        assert upd.returncode == 0, upd.stdout + upd.stderr
        final = _status(conf, env)
        assert f"consumer-{parent['ShardId']}" not in final
        for name, (_, pid) in after.items():
            if name != f"consumer-{parent['ShardId']}":
                assert final[name] == ("RUNNING", pid), name
    finally:
        if launched:
            _stop_supervisord(conf, env, out / "supervisord.pid")
        shutil.rmtree(out, ignore_errors=True)


def test_supervisor_config_without_warehouse_keeps_all_shards(stack_env, stream_name, kinesis,
                                                              tmp_path):
    env = {**stack_env, "SHARDLINE_WAREHOUSE_DSN": ""}
    kinesis.create_stream(StreamName=stream_name, ShardCount=1)
    wait_active(kinesis, stream_name)
    env_file = tmp_path / "stack.env"
    env_file.write_text("export AWS_SECRET_ACCESS_KEY=zz-not-for-files\n"
                        "export SHARDLINE_LOG_LEVEL='DEBUG'\n")
    proc = _shardline(env, "supervisor-config", "--stream", stream_name, "--print",
                      "--set", "consumer.shutdown_timeout_s=30", "--env-file", str(env_file))
    assert "zz-not-for-files" not in proc.stdout
    assert "not written: AWS_SECRET_ACCESS_KEY" in proc.stderr
    assert 'SHARDLINE_LOG_LEVEL="DEBUG"' in proc.stdout
    assert proc.stdout.count("[program:consumer-") == 1
    # a --set setting reaches the programs, and stopwaitsecs follows it
    assert 'SHARDLINE_CONSUMER_SHUTDOWN_TIMEOUT_S="30"' in proc.stdout
    assert "stopwaitsecs=40" in proc.stdout
    assert "warehouse not reachable" in proc.stderr
    assert "warehouse not reachable" in proc.stdout  # and in the file's header


def test_supervisor_config_unknown_stream_is_a_config_error(stack_env, stream_name):
    proc = _run([sys.executable, "-m", "shardline.cli", "supervisor-config", "--stream",
                 stream_name, "--print"], stack_env)
    assert proc.returncode == 78, proc.stderr
    assert "ResourceNotFound" in proc.stderr
