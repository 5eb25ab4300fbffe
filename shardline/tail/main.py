"""``shardline tail --stream S [--table T] [--from-beginning] PATH_OR_GLOB...``: follow log
files and put one event per line into the stream (docs/tail.md).

A path that cannot be followed at start (its directory missing or unreadable, the file
itself unreadable) ends the command with one line and exit NO_INPUT; a file that cannot be
read later (a rotation with other permissions) is logged and retried.
"""
from __future__ import annotations

import glob
import os
import signal
import socket
import sys
from types import FrameType
from typing import TYPE_CHECKING

from shardline.cli.kit import add_stream_option, command_parser, load_settings, \
    parse_command_args
from shardline.exitcodes import ExitCode
from shardline.logs import get_logger
from shardline.metrics import multiproc
from shardline.producer import Producer
from shardline.tail.checkpoints import Checkpoints
from shardline.tail import report
from shardline.tail.loop import LinesDropped, Tail, TailOptions

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

log = get_logger("tail")


def unreadable(pattern: str) -> str | None:
    """Why ``pattern`` cannot be followed, or None. A literal path that does not exist yet
    is fine (the file may be created later); its directory must be readable."""
    if glob.has_magic(pattern):
        directory = os.path.dirname(pattern)
        while glob.has_magic(directory):
            directory = os.path.dirname(directory)
    else:
        if os.path.exists(pattern):
            if os.path.isdir(pattern):
                return "is a directory (give a file or a glob such as DIR/*.log)"
            if not os.access(pattern, os.R_OK):
                return "permission denied"
            return None
        directory = os.path.dirname(pattern)
    directory = directory or "."
    if not os.path.isdir(directory):
        return f"no such directory {directory!r}"
    if not os.access(directory, os.R_OK | os.X_OK):
        return f"directory {directory!r}: permission denied"
    return None


def serve_metrics(address: str, state_dir: str, stall_s: float) -> WSGIServer | None:
    """``tail.metrics_address``: this process's /metrics (its producer's and the per-file
    gauges), for a log host without supervisor-config's metrics program."""
    if not address:
        return None
    return multiproc.serve_quietly(address, log,
                                   extra=[report.TailCollector(state_dir, stall_s)])


def main(argv: list[str]) -> int:
    parser = command_parser("tail", "Follow log files (globs, rotation both ways) and put one "
                                    "event per line into the stream, exactly once by event id.")
    add_stream_option(parser)
    parser.add_argument("--table", default="log_lines",
                        help="the events' \"type\", which the tables file routes to a table "
                             "(default: log_lines)")
    parser.add_argument("--from-beginning", action="store_true",
                        help="read files that exist at the first start from their beginning "
                             "(default: from their end); a restart always resumes from the "
                             "checkpoints")
    parser.add_argument("paths", nargs="+", metavar="PATH_OR_GLOB")
    args, code = parse_command_args(parser, argv)
    if args is None:
        return code
    for pattern in args.paths:
        if (why := unreadable(pattern)) is not None:
            print(f"shardline tail: cannot follow {pattern}: {why}", file=sys.stderr)
            return ExitCode.NO_INPUT
    settings = load_settings(args, **{"kinesis.stream": args.stream})
    settings.require("kinesis.stream")
    state_dir = report.state_dir(settings)
    if not state_dir:
        settings.require("tail.state_dir")  # raises, naming the setting
    checkpoints = Checkpoints(state_dir)
    multiproc.ensure_dir()  # supervisord's metrics directory, before the first metric update
    # Without a spool a full buffer waits (block) rather than drops: a line the producer
    # refused is read again anyway, and waiting is the cheaper way to retry.
    block = not (settings.producer.spool_dir or settings.producer.on_full)
    producer = Producer(settings=settings, on_full="block") if block else \
        Producer(settings=settings)
    options = TailOptions(patterns=list(args.paths),
                          host=settings.agent.host_id or socket.gethostname(),
                          event_type=args.table, max_line_bytes=settings.tail.max_line_bytes,
                          poll_s=settings.tail.poll_s,
                          rotate_wait_s=settings.tail.rotate_wait_s,
                          from_beginning=args.from_beginning,
                          report_interval_s=settings.tail.report_interval_s)
    tail = Tail(options, producer, checkpoints)

    def stop(signum: int, frame: FrameType | None) -> None:
        tail.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("tailing %s into %s (offsets in %s)", " ".join(args.paths), settings.kinesis.stream,
             checkpoints.path)
    server = serve_metrics(settings.tail.metrics_address, state_dir,
                           settings.tail.stall_alert_s)
    try:
        tail.run()
    except LinesDropped as exc:
        log.error("%s", exc)
        return ExitCode.UNAVAILABLE
    finally:
        multiproc.stop(server)
    log.info("stopped after %d lines", tail.lines)
    return ExitCode.OK
