"""The error class decides the exit code that supervisord sees."""
from __future__ import annotations

import importlib
import inspect
import typing

import pytest

from shardline import cli
from shardline.cli.kit import UsageError
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
    monkeypatch.setattr(cli.importlib, "import_module",
                        lambda name: type("M", (), {"_unused": staticmethod(boom)}))
    assert cli.main(["boom"]) == ExitCode.LEASE_HELD
    assert "held by host:1" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error(capsys):
    assert cli.main(["nope"]) == ExitCode.USAGE
    assert "unknown command" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_is_an_importable_main_of_argv_returning_int(name):
    target, help_text = cli.COMMANDS[name]
    module_name, func_name = target.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    assert help_text and callable(func)
    assert len(inspect.signature(func).parameters) == 1  # argv
    assert typing.get_type_hints(func)["return"] is int


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_has_help(name, capsys):
    try:
        code = cli.main([name, "--help"])
    except SystemExit as exc:  # the commands that let argparse exit after --help
        code = exc.code
    assert code in (ExitCode.OK, None)
    assert f"shardline {name}" in capsys.readouterr().out


def test_a_bad_command_line_is_one_usage_line_and_exit_usage(capsys):
    assert cli.main(["settings", "--nope"]) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == "shardline settings: error: unrecognized arguments: --nope"
    assert "Traceback" not in err


def test_a_usage_error_is_handled_once_for_every_command(monkeypatch, capsys):
    def bad(argv):
        raise UsageError("--since and --until cross")

    monkeypatch.setitem(cli.COMMANDS, "bad", ("tests.unit.test_cli:_unused", "test"))
    monkeypatch.setattr(cli.importlib, "import_module",
                        lambda name: type("M", (), {"_unused": staticmethod(bad)}))
    assert cli.main(["bad"]) == ExitCode.USAGE
    assert capsys.readouterr().err == "shardline bad: --since and --until cross\n"
