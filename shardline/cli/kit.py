"""What every command shares: its parser, its settings, its usage errors, its prompt.

Every command builds its parser with ``command_parser``, so each takes ``--config``,
``--set`` and ``--log-level`` the same way and a bad command line ends it with exit
USAGE; it reads them with ``parse_command_args`` and loads settings with
``load_settings``. A check argparse cannot express raises ``UsageError``, which
``usage_errors`` (around a command's ``main``) turns into one line and exit USAGE.
"""
from __future__ import annotations

import argparse
import functools
import re
import sys
from datetime import datetime, timezone
from typing import Callable, NoReturn, Sequence

from shardline import logs, settings as settings_mod
from shardline.exitcodes import ExitCode
from shardline.settings import Settings

# A command: its arguments (after the command name) -> its exit code.
CommandMain = Callable[[list[str]], int]


class UsageError(Exception):
    """Bad command line: a combination of options, or a value, the parser cannot check."""


class CommandParser(argparse.ArgumentParser):
    """argparse, but a bad command line exits USAGE (argparse's own 2 is no named code)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")


def command_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = CommandParser(prog=f"shardline {prog}", description=description)
    parser.add_argument("--config", help="settings file (default: $SHARDLINE_CONFIG or "
                                         "./shardline.ini if present)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one setting (repeatable)")
    parser.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return parser


def add_stream_option(parser: argparse.ArgumentParser) -> None:
    """``--stream``, defaulting to the ``kinesis.stream`` setting (``load_settings``)."""
    parser.add_argument("--stream", help="Kinesis stream (default: kinesis.stream)")


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
    """File, then env, then ``--set``, then the command's own flags
    (``{"kinesis.stream": ...}``)."""
    overrides = settings_mod.parse_set_flags(args.set)
    overrides.update({k: str(v) for k, v in flags.items() if v is not None})
    if getattr(args, "log_level", None):
        overrides["log.level"] = args.log_level
    settings = settings_mod.load(args.config, overrides=overrides)
    logs.setup(settings.log.level, settings.log.format)
    return settings


def usage_errors(name: str) -> Callable[[CommandMain], CommandMain]:
    """Wrap command ``name``'s ``main``: a ``UsageError`` ends it with one line on stderr
    and exit USAGE, under ``shardline`` or called directly alike."""
    def wrap(main: CommandMain) -> CommandMain:
        @functools.wraps(main)
        def run(argv: list[str]) -> int:
            try:
                return main(argv)
            except UsageError as exc:
                print(f"shardline {name}: {exc}", file=sys.stderr)
                return ExitCode.USAGE
        return run
    return wrap


def confirm(question: str) -> bool:
    """Ask on a terminal; scripts (no terminal) have said what they want with --reason."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        return True
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:
        return False


def parse_cli_timestamp(text: str) -> datetime:
    """ISO-8601 (naive = UTC, 'Z' accepted) or epoch seconds -> aware UTC datetime."""
    text = text.strip()
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        return datetime.fromtimestamp(float(text), timezone.utc)
    try:
        ts = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    except ValueError:
        raise UsageError(f"--at-timestamp {text!r}: expected ISO-8601 such as "
                         f"2026-11-26T06:00:00Z, or epoch seconds") from None
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)
