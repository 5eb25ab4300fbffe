"""``shardline <command>``: one entry point, each command in its own module.

A command is ``module:function(argv) -> int``; it builds its parser from
``command_parser`` so every command takes ``--config``, ``--set`` and
``--log-level`` the same way, and loads settings with ``load_settings``.
Errors map to named exit codes here, once.
"""
from __future__ import annotations

import argparse
import faulthandler
import importlib
import signal
import sys
from typing import Sequence

from shardline import logs, settings as settings_mod
from shardline.errors import (BatchFailed, ConfigError, LeaseHeld, LeaseLost, NoMigrations,
                              ShardlineError)
from shardline.exitcodes import ExitCode
from shardline.settings import Settings

COMMANDS: dict[str, tuple[str, str]] = {
    "devstack": ("shardline.devstack:main", "start/stop the local stack (up|down|status|env)"),
    "migrate": ("shardline.commands:migrate_main", "create or upgrade the warehouse tables"),
    "create-stream": ("shardline.producer.create_stream:main", "create a Kinesis stream"),
    "produce": ("shardline.producer.produce_cli:produce_main", "put sample page views into a stream"),
    "consumer": ("shardline.consumers.main:main", "read one shard and dispatch batches (one per shard)"),
    "worker": ("shardline.workers.main:main", "run Gearman stage workers"),
    "loader": ("shardline.loaders.main:main", "load staged files into the warehouse"),
    "status": ("shardline.ops.status:main", "one screen of pipeline health"),
    "replay": ("shardline.ops.replay:main", "move a shard's checkpoint back (or list history)"),
    "reprocess": ("shardline.ops.reprocess:main", "re-stage records with the current transform, replacing their rows"),
    "redrive": ("shardline.ops.redrive:main", "send dead letters through the current transform again"),
    "try-transform": ("shardline.ops.try_transform:main", "rows + dead letters of events, offline"),
    "supervisor-config": ("shardline.ops.supervisor_config:main", "write a supervisord config"),
    "agent": ("shardline.fleet.main:main", "this host's agent: spreads the consumers over hosts"),
    "metrics": ("shardline.metrics.main:main", "serve or print this host's Prometheus metrics"),
    "settings": ("shardline.commands:settings_main", "list every setting, its env var and default"),
}


def command_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"shardline {prog}", description=description)
    parser.add_argument("--config", help="settings file (default: $SHARDLINE_CONFIG or "
                                         "./shardline.ini if present)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one setting (repeatable)")
    parser.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def parse_command_args(parser: argparse.ArgumentParser,
                       argv: Sequence[str]) -> tuple[argparse.Namespace | None, int]:
    """``parser.parse_args(argv)`` for a command that returns its exit code, not SystemExit.

    ``(args, OK)``; ``(None, OK)`` after ``--help``; ``(None, USAGE)`` after a usage
    error (argparse has printed it). Callers: ``if args is None: return code``.
    """
    try:
        return parser.parse_args(argv), ExitCode.OK
    except SystemExit as exc:
        return None, ExitCode.OK if not exc.code else ExitCode.USAGE


def load_settings(args: argparse.Namespace, **flags: str | None) -> Settings:
    """File, then env, then ``--set``, then the command's own flags (``{"kinesis.stream": ...}``)."""
    overrides = settings_mod.parse_set_flags(args.set)
    overrides.update({k: str(v) for k, v in flags.items() if v is not None})
    if getattr(args, "log_level", None):
        overrides["log.level"] = args.log_level
    settings = settings_mod.load(args.config, overrides=overrides)
    logs.setup(settings.log.level, settings.log.format)
    return settings


# Most specific first: the class of an error decides the exit code, never its text.
_EXITS: tuple[tuple[type[ShardlineError], ExitCode, str], ...] = (
    (ConfigError, ExitCode.CONFIG, "configuration error: "),
    (NoMigrations, ExitCode.NOT_INSTALLED, "broken install: "),
    (LeaseHeld, ExitCode.LEASE_HELD, ""),
    (LeaseLost, ExitCode.LEASE_LOST, ""),
    (BatchFailed, ExitCode.BATCH_FAILED, ""),
)


def exit_for(exc: ShardlineError) -> tuple[ExitCode, str]:
    """(exit code, message prefix) for an error that ends a command."""
    for cls, code, prefix in _EXITS:
        if isinstance(exc, cls):
            return code, prefix
    code = ExitCode.UNAVAILABLE if exc.retriable else ExitCode.CRASH
    return code, f"{type(exc).__name__}: "


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: shardline <command> [options]   (shardline <command> --help)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return ExitCode.OK if argv else ExitCode.USAGE
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"shardline: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return ExitCode.USAGE
    module_name, func_name = COMMANDS[name][0].split(":")
    # `kill -USR1 PID` prints every thread's stack to stderr (the supervisord log): the
    # first question about a process that looks stuck is "where is it?".
    try:
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    except (ValueError, OSError, AttributeError):  # stderr without a file descriptor
        pass
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(rest))
    except ShardlineError as exc:
        code, prefix = exit_for(exc)
        print(f"shardline {name}: {prefix}{exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return ExitCode.FORCED_STOP


if __name__ == "__main__":
    sys.exit(main())
