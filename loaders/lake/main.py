"""``shardline lake-loader --table T``: one loop per lake table (``shardline.loaders.lake``).

``--once``: one step (a load if the trigger says one is due), then exit; exit 0 also when
nothing was due, ``UNAVAILABLE`` (69) when the load failed (the files stay lake-pending) or
another lake loader kept the table's lease. SIGTERM/SIGINT: finish the load in progress,
then exit 0; a second signal stops at once with exit 130 (an Iceberg commit is atomic:
nothing half-applied).
"""
from __future__ import annotations

import sys
import time

from shardline import clients, preflight
from shardline.cli.kit import command_parser, load_settings, parse_command_args
from shardline.exitcodes import ExitCode
from shardline.lake.catalog import lake_spec, open_catalog, open_table
from shardline.lifecycle import ForcedStop, StopSignals
from shardline.loaders.lake.loader import LakeLoader
from shardline.logs import get_logger


def main(argv: list[str]) -> int:
    parser = command_parser("lake-loader", "Commit staged files to the table's Apache Iceberg "
                                           "table, exactly once. Run one per lake table.")
    parser.add_argument("--table", required=True, help="a table of lake.tables")
    parser.add_argument("--once", action="store_true",
                        help="one load if the trigger says it is due, then exit")
    args, code = parse_command_args(parser, argv)
    if args is None:
        return code
    settings = load_settings(args)
    settings.require("s3.bucket")
    spec = lake_spec(settings, args.table)  # ConfigError: not a lake table
    preflight.require(settings, preflight.CONTROL, preflight.BUCKET)
    catalog = open_catalog(settings)
    open_table(settings, spec.name, catalog)  # NotMigrated: run shardline migrate
    log = get_logger("lake-loader", table=spec.name, load_id="-")
    stop = StopSignals(log=log, notice="finishing the current lake load, then exiting")
    stop.install()
    loader = LakeLoader(settings, spec.name, s3=clients.s3_client(settings), catalog=catalog)
    if args.once:
        try:
            deadline = time.monotonic() + settings.loader.lease_ttl_s * 1.5 + 1
            result = loader.step()
            while result.state == "standby" and time.monotonic() < deadline:
                stop.wait(settings.loader.poll_s)
                result = loader.step()
        finally:
            loader.release()
            loader.close()
        if result.state == "standby":
            print("shardline lake-loader: another lake loader holds the table's lease",
                  file=sys.stderr)
            return ExitCode.UNAVAILABLE
        if result.state in ("failed", "backoff"):
            print(f"shardline lake-loader: load failed, files stay pending: {result.error}",
                  file=sys.stderr)
            return ExitCode.UNAVAILABLE
        return ExitCode.OK
    try:
        loader.run(stop)
    except ForcedStop as exc:
        log.warning("%s; the open load (if any) is not committed", exc)
        raise
    return ExitCode.OK
