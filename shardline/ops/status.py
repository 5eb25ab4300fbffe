"""``shardline status``: one screen of pipeline health, and an exit code for alerting.

Per shard: lease owner and age, staged checkpoint, loaded watermark, what the
consumer last reported (shard_status) and how old that report is. Then the
Gearman queues (admin protocol, every configured server), the pending staged
files, the last load and the dead-letter count.

Exit 0 when healthy; ``ExitCode.ALERT`` (3) when a shard that is not at SHARD_END
has no live owner, or lags past ``status.max_lag_ms`` (MillisBehindLatest), or
its status row is older than 3 x ``consumer.report_interval_s`` (the consumer
stopped reporting). The reasons go to stderr.

This module is the command and the gathering (control tables, Kinesis,
gearmand admin). The report itself is pure and lives next to it, so it is
unit-tested without a database: ``shardline.ops.status_report`` (``build_report``,
the alert rules, ``exit_code``, formatting helpers) and ``shardline.ops.status_render``
(``render_text``).
"""
from __future__ import annotations

import json
import sys
import time
from typing import Any, Sequence

from shardline.cli import command_parser, load_settings, parse_command_args
from shardline.control import utc
from shardline.exitcodes import ExitCode
from shardline.settings import Settings
from shardline.ops.status_render import render_text
from shardline.ops.status_report import build_report, exit_code


def _dicts(cur: Any) -> list[dict[str, Any]]:
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, row)) for row in cur.fetchall()]


def gather_warehouse(control: Any, streams: Sequence[str]) -> dict[str, Any]:
    """All control-table rows the report needs, in one transaction."""
    where, params = "", tuple(streams)
    if streams:
        where = "WHERE stream IN (" + ",".join(["%s"] * len(streams)) + ")"
    out: dict[str, Any] = {}
    with control.tx() as cur:
        cur.execute("SELECT stream, shard_id, owner, token, acquired_at, renewed_at, expires_at "
                    f"FROM shard_leases {where}", params)
        out["leases"] = _dicts(cur)
        cur.execute("SELECT stream, shard_id, sequence_number, sub_sequence_number, "
                    f"closes_sequence, updated_at FROM checkpoints {where}", params)
        out["checkpoints"] = _dicts(cur)
        cur.execute("SELECT stream, shard_id, owner, last_read_sequence, checkpoint_sequence, "
                    "millis_behind_latest, iterator_age_ms, inflight_batches, inflight_bytes, "
                    f"records_per_s, state, updated_at FROM shard_status {where}", params)
        out["status_rows"] = _dicts(cur)
        cur.execute("SELECT stream, shard_id, target_table, loaded_sequence, "
                    f"loaded_sub_sequence, load_id, updated_at FROM shard_watermarks {where}",
                    params)
        out["watermarks"] = _dicts(cur)
        pend_where = (where + " AND " if where else "WHERE ") + "state = 'pending'"
        cur.execute("SELECT target_table, COUNT(*) AS files, SUM(byte_count) AS bytes, "
                    "SUM(row_count) AS rows, MIN(staged_at) AS oldest "
                    f"FROM staged_files {pend_where} GROUP BY target_table", params)
        out["pending"] = _dicts(cur)
        cur.execute(f"SELECT COALESCE(SUM(dead_letter_count), 0) FROM staged_files {where}",
                    params)
        out["dead_letters"] = int(cur.fetchone()[0])
        cur.execute("SELECT load_id, target_table, file_count, byte_count, rows_copied, "
                    "rows_inserted, started_at, finished_at FROM loads "
                    "ORDER BY finished_at DESC LIMIT 1")
        rows = _dicts(cur)
        out["last_load"] = rows[0] if rows else None
    return out


