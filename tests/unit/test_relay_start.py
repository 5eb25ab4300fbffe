"""``shardline relay`` stops at start with one line and exit CONFIG for what it cannot run
with: no stream, no state directory, one it cannot write, a bad setting, a socket another
relay answers on."""
from __future__ import annotations

import os
import socket

import pytest

from shardline import cli
from shardline.exitcodes import ExitCode


@pytest.fixture
def clean_env(monkeypatch):
    for name in list(os.environ):
        if name.startswith("SHARDLINE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    return monkeypatch


def run(capsys, *argv: str) -> tuple[int, str]:
    code = cli.main(["relay", *argv])
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return code, err


def test_no_stream_no_state_dir_unwritable_and_bad_values(clean_env, capsys, tmp_path):
    code, err = run(capsys)
    assert code == ExitCode.CONFIG and "kinesis.stream is required" in err
    code, err = run(capsys, "--stream", "s")
    assert code == ExitCode.CONFIG and "relay.state_dir is required" in err
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.geteuid() != 0:   # root writes anywhere
        code, err = run(capsys, "--stream", "s", "--set", f"relay.state_dir={locked}")
        assert code == ExitCode.CONFIG and "not writable" in err
    code, err = run(capsys, "--stream", "s", "--set", "relay.tcp_address=0.0.0.0:9000")
    assert code == ExitCode.CONFIG and "relay.tcp_address" in err and "127.0.0.1" in err
    code, err = run(capsys, "--stream", "s", "--set", "relay.socket_mode=rw")
    assert code == ExitCode.CONFIG and "relay.socket_mode" in err
    code, err = run(capsys, "--stream", "s", "--set", f"relay.state_dir={tmp_path}",
                    "--set", "relay.socket_path=" + "/tmp/" + "x" * 120)
    assert code == ExitCode.CONFIG and "too long" in err


def test_a_socket_another_relay_answers_on_is_refused(clean_env, capsys, tmp_path):
    sock = f"/tmp/sl-relay-test-{os.getpid()}.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(sock)
        listener.listen(1)
        try:
            code, err = run(capsys, "--stream", "s", "--set", f"relay.state_dir={tmp_path}",
                            "--set", f"relay.socket_path={sock}")
        finally:
            os.unlink(sock)
    assert code == ExitCode.CONFIG and "another relay is listening" in err


def test_a_state_dir_another_relay_holds_is_refused(clean_env, capsys, tmp_path):
    import fcntl

    with open(tmp_path / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        code, err = run(capsys, "--stream", "s", "--set", f"relay.state_dir={tmp_path}")
    assert code == ExitCode.CONFIG and "in use by another relay" in err
