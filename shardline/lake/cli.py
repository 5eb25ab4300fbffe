"""``shardline lake describe|compact|expire --table T``: the lake's catalog and upkeep.

``describe`` prints what any Iceberg client needs to open the table (the catalog's name and
properties, never a secret, and the table identifier), so that
``pyiceberg.catalog.load_catalog(name, **properties).load_table(identifier)`` works.
"""
from __future__ import annotations

import argparse
import json

from shardline.cli.kit import command_parser, load_settings, parse_command_args
from shardline.exitcodes import ExitCode
from shardline.lake.config import catalog_properties, identifier, redacted
from shardline.settings import Settings


def describe(settings: Settings, table: str) -> dict[str, object]:
    from shardline.lake.catalog import lake_spec

    lake_spec(settings, table)  # ConfigError: not a lake table
    return {"catalog": settings.lake.catalog_name,
            "properties": redacted(catalog_properties(settings)),
            "identifier": identifier(settings, table)}


def main(argv: list[str]) -> int:
    parser = command_parser("lake", "The lake's Iceberg tables: what opens them, and their "
                                    "upkeep (docs/lake.md).")
    parser.add_argument("action", choices=("describe", "compact", "expire"),
                        help="describe: the catalog and table identifier; compact: rewrite "
                             "small data files into files of lake.target_file_bytes; expire: "
                             "drop snapshots older than lake.snapshot_retention_s")
    parser.add_argument("--table", required=True, help="a table of lake.tables")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args, code = parse_command_args(parser, argv)
    if args is None:
        return code
    settings = load_settings(args)
    if args.action == "describe":
        return _describe(settings, args)
    from shardline.lake import upkeep

    if args.action == "compact":
        report = upkeep.compact(settings, args.table)
    else:
        report = upkeep.expire(settings, args.table)
    _print(report, args.json)
    return ExitCode.OK


def _describe(settings: Settings, args: argparse.Namespace) -> int:
    info = describe(settings, args.table)
    if args.json:
        _print(info, True)
        return ExitCode.OK
    print(f"catalog: {info['catalog']}")
    for key, value in dict(info["properties"]).items():  # type: ignore[call-overload]
        print(f"  {key} = {value}")
    print(f"table: {info['identifier']}")
    return ExitCode.OK


def _print(report: dict[str, object], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2, default=str), flush=True)
    else:
        for key, value in report.items():
            print(f"{key}: {value}")
