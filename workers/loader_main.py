"""``shardline loader``: one loop per target table (see ``shardline.workers.loader``).

``--once``: one step (a load if the trigger says one is due), then exit; exit 0
also when nothing was due, ``UNAVAILABLE`` (69) when the load failed (the files
stay pending). SIGTERM/SIGINT: finish the load in progress, then exit 0; a second
signal stops at once (the open transaction rolls back: nothing half-applied).
"""
from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from shardline import clients
from shardline.cli import command_parser, load_settings
from shardline.exitcodes import ExitCode
from shardline.logs import get_logger
from shardline.tables import table_spec
from shardline.workers.warehouse import make_dialect
from shardline.workers.loader import Loader


def _install_signals(stop: threading.Event, log: Any) -> None:
    def handle(signum: int, _frame: Any) -> None:
        if stop.is_set():
            log.warning("second %s: stopping now; the open load (if any) rolls back",
                        signal.Signals(signum).name)
            raise KeyboardInterrupt
        log.info("%s: finishing the current load, then exiting", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)


def main(argv: list[str]) -> int:
    parser = command_parser("loader", "COPY staged files into the warehouse, exactly once. "
                                      "Run one per target table.")
    parser.add_argument("--table", default="page_views", help="target table (default: "
                                                              "page_views)")
    parser.add_argument("--once", action="store_true",
                        help="one load if the trigger says it is due, then exit")
    args = parser.parse_args(argv)
    settings = load_settings(args)
    settings.require("warehouse.dsn", "s3.bucket")
    spec = table_spec(args.table)  # ConfigError for an unknown table
    s3 = clients.s3_client(settings)
    dialect = make_dialect(settings, s3)  # ConfigError: redshift without iam_role
    log = get_logger("loader", table=spec.name, load_id="-")
    stop = threading.Event()
    _install_signals(stop, log)
    loader = Loader(settings, spec.name, dialect=dialect, s3=s3)
    if args.once:
        try:
            result = loader.step()
        finally:
            loader.close()
        if result.state in ("failed", "backoff"):
            print(f"shardline loader: load failed, files stay pending: {result.error}",
                  file=sys.stderr)
            return ExitCode.UNAVAILABLE
        if result.load is None:
            log.info("nothing due (%s)", result.state)
        return ExitCode.OK
    loader.run(stop)
    return ExitCode.OK
