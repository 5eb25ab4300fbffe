"""The error class decides the exit code that supervisord sees."""
from __future__ import annotations

import pytest

from shardline import cli
from shardline.errors import (BatchFailed, ConfigError, FatalError, LeaseHeld, LeaseLost,
                              LoadFailed, ServiceUnavailable, ThrottledError)
from shardline.exitcodes import ExitCode


@pytest.mark.parametrize("exc, code", [
    (ConfigError("x"), ExitCode.CONFIG),
    (LeaseHeld("x"), ExitCode.LEASE_HELD),
    (LeaseLost("x"), ExitCode.LEASE_LOST),
    (BatchFailed("x"), ExitCode.BATCH_FAILED),
    (ServiceUnavailable("x"), ExitCode.UNAVAILABLE),
    (ThrottledError("x"), ExitCode.UNAVAILABLE),
    (LoadFailed("x"), ExitCode.UNAVAILABLE),
    (FatalError("x"), ExitCode.CRASH),
])
def test_exit_code_follows_the_error_class(exc, code):
    assert cli.exit_for(exc)[0] == code


def test_a_command_error_becomes_its_exit_code_and_message(monkeypatch, capsys):
    def boom(argv):
        raise LeaseHeld("shard s-1 is held by host:1")

    monkeypatch.setitem(cli.COMMANDS, "boom", ("tests.unit.test_cli:_unused", "test"))
    monkeypatch.setattr(cli.importlib, "import_module", lambda name: type("M", (), {"_unused": staticmethod(boom)}))
    assert cli.main(["boom"]) == ExitCode.LEASE_HELD
    assert "held by host:1" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error(capsys):
    assert cli.main(["nope"]) == ExitCode.USAGE
    assert "unknown command" in capsys.readouterr().err