def gather_kinesis(settings: Settings, streams: Sequence[str]) -> dict[str, Any]:
    from botocore.exceptions import BotoCoreError, ClientError

    from shardline.errors import ShardlineError
    from shardline.kinesis import kinesis_client, list_shards

    out: dict[str, Any] = {}
    try:
        kinesis = kinesis_client(settings)
    except (BotoCoreError, ClientError, ValueError) as exc:
        return {s: {"error": str(exc)} for s in streams}
    for stream in streams:
        try:
            out[stream] = [{"shard_id": s.shard_id, "open": s.is_open}
                           for s in list_shards(kinesis, stream)]
        except ShardlineError as exc:  # StreamNotFound, throttled, unavailable
            out[stream] = {"error": str(exc)}
        except ClientError as exc:
            err = exc.response.get("Error", {})
            out[stream] = {"error": f"{err.get('Code')}: {err.get('Message')}"}
        except BotoCoreError as exc:
            out[stream] = {"error": str(exc)}
    return out


def collect(settings: Settings, control: Any, streams: Sequence[str], *,
            use_kinesis: bool = True, gearman_timeout_s: float = 2.0,
            clock: Any = time.time) -> dict[str, Any]:
    from shardline import clients
    from shardline.ops import gearman_admin

    data = gather_warehouse(control, streams)
    known = list(streams) or sorted({r["stream"] for k in ("leases", "checkpoints",
                                                           "status_rows", "watermarks")
                                     for r in data[k]})
    kinesis = gather_kinesis(settings, known) if use_kinesis and known else None
    gearman = gearman_admin.cluster_status(clients.gearman_servers(settings), gearman_timeout_s)
    return build_report(now=utc(clock()), streams=known, kinesis=kinesis, gearman=gearman,
                        max_lag_ms=settings.status.max_lag_ms,
                        report_interval_s=settings.consumer.report_interval_s, **data)


def main(argv: list[str]) -> int:
    parser = command_parser("status", "One screen of pipeline health. Exit 0 when healthy, "
                                      "3 when a shard has no live owner or lags/stalls.")
    parser.add_argument("--stream", help="only this stream (default: kinesis.stream, "
                                         "else every stream in the control tables)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--watch", type=float, metavar="SECONDS",
                        help="refresh every SECONDS until Ctrl-C")
    parser.add_argument("--no-kinesis", action="store_true",
                        help="do not list shards in Kinesis (show the control tables only)")
    parser.add_argument("--gearman-timeout", type=float, default=2.0, metavar="SECONDS",
                        help="per gearmand admin connection (default 2)")
    args, code = parse_command_args(parser, argv)
    if args is None:
        return code
    if args.watch is not None and args.watch <= 0:
        print("shardline status: --watch needs a positive number of seconds", file=sys.stderr)
        return ExitCode.USAGE
    settings = load_settings(args, **{"kinesis.stream": args.stream})
    settings.require("warehouse.dsn")
    streams = [settings.kinesis.stream] if settings.kinesis.stream else []

    from shardline import clients
    from shardline.control import Control
    from shardline.errors import ShardlineError

    control = Control(lambda: clients.warehouse_connect(settings), settings.warehouse.dialect)

    def once() -> int:
        report = collect(settings, control, streams, use_kinesis=not args.no_kinesis,
                         gearman_timeout_s=args.gearman_timeout)
        if args.json:
            print(json.dumps(report, indent=2, sort_keys=False, default=str), flush=True)
        else:
            if args.watch:
                sys.stdout.write("\033[H\033[2J")
            sys.stdout.write(render_text(report))
            sys.stdout.flush()
        for alert in report["alerts"]:
            print(f"ALERT {alert}", file=sys.stderr)
        return exit_code(report)

    try:
        if args.watch is None:
            return once()
        code = ExitCode.OK
        while True:
            try:
                code = once()
            except ShardlineError as exc:  # keep watching through a warehouse restart
                if not args.json:
                    sys.stdout.write("\033[H\033[2J")
                print(f"shardline status: {type(exc).__name__}: {exc}", file=sys.stderr)
                code = ExitCode.UNAVAILABLE
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return code if args.watch is not None else ExitCode.FORCED_STOP
    finally:
        control.close()
