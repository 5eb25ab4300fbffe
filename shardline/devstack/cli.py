"""``shardline devstack up|down|status|env|stop|start [--dir DIR]``: argument parsing and printing.

Only presentation lives here (status table, ``export`` lines, hints on stderr); the work
is done by ``stack.py``.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from shardline.cli.kit import CommandParser

from .common import (
    DEFAULT_BUCKET, DEFAULT_COMMIT_LATENCY_MS, DEFAULT_DIR, ISOLATIONS, RELAY, SERVICES,
    WAREHOUSE_MODES, DevstackError,
)  # fmt: skip
from .stack import down, load, start_service, status, stop_service, up


def _print_status(dir: Path) -> bool:
    """Print a status table; True if every service is alive."""
    services = status(dir)
    if not services:
        print(f"no stack in {dir}")
        return False
    info = load(dir)
    if info is not None:
        print(info.describe_warehouse())
    print(f"{'SERVICE':<10} {'PID':>8} {'PORT':>6}  STATE")
    for name, st in services.items():
        print(f"{name:<10} {st.pid or '-':>8} {st.port:>6}  {'up' if st.alive else 'DOWN'}")
    return all(st.alive for st in services.values())


def _dir_arg(dir: Path) -> str:
    """` --dir DIR` for hints, empty for the default directory."""
    return "" if Path(dir).resolve() == DEFAULT_DIR else f" --dir {shlex.quote(str(dir))}"


def _parser() -> argparse.ArgumentParser:
    dir_opt = CommandParser(add_help=False)  # a parent of CommandParser subparsers
    dir_opt.add_argument("--dir", type=Path, default=argparse.SUPPRESS,
                         help=f"stack directory (default: {DEFAULT_DIR})")  # fmt: skip
    parser = CommandParser(
        prog="shardline devstack", parents=[dir_opt],
        description="Local gearmand + kinesalite + moto S3 + PostgreSQL on 127.0.0.1.",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", parents=[dir_opt], help="start the stack (idempotent)")
    p_up.add_argument("--bucket", default=DEFAULT_BUCKET, help="S3 bucket to create")
    p_up.add_argument("--warehouse", choices=WAREHOUSE_MODES, default=None,
                      help="postgres, or redshift-like: SERIALIZABLE by default and a "
                           "commit-latency relay (default: keep the stack's mode)")  # fmt: skip
    p_up.add_argument("--commit-latency-ms", type=int, default=None,
                      help=f"redshift-like: delay per COMMIT (default "
                           f"{DEFAULT_COMMIT_LATENCY_MS})")  # fmt: skip
    p_up.add_argument("--isolation", choices=tuple(ISOLATIONS), default=None,
                      help="redshift-like: the warehouse's default isolation, Redshift's "
                           "serializable or snapshot (REPEATABLE READ; default: keep the "
                           "stack's, else serializable)")  # fmt: skip
    sub.add_parser("down", parents=[dir_opt], help="stop the stack and delete its data")
    sub.add_parser("status", parents=[dir_opt], help="show pid, port, state per service")
    p_env = sub.add_parser("env", parents=[dir_opt],
                           help='print variables: eval "$(shardline devstack env)"')  # fmt: skip
    p_env.add_argument("--plain", action="store_true",
                       help="KEY=value lines without `export` or shell quoting")  # fmt: skip
    for verb, what in (("stop", "stop one service, keeping its port (outage drills)"),
                       ("start", "start a stopped service again")):
        p = sub.add_parser(verb, parents=[dir_opt], help=what)
        p.add_argument("service", choices=SERVICES + (RELAY,))
    return parser


def main(argv: list[str]) -> int:
    """`shardline devstack up|down|status|env [--dir DIR]`; returns the exit status."""
    args = _parser().parse_args(argv)
    dir = getattr(args, "dir", None) or DEFAULT_DIR
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="devstack: %(message)s", stream=sys.stderr)
    try:
        if args.command == "up":
            up(dir, bucket=args.bucket, warehouse=args.warehouse,
               commit_latency_ms=args.commit_latency_ms, isolation=args.isolation)
            _print_status(dir)
            print(f'\nexport the settings with: eval "$(shardline devstack env{_dir_arg(dir)})"',
                  file=sys.stderr)  # fmt: skip
            return 0
        if args.command == "down":
            down(dir)
            return 0
        if args.command == "stop":
            stop_service(dir, args.service)
            return 0
        if args.command == "start":
            start_service(dir, args.service)
            return 0
        if args.command == "status":
            return 0 if _print_status(dir) else 1
        if args.command == "env":
            info = load(dir)
            if info is None:
                raise DevstackError(f"no stack in {dir}: run `shardline devstack up` first")
            if not args.plain:
                print(f"# {info.describe_warehouse()}")
            for key, value in info.env().items():
                print(f"{key}={value}" if args.plain else f"export {key}={shlex.quote(value)}")
            return 0
    except DevstackError as exc:
        print(f"devstack: error: {exc}", file=sys.stderr)
        if args.command == "up":
            print(f"devstack: clean up with `shardline devstack down{_dir_arg(dir)}`",
                  file=sys.stderr)  # fmt: skip
        return 1
    raise AssertionError(args.command)
