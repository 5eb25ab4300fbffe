"""``shardline status``: one screen of pipeline health, and an exit code for alerting.

Per shard (from the control store): lease owner and age, staged checkpoint, what the
consumer last reported and how old that report is; (from the warehouse's load record) the
last loaded position. Then the fleet's hosts and their shards, the Gearman queues (admin
protocol, every configured server), the pending and quarantined staged files and the dead
letters of the last ``status.dead_letter_window_s`` (the control store's ledger: each
staged file records its good rows and dead letters) and the last load.

Streams: ``--stream`` or ``kinesis.stream``; ``--all-streams`` (or neither set) shows every
stream the control store knows (its leases and assignments: a row per shard, cheap on both
backends).

``--tail [DIR]``: this host's tailer instead (``shardline.ops.status_tail``).

Exit 0 when healthy; ``ExitCode.ALERT`` (3) on any alert, the reasons on stderr and in
``--json``'s ``alerts``: a shard that is not at SHARD_END has no live owner, lags past
``status.max_lag_ms`` (MillisBehindLatest), or its status row is older than 3 x
``consumer.report_interval_s`` (the consumer stopped reporting); a staged file is
quarantined; the loader is not loading (the oldest pending file is older than
``status.max_pending_age_s``); a configured gearmand does not answer, or no worker is
registered for the stage function; the dead-letter ratio over the window is above
``status.max_dead_letter_ratio``; a registered host's heartbeat stopped.

This module is the command and the gathering (control store, warehouse, Kinesis,
gearmand admin). The report itself is pure and lives next to it, so it is
unit-tested without a database: ``shardline.ops.status_report`` (``build_report``,
the alert rules, ``exit_code``, formatting helpers) and ``shardline.ops.status_render``
(``render_text``).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Sequence

from shardline.cli.kit import command_parser, load_settings, parse_command_args
from shardline.records.control import utc
from shardline.controlstore.base import ControlStore
from shardline.exitcodes import ExitCode
from shardline.settings import Settings
from shardline.ops.status_render import render_text
from shardline.ops.status_report import build_report, exit_code

if TYPE_CHECKING:  # psycopg2 has no types: Any to mypy, named for the reader
    from psycopg2.extensions import connection, cursor


def _dicts(cur: cursor) -> list[dict[str, Any]]:
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def gather_control(store: ControlStore, streams: Sequence[str]) -> dict[str, Any]:
    """Leases, checkpoints, consumer reports and shard assignments of the streams, and
    every registered host, from the control store."""
    out: dict[str, Any] = {"leases": [], "checkpoints": [], "status_rows": [],
                           "assignments": []}
    for stream in streams:
        out["leases"] += [asdict(lease) for lease in store.leases(stream)]
        out["checkpoints"] += [{"stream": stream, "shard_id": shard, **asdict(cp)}
                               for shard, cp in store.checkpoints(stream).items()]
        out["status_rows"] += [asdict(st) for st in store.statuses(stream)]
        out["assignments"] += [{"stream": stream, "shard_id": shard, "host_id": host}
                               for shard, host in store.assignments(stream).items()]
    out["hosts"] = [asdict(h) for h in store.hosts()]
    return out


def gather_ledger(store: ControlStore, tables: Sequence[str],
                  since: datetime) -> dict[str, Any]:
    """Per target table, from the control store's ledger: pending and quarantined files,
    and what was staged since ``since`` (files, good rows, dead letters per stream)."""
    pending, quarantined, recent = [], [], []
    for table in tables:
        stats = store.pending_stats(table)
        if stats.files:
            pending.append({"target_table": table, "files": stats.files, "bytes": stats.bytes,
                            "rows": stats.rows, "oldest": stats.oldest})
        quarantined += [{"target_table": table, "s3_key": q.file.s3_key, "error": q.error,
                         "quarantined_at": q.quarantined_at} for q in store.quarantined(table)]
        recent += [{"target_table": table, "stream": stream, **asdict(t)}
                   for stream, t in store.staged_totals(table, since).items()]
    return {"pending": pending, "quarantined": quarantined, "staged_recent": recent}


class ReconcileCache:
    """The last reconciliation, reused for ``reconcile.refresh_s`` (``status --serve``
    samples every few seconds; hours change far slower than that)."""

    def __init__(self, refresh_s: float):
        self.refresh_s = refresh_s
        self.at: float | None = None
        self.value: list[dict[str, Any]] = []

    def get(self, now_s: float, compute: Callable[[], list[dict[str, Any]]]
            ) -> list[dict[str, Any]]:
        if self.at is None or now_s - self.at >= self.refresh_s:
            self.value, self.at = compute(), now_s
        return self.value


def gather_reconciliation(settings: Settings, store: ControlStore, conn: connection,
                          tables: list[str], now: datetime) -> list[dict[str, Any]]:
    """Per table, the hours of ``reconcile.hours`` judged (``shardline.reconcile``): the
    summary with every disagreeing hour, and its alert lines."""
    from shardline.reconcile import rule, run

    out = []
    for table, verdicts, has_lake in run.gather(settings, store, conn, tables,
                                                now.replace(tzinfo=None)):
        out.append({**rule.summary(table, verdicts, has_lake=has_lake),
                    "alerts": rule.alert_lines(table, verdicts)})
    return out


def resolve_streams(settings: Settings, store: ControlStore,
                    all_streams: bool = False) -> list[str]:
    """The streams to show: every stream the control store knows with ``all_streams``,
    else ``kinesis.stream`` (``--stream``), else (none set) every known stream."""
    if not all_streams and settings.kinesis.stream:
        return [settings.kinesis.stream]
    known = store.streams()
    if not known and not all_streams:
        settings.require("kinesis.stream")  # the usual "is required" configuration error
    return known


def gather_versions_present(conn: connection, tables: Sequence[str]) -> list[dict[str, Any]]:
    """``--versions``: rows per transform version *in* each table now (a reprocess has
    converged when one version is left). One GROUP BY over one column: on Redshift a scan of
    that column's blocks (small: a low-cardinality ZSTD column), so it is asked for, not
    run on every refresh; the default view reads the load record instead."""
    out = []
    with conn.cursor() as cur:
        for table in tables:
            cur.execute(f"SELECT transform_version, COUNT(*) FROM {table} "
                        f"GROUP BY transform_version")
            out += [{"target_table": table, "transform_version": v, "rows": int(n)}
                    for v, n in sorted(cur.fetchall(), key=lambda x: (x[0] is None, x[0]))]
    conn.rollback()
    return out


def gather_warehouse(conn: connection, streams: Sequence[str],
                     now: datetime) -> dict[str, Any]:
    """From the load record: per shard the last loaded position (over the last day's
    loads: a range on the record's sort key), and the last load."""
    from shardline.loaders.warehouse.record import loaded_positions, loaded_versions

    out: dict[str, Any] = {}
    with conn.cursor() as cur:
        out["watermarks"] = loaded_positions(cur, streams, now - timedelta(days=1))
        out["transform_versions"] = loaded_versions(cur, now - timedelta(days=7))
        cur.execute("SELECT load_id, target_table, file_count, byte_count, rows_copied, "
                    "rows_inserted, started_at, finished_at FROM loads "
                    "WHERE finished_at >= %s ORDER BY finished_at DESC LIMIT 1",
                    (now - timedelta(days=7),))
        rows = _dicts(cur)
        out["last_load"] = rows[0] if rows else None
    conn.rollback()
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


def collect(settings: Settings, control: ControlStore, streams: Sequence[str] | None, *,
            use_kinesis: bool = True, gearman_timeout_s: float = 2.0,
            clock: Callable[[], float] = time.time, versions: bool = False,
            reconcile_cache: ReconcileCache | None = None) -> dict[str, Any]:
    """``control``: the control store; the warehouse is read over a short connection.
    ``streams`` None: every stream the control store knows (looked up now)."""
    from shardline import clients
    from shardline.ops import gearman_admin

    from shardline.tables import load_tables

    known = list(control.streams() if streams is None else streams)
    now = utc(clock())
    st = settings.status
    data = gather_control(control, known)
    tables = sorted(load_tables(settings).names)
    data.update(gather_ledger(control, tables,
                              now - timedelta(seconds=st.dead_letter_window_s)))
    conn = clients.warehouse_connect(settings)
    try:
        data.update(gather_warehouse(conn, known, now))
        cache = reconcile_cache or ReconcileCache(0.0)
        data["reconciliation"] = cache.get(clock(), lambda: gather_reconciliation(
            settings, control, conn, tables, now))
        present = gather_versions_present(conn, tables) if versions else None
    finally:
        conn.close()
    kinesis = gather_kinesis(settings, known) if use_kinesis and known else None
    gearman = gearman_admin.cluster_status(clients.gearman_servers(settings), gearman_timeout_s)
    report = build_report(now=now, streams=known, kinesis=kinesis, gearman=gearman,
                          max_lag_ms=st.max_lag_ms,
                          report_interval_s=settings.consumer.report_interval_s,
                          stage_function=settings.gearman.stage_function,
                          max_pending_age_s=st.pending_age_limit_s(settings.loader.max_interval_s),
                          max_dead_letter_ratio=st.max_dead_letter_ratio,
                          dead_letter_window_s=st.dead_letter_window_s,
                          dead_host_alert_s=st.dead_host_alert_s, **data)
    if present is not None:
        report["versions_present"] = present
    return report


def main(argv: list[str]) -> int:
    parser = command_parser("status", "One screen of pipeline health. Exit 0 when healthy, "
                                      "3 on an alert: a shard with no live owner or that "
                                      "lags/stalls, the loader not loading, gearmand "
                                      "unreachable or without stage workers, too many dead "
                                      "letters, a quarantined file, a host whose heartbeat "
                                      "stopped.")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--stream", help="the stream (default: kinesis.stream; neither set: "
                                        "every stream the control store knows)")
    which.add_argument("--all-streams", action="store_true",
                       help="every stream the control store knows (leases, assignments)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--versions", action="store_true",
                        help="also count the rows per transform version in each table now "
                             "(one GROUP BY per table: watching a reprocess converge)")
    parser.add_argument("--watch", type=float, metavar="SECONDS",
                        help="refresh every SECONDS until Ctrl-C")
    parser.add_argument("--no-kinesis", action="store_true",
                        help="do not list shards in Kinesis (show the control tables only)")
    parser.add_argument("--gearman-timeout", type=float, default=2.0, metavar="SECONDS",
                        help="per gearmand admin connection (default 2)")
    parser.add_argument("--serve", metavar="HOST:PORT",
                        help="serve the status web page, /api/status, /api/history and "
                             "/metrics (loopback only unless --public)")
    parser.add_argument("--public", action="store_true",
                        help="with --serve: allow a non-loopback address (no authentication)")
    parser.add_argument("--tail", nargs="?", const="", default=None, metavar="DIR",
                        help="this host's `shardline tail` instead, file by file: offset, "
                             "bytes behind, oldest unsent line; alert when a file stalls "
                             "(DIR: its state directory, default tail.state_dir); needs no "
                             "warehouse or control store")
    parser.add_argument("--interval", type=float, default=5.0, metavar="SECONDS",
                        help="with --serve: sample the pipeline every SECONDS (default 5)")
    args, code = parse_command_args(parser, argv)
    if args is None:
        return code
    if args.watch is not None and args.watch <= 0:
        print("shardline status: --watch needs a positive number of seconds", file=sys.stderr)
        return ExitCode.USAGE
    if args.serve:
        from shardline.ops import status_web

        try:
            bind = status_web.parse_bind(args.serve, public=args.public, interval=args.interval)
        except ValueError as exc:
            print(f"shardline status: --serve: {exc}", file=sys.stderr)
            return ExitCode.USAGE
    settings = load_settings(args, **{"kinesis.stream": args.stream})
    if args.tail is not None:
        from shardline.ops import status_tail

        return status_tail.run(settings, args.tail, args.json)
    settings.require("warehouse.dsn")

    from shardline import preflight
    from shardline.controlstore import open_store
    from shardline.errors import ShardlineError

    preflight.require(settings, preflight.WAREHOUSE, preflight.CONTROL)
    control = open_store(settings)
    # A named stream is fixed; "every known stream" is looked up again at each refresh.
    fixed: list[str] | None = None

    def once() -> int:
        report = collect(settings, control, fixed, use_kinesis=not args.no_kinesis,
                         gearman_timeout_s=args.gearman_timeout, versions=args.versions)
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
        streams = resolve_streams(settings, control, args.all_streams)  # none: ConfigError
        if settings.kinesis.stream and not args.all_streams:
            fixed = streams
        if args.serve:
            from shardline.tables import load_tables

            tables = load_tables(settings).names
            cache = ReconcileCache(settings.reconcile.refresh_s)
            return status_web.serve(
                lambda: collect(settings, control, fixed, use_kinesis=not args.no_kinesis,
                                gearman_timeout_s=args.gearman_timeout,
                                reconcile_cache=cache),
                *bind, interval_s=args.interval, tables=tables)
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
