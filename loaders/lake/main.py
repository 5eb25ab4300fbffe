"""``shardline lake-loader --table T``: one loop per lake table (``shardline.loaders.lake``),
run as ``shardline.loaders.process`` says (``--once``, signals, exit codes). A forced stop
leaves nothing half-applied: an Iceberg commit is atomic.
"""
from __future__ import annotations

from shardline import clients, preflight
from shardline.cli.kit import command_parser, load_settings, parse_command_args
from shardline.lake.catalog import lake_spec, open_catalog, open_table
from shardline.lifecycle import StopSignals
from shardline.loaders.lake.loader import LakeLoader
from shardline.loaders.process import serve
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
    stop.install(follow_parent=True)
    loader = LakeLoader(settings, spec.name, s3=clients.s3_client(settings), catalog=catalog)
    return serve(loader, settings, stop, once=args.once, command="lake-loader", log=log,
                 on_forced="the open load (if any) is not committed")
