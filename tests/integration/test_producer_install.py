"""``pip install shardline`` without extras is what a web front end installs: the producer
library works there against a real Kinesis (kinesalite) with none of the pipeline's packages,
and a pipeline command says in one line what to install instead of failing with a traceback.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from shardline.exitcodes import ExitCode
from tests.pipeline import read_stream
from tests.wheel_build import REPO, build_wheel

pytestmark = pytest.mark.integration

PIPELINE_MODULES = ("psycopg2", "gearman", "supervisor", "tenacity", "aws_kinesis_agg")
PATHS = ("/", "/products/linen-shirt", "/cart", "/blog/how-we-ship-faster", "/nowhere")


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the wheel and what its install_requires pull in, nothing else
    (pip resolves them from the configured registry and its cache)."""
    root = tmp_path_factory.mktemp("bare")
    wheel = build_wheel(root)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
                    "install", "-q", str(wheel)], check=True, timeout=600)
    return venv


def _env(base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
    # Nothing of this checkout or of the test's own venv may leak into the bare one.
    env = {k: v for k, v in (base or os.environ).items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, **extra}


def _run(venv: Path, *args: str, env: dict[str, str] | None = None,
         ) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120,
                          cwd=venv.parent, env=_env(env))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_pipeline_packages_are_not_installed(bare_venv: Path):
    python = str(bare_venv / "bin" / "python")
    for module in PIPELINE_MODULES:
        done = _run(bare_venv, python, "-c", f"import {module}")
        assert done.returncode != 0 and "ModuleNotFoundError" in done.stderr, module
    ok = _run(bare_venv, python, "-c", "import shardline.producer, shardline.producer.middleware"
              "; print(shardline.producer.__file__)")
    assert ok.returncode == 0, ok.stderr
    assert str(bare_venv) in ok.stdout  # the wheel's copy, not the checkout


@pytest.mark.parametrize("argv", [("consumer", "--help"), ("migrate",), ("worker",)])
def test_a_pipeline_command_names_the_extra_in_one_line(bare_venv: Path, argv: tuple[str, ...]):
    done = _run(bare_venv, str(bare_venv / "bin" / "shardline"), *argv)
    assert done.returncode == ExitCode.NOT_INSTALLED, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith(f"shardline {argv[0]}: ")
    assert "psycopg2-binary" in lines[0] and "pygearman" in lines[0]
    assert "pip install 'shardline[pipeline]'" in lines[0]


def test_a_front_end_in_the_bare_install_sends_page_views(bare_venv: Path, stack_env, kinesis,
                                                          stream_name: str):
    env = _env(stack_env, SHARDLINE_KINESIS_STREAM=stream_name)
    created = _run(bare_venv, str(bare_venv / "bin" / "shardline"), "create-stream",
                   "--stream", stream_name, "--shards", "2", env=env)
    assert created.returncode == 0, created.stderr
    port = _free_port()
    # The example site (WSGI middleware + Producer) under wsgiref, by the bare venv's python.
    server = subprocess.Popen(
        [str(bare_venv / "bin" / "python"), "-u", str(REPO / "examples" / "pageview_app.py"),
         "--port", str(port)], cwd=bare_venv.parent, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        assert "serving on" in server.stdout.readline()
        for path in PATHS:
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                             headers={"User-Agent": "install-test/1.0"})
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    response.read()
            except urllib.error.HTTPError as exc:  # /nowhere: a 404 is a page view too
                assert exc.code == 404
        server.send_signal(signal.SIGINT)  # the example closes its producer: flushes
        _, err = server.communicate(timeout=60)
        assert server.returncode == 0, err
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    deadline = time.monotonic() + 30
    while True:
        views = [json.loads(data) for data in read_stream(kinesis, stream_name).values()]
        if len(views) >= len(PATHS) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert sorted(v["url"] for v in views) == sorted(f"http://127.0.0.1:{port}{p}"
                                                     for p in PATHS)
    assert {v["user_agent"] for v in views} == {"install-test/1.0"}
    assert len({v["event_id"] for v in views}) == len(PATHS)


def test_shardline_tail_in_the_bare_install_sends_lines(bare_venv: Path, stack_env, kinesis,
                                                         stream_name: str, tmp_path: Path):
    """A log host installs the wheel alone: ``shardline tail`` and ``status --tail`` need
    nothing more."""
    env = _env(stack_env, SHARDLINE_KINESIS_STREAM=stream_name,
               SHARDLINE_TAIL_STATE_DIR=str(tmp_path / "state"), SHARDLINE_TAIL_POLL_S="0.05")
    created = _run(bare_venv, str(bare_venv / "bin" / "shardline"), "create-stream",
                   "--stream", stream_name, "--shards", "1", env=env)
    assert created.returncode == 0, created.stderr
    log = tmp_path / "app.log"
    log.write_text("first line\nsecond line\n")
    tail = subprocess.Popen([str(bare_venv / "bin" / "shardline"), "tail", "--from-beginning",
                             str(tmp_path / "*.log")], cwd=bare_venv.parent, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            lines = sorted(json.loads(d)["line"] for d in read_stream(kinesis, stream_name)
                           .values())
            if len(lines) >= 2 or time.monotonic() > deadline or tail.poll() is not None:
                break
            time.sleep(0.5)
        tail.send_signal(signal.SIGTERM)
        _, err = tail.communicate(timeout=60)
        assert tail.returncode == ExitCode.OK, err
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    assert lines == ["first line", "second line"]
    # ... and the host checks it there too: status --tail needs no pipeline package
    status = _run(bare_venv, str(bare_venv / "bin" / "shardline"), "status", "--tail",
                  "--json", env=env)
    assert status.returncode == ExitCode.OK, (status.stdout, status.stderr)
    (file,) = json.loads(status.stdout)["files"]
    assert file["path"] == str(log) and file["offset"] == file["size"] == 23


def test_shardline_relay_in_the_bare_install_takes_a_line(bare_venv: Path, stack_env, kinesis,
                                                          stream_name: str, tmp_path: Path):
    """A PHP host installs the wheel alone: ``shardline relay`` needs nothing more."""
    import shutil
    import tempfile

    sock = os.path.join(tempfile.mkdtemp(prefix="sl-bare-", dir="/tmp"), "relay.sock")
    env = _env(stack_env, SHARDLINE_KINESIS_STREAM=stream_name,
               SHARDLINE_RELAY_STATE_DIR=str(tmp_path / "relay"),
               SHARDLINE_RELAY_SOCKET_PATH=sock)
    created = _run(bare_venv, str(bare_venv / "bin" / "shardline"), "create-stream",
                   "--stream", stream_name, "--shards", "1", env=env)
    assert created.returncode == 0, created.stderr
    relay = subprocess.Popen([str(bare_venv / "bin" / "shardline"), "relay"],
                             cwd=bare_venv.parent, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not os.path.exists(sock) and relay.poll() is None and \
                time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.2)
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(sock)
            s.sendall(b'{"event_id":"bare-1","session_id":"s"}\n')
            assert s.recv(100) == b"OK bare-1\n"
        relay.send_signal(signal.SIGTERM)
        _, err = relay.communicate(timeout=60)
        assert relay.returncode == ExitCode.OK, err
    finally:
        if relay.poll() is None:
            relay.kill()
            relay.wait()
        shutil.rmtree(os.path.dirname(sock), ignore_errors=True)
    assert [json.loads(d)["event_id"] for d in read_stream(kinesis, stream_name).values()] \
        == ["bare-1"]
