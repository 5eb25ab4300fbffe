"""``shardline <command>``: the entry point and the registry of commands.

The command-line layer lives in this package: this module (``COMMANDS``, ``main``, the
error -> exit code mapping, once), ``kit.py`` (what every command shares: the parser,
settings loading, ``UsageError``, ``confirm``, ``parse_cli_timestamp``) and the commands
of no other home (``migrate_command.py``, ``settings_command.py``). A command is
``module:main(argv) -> int``, in the package of what it runs.
"""
from __future__ import annotations

import faulthandler
import importlib
import signal
import sys
from typing import Sequence

from shardline.cli.kit import usage_errors
from shardline.errors import (AccessDenied, BatchFailed, ConfigError, LeaseHeld, LeaseLost,
                              NoMigrations, NotMigrated, ShardlineError, Unreachable)
from shardline.exitcodes import ExitCode
from shardline.extras import missing_message


COMMANDS: dict[str, tuple[str, str]] = {
    "devstack": ("shardline.devstack:main", "start/stop the local stack (up|down|status|env)"),
    "migrate": ("shardline.cli.migrate_command:main", "create or upgrade every store's tables "
                                                      "(warehouse, control store)"),
    "create-stream": ("shardline.ops.create_stream:main", "create a Kinesis stream"),
    "produce": ("shardline.sample.produce_cli:main", "put sample page views into a stream"),
    "consumer": ("shardline.consumers.main:main",
                 "read one shard and dispatch batches (one per shard)"),
    "worker": ("shardline.workers.main:main", "run Gearman stage workers"),
    "loader": ("shardline.loaders.main:main", "load staged files into the warehouse"),
    "lake-loader": ("shardline.loaders.lake.main:main",
                    "load staged files into the lake's Iceberg table (one per lake table)"),
    "lake": ("shardline.lake.cli:main", "the lake's Iceberg tables: describe, compact, expire"),
    "status": ("shardline.ops.status:main", "one screen of pipeline health"),
    "reconcile": ("shardline.ops.reconcile_cmd:main",
                  "rows per hour of arrival: staged, in the warehouse, in the lake"),
    "replay": ("shardline.ops.replay:main", "move a shard's checkpoint back (or list history)"),
    "reprocess": ("shardline.ops.reprocess:main",
                  "re-stage records with the current transform, replacing their rows"),
    "redrive": ("shardline.ops.redrive:main",
                "send dead letters through the current transform again"),
    "try-transform": ("shardline.ops.try_transform:main", "rows + dead letters of events, offline"),
    "tail": ("shardline.tail.main:main", "follow log files: one event per line, exactly once"),
    "relay": ("shardline.relay.main:main", "a local daemon taking JSON lines from any language "
                                          "(PHP, Node) into the stream, never blocking them"),
    "supervisor-config": ("shardline.ops.supervisor_config:main", "write a supervisord config"),
    "agent": ("shardline.fleet.main:main", "this host's agent: spreads the consumers over hosts"),
    "metrics": ("shardline.metrics.main:main", "serve or print this host's Prometheus metrics"),
    "settings": ("shardline.cli.settings_command:main",
                 "list every setting, its env var and default"),
}


# Most specific first: the class of an error decides the exit code, never its text.
_EXITS: tuple[tuple[type[ShardlineError], ExitCode, str], ...] = (
    # a first-run mistake found at start: the message itself says what to fix
    (NotMigrated, ExitCode.NOT_MIGRATED, ""),
    (AccessDenied, ExitCode.DENIED, "access denied: "),
    (Unreachable, ExitCode.UNAVAILABLE, ""),
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
    if (missing := missing_message(name, rest)) is not None:  # an install without the extra
        print(missing, file=sys.stderr)
        return ExitCode.NOT_INSTALLED
    # `kill -USR1 PID` prints every thread's stack to stderr (the supervisord log): the
    # first question about a process that looks stuck is "where is it?".
    try:
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    except (ValueError, OSError, AttributeError):  # stderr without a file descriptor
        pass
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        return int(usage_errors(name)(func)(rest))
    except ShardlineError as exc:
        code, prefix = exit_for(exc)
        print(f"shardline {name}: {prefix}{exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return ExitCode.FORCED_STOP
