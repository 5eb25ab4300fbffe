"""``shardline loader``: one loop per target table (see ``shardline.loaders.loader``).

``--once``: one step (a load if the trigger says one is due), then exit; exit 0
also when nothing was due, ``UNAVAILABLE`` (69) when the load failed (the files
stay pending) or another loader kept the table's loader lease. SIGTERM/SIGINT
(``shardline.lifecycle.StopSignals``): finish the load in progress, then exit 0; a second
signal stops at once with exit 130 (the open transaction rolls back: nothing half-applied).
"""
from __future__ import annotations

import sys
import time

from shardline import clients, preflight
from shardline.cli.kit import command_parser, load_settings
from shardline.exitcodes import ExitCode
from shardline.lifecycle import ForcedStop, StopSignals
from shardline.logs import get_logger
from shardline.tables import load_tables
from shardline.loaders.warehouse import make_dialect
from shardline.loaders.loader import Loader


def main(argv: list[str]) -> int:
    parser = command_parser("loader", "COPY staged files into the warehouse, exactly once. "
                                      "Run one per table of the tables file.")
    parser.add_argument("--table", help="target table, one of the tables file's (default: "
                                         "its first table, page_views in the default file)")
    parser.add_argument("--once", action="store_true",
                        help="one load if the trigger says it is due, then exit")
    args = parser.parse_args(argv)
    settings = load_settings(args)
    settings.require("warehouse.dsn", "s3.bucket")  # and the control store (open_store)
    tables = load_tables(settings)  # ConfigError for a bad tables file
    spec = tables[args.table or tables.names[0]]  # ConfigError for an unknown table
    s3 = clients.s3_client(settings)
    dialect = make_dialect(settings, s3)  # ConfigError: redshift without iam_role
    preflight.require(settings, preflight.WAREHOUSE, preflight.CONTROL, preflight.BUCKET)
    log = get_logger("loader", table=spec.name, load_id="-")
    stop = StopSignals(log=log, notice="finishing the current load, then exiting")
    stop.install(follow_parent=True)
    loader = Loader(settings, spec.name, dialect=dialect, s3=s3)
    if args.once:
        try:
            # Another loader's lease (a live one, or a killed one's until it lapses): wait
            # for it, up to one lease lifetime and a bit.
            deadline = time.monotonic() + settings.loader.lease_ttl_s * 1.5 + 1
            result = loader.step()
            while result.state == "standby" and time.monotonic() < deadline:
                stop.wait(settings.loader.poll_s)
                result = loader.step()
        finally:
            loader.release()
            loader.close()
        if result.state == "standby":
            print("shardline loader: another loader holds the table's loader lease",
                  file=sys.stderr)
            return ExitCode.UNAVAILABLE
        if result.state in ("failed", "backoff"):
            print(f"shardline loader: load failed, files stay pending: {result.error}",
                  file=sys.stderr)
            return ExitCode.UNAVAILABLE
        if result.load is None:
            log.info("nothing due (%s)", result.state)
        return ExitCode.OK
    try:
        loader.run(stop)
    except ForcedStop as exc:
        log.warning("%s; the open load (if any) rolls back", exc)
        raise
    return ExitCode.OK
