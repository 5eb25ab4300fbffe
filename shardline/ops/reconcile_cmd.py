"""``shardline reconcile --table T [--hours N] [--json]``: one table's hours, every count.

Prints each hour of the window that any source has rows in (ledger, warehouse, lake) with
the terms of the rule (``shardline.reconcile``) and its verdict. Exit 0 when every settled
hour agrees, 3 (ALERT, as ``status``) when one disagrees.
"""
from __future__ import annotations

import json
import sys
import time
from datetime import timedelta

from shardline.cli.kit import command_parser, load_settings, parse_command_args
from shardline.exitcodes import ExitCode
from shardline.reconcile.rule import DISAGREE, HourVerdict

COLUMNS = ("HOUR (UTC)", "STAGED", "PENDING", "QUARANT", "DUPS", "REPLACED", "RETIRED",
           "EXPECTED", "WAREHOUSE", "LAKE", "VERDICT")


def render(table: str, verdicts: list[HourVerdict], has_lake: bool) -> str:
    rows: list[list[object]] = [
        [v.hour.strftime("%Y-%m-%d %H:00"), v.staged, v.pending, v.quarantined, v.dropped,
             v.replaced, v.retired, v.expected_warehouse,
             f"{v.warehouse}" + (f" ({v.warehouse_diff:+d})" if v.warehouse_diff
                                 and v.state == DISAGREE else ""),
             "-" if v.lake is None else f"{v.lake}" + (
                 f" ({v.lake_diff:+d})" if v.lake_diff and v.state == DISAGREE else ""),
             v.state.upper() if v.state == DISAGREE else v.state] for v in verdicts]
    text = [list(COLUMNS)] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in text) for i in range(len(COLUMNS))]
    lines = [f"{table}: lake {'configured' if has_lake else 'not configured'}"]
    lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                        enumerate(zip(r, widths, strict=True))) for r in text]
    if not verdicts:
        lines.append("(no rows in the window)")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    parser = command_parser("reconcile", "Per UTC hour of arrival: rows staged (ledger), in "
                                         "the warehouse and in the lake, and whether they "
                                         "agree. Exit 3 when a settled hour disagrees.")
    parser.add_argument("--table", required=True, help="the target table")
    parser.add_argument("--hours", type=int, help="hours back (default reconcile.hours)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--include-open-hours", action="store_true",
                        help="judge the hours that have not ended (or not by reconcile.grace_s) "
                             "too, as if they had: for a drained pipeline, at the end of a demo "
                             "or a test (a load committing meanwhile shows as a difference)")
    args, code = parse_command_args(parser, argv)
    if args is None:
        return code
    settings = load_settings(args, **{"reconcile.hours": args.hours})
    settings.require("warehouse.dsn")

    from shardline import clients, preflight
    from shardline.controlstore import open_store
    from shardline.records.control import utc
    from shardline.reconcile import run
    from shardline.tables import load_tables

    table = load_tables(settings)[args.table].name  # an unknown table: ConfigError
    preflight.require(settings, preflight.WAREHOUSE, preflight.CONTROL)
    store = open_store(settings)
    conn = clients.warehouse_connect(settings, autocommit=True)
    now = utc(time.time()).replace(tzinfo=None)
    if args.include_open_hours:  # every hour of the window has ended, grace included
        now = run.window(now, settings.reconcile.hours)[1] + \
            timedelta(seconds=settings.reconcile.grace_s)
    try:
        ((_, verdicts, has_lake),) = run.gather(settings, store, conn, [table], now)
    finally:
        conn.close()
        store.close()
    if args.json:
        print(json.dumps({"target_table": table, "lake": has_lake,
                          "hours": [v.to_dict() for v in verdicts]}, indent=2))
    else:
        sys.stdout.write(render(table, verdicts, has_lake))
    return ExitCode.ALERT if any(v.state == DISAGREE for v in verdicts) else ExitCode.OK
