"""``shardline loader``: one loop per target table (see ``shardline.loaders.loader``),
run as ``shardline.loaders.process`` says (``--once``, signals, exit codes). A forced stop
leaves nothing half-applied: the open transaction rolls back.
"""
from __future__ import annotations

from shardline import clients, preflight
from shardline.cli.kit import command_parser, load_settings
from shardline.lifecycle import StopSignals
from shardline.logs import get_logger
from shardline.tables import load_tables
from shardline.loaders.warehouse import make_dialect
from shardline.loaders.loader import Loader
from shardline.loaders.process import serve


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
    return serve(loader, settings, stop, once=args.once, command="loader", log=log,
                 on_forced="the open load (if any) rolls back")
