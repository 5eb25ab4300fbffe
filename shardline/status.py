"""``shardline status``: one screen of pipeline health, and an exit code for alerting.

Per shard: lease owner and age, staged checkpoint, loaded watermark, what the
consumer last reported (shard_status) and how old that report is. Then the
Gearman queues (admin protocol, every configured server), the pending staged
files, the last load and the dead-letter count.

Exit 0 when healthy; ``ExitCode.ALERT`` (3) when a shard that is not at SHARD_END
has no live owner, or lags past ``status.max_lag_ms`` (MillisBehindLatest), or
its status row is older than 3 x ``consumer.report_interval_s`` (the consumer
stopped reporting). The reasons go to stderr.

``gather`` talks to the world; ``build_report`` / ``render_text`` are pure
(plain rows in, a JSON-ready dict / text out) so they are unit-tested without
a database.
"""
from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

from shardline.cli import command_parser, load_settings
from shardline.control import SHARD_END, utc
from shardline.exitcodes import ExitCode
from shardline.settings import Settings

STALE_FACTOR = 3  # a status row older than this many report intervals is stale
SEQ_TAIL = 10  # digits of a sequence number kept on screen
Row = Mapping[str, Any]


# -- small helpers (pure) ---------------------------------------------------------
def short_seq(seq: str | None, tail: int = SEQ_TAIL) -> str:
    """Keep the tail of a long sequence number: the head is the same for a whole shard."""
    if seq is None:
        return "-"
    seq = str(seq)
    if len(seq) <= tail + 2:
        return seq
    return ".." + seq[-tail:]


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else round((now - then).total_seconds(), 3)


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.replace(tzinfo=timezone.utc).isoformat().replace(
        "+00:00", "Z")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    neg, s = seconds < 0, abs(seconds)
    if s < 10:
        text = f"{s:.1f}s"
    elif s < 120:
        text = f"{s:.0f}s"
    elif s < 7200:
        text = f"{s / 60:.0f}m"
    elif s < 172800:
        text = f"{s / 3600:.0f}h"
    else:
        text = f"{s / 86400:.0f}d"
    return "-" + text if neg else text


def fmt_bytes(n: int | float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n} B"  # unreachable


# -- the report (pure) --------------------------------------------------------------
def build_report(*, now: datetime, streams: Sequence[str], leases: Iterable[Row] = (),
                 checkpoints: Iterable[Row] = (), status_rows: Iterable[Row] = (),
                 watermarks: Iterable[Row] = (), pending: Iterable[Row] = (),
                 dead_letters: int = 0, last_load: Row | None = None,
                 gearman: Sequence[Any] = (), kinesis: Mapping[str, Any] | None = None,
                 max_lag_ms: int, report_interval_s: float) -> dict[str, Any]:
    """Everything ``status`` shows, as a JSON-ready dict with ``alerts`` and ``healthy``.

    Rows are mappings with the control tables' column names (plus ``stream``).
    ``kinesis``: {stream: [{"shard_id", "open"}, ...] or {"error": text}}, or None
    when not asked. ``gearman``: ``gearman_admin.ServerStatus`` objects.
    """
    from shardline import gearman_admin

    stale_after = STALE_FACTOR * report_interval_s
    by_key: dict[tuple[str, str], dict[str, Any]] = {}

    def slot(row: Row) -> dict[str, Any]:
        key = (row["stream"], row["shard_id"])
        return by_key.setdefault(key, {"stream": key[0], "shard_id": key[1]})

    listed: dict[tuple[str, str], bool] = {}
    notes: list[str] = []
    for stream, shards in (kinesis or {}).items():
        if isinstance(shards, Mapping):
            notes.append(f"kinesis: could not list the shards of {stream}: {shards.get('error')}")
            continue
        for s in shards:
            listed[(stream, s["shard_id"])] = bool(s["open"])
            slot({"stream": stream, "shard_id": s["shard_id"]})
    for r in leases:
        slot(r)["lease"] = r
    for r in checkpoints:
        slot(r)["checkpoint"] = r
    for r in status_rows:
        slot(r)["status"] = r
    for r in watermarks:
        slot(r).setdefault("watermarks", []).append(r)

    shards_out: list[dict[str, Any]] = []
    alerts: list[str] = []
    for key in sorted(by_key):
        if streams and key[0] not in streams:
            continue
        d = by_key[key]
        lease, cp, st = d.get("lease"), d.get("checkpoint"), d.get("status")
        shard_end = bool(cp and cp["sequence_number"] == SHARD_END)
        live = bool(lease and lease.get("owner") and lease.get("expires_at")
                    and lease["expires_at"] > now)
        status_age = _age(now, st["updated_at"]) if st else None
        lag = st.get("millis_behind_latest") if st else None
        why: list[str] = []
        if not shard_end:
            if lease is None:
                why.append("no live owner (no lease: no consumer has run for this shard)")
            elif not lease.get("owner"):
                why.append(f"no live owner (lease released "
                           f"{fmt_duration(_age(now, lease.get('expires_at')))} ago)")
            elif not live:
                why.append(f"no live owner ({lease['owner']}'s lease expired "
                           f"{fmt_duration(_age(now, lease.get('expires_at')))} ago)")
            if st is None:
                acquired = lease.get("acquired_at") or lease.get("renewed_at") if lease else None
                if live and acquired is not None and _age(now, acquired) > stale_after:
                    why.append(f"no status row, although the lease was taken "
                               f"{fmt_duration(_age(now, acquired))} ago")
            else:
                if status_age is not None and status_age > stale_after:
                    why.append(f"status row is stale: updated {fmt_duration(status_age)} ago "
                               f"(> {STALE_FACTOR} x consumer.report_interval_s = "
                               f"{fmt_duration(stale_after)})")
                if lag is not None and lag > max_lag_ms:
                    why.append(f"lags {lag} ms behind the stream tip "
                               f"(> status.max_lag_ms = {max_lag_ms})")
        alerts += [f"{key[0]}/{key[1]}: {w}" for w in why]
        shards_out.append({
            "stream": key[0],
            "shard_id": key[1],
            "open": listed.get(key),
            "shard_end": shard_end,
            "owner": lease.get("owner") if lease else None,
            "owner_live": live,
            "lease_token": lease.get("token") if lease else None,
            "lease_age_s": _age(now, lease.get("renewed_at")) if lease else None,
            "lease_expires_in_s": (-_age(now, lease["expires_at"])
                                   if lease and lease.get("expires_at") else None),
            "checkpoint": None if cp is None else {
                "sequence_number": cp["sequence_number"],
                "sub_sequence_number": cp["sub_sequence_number"],
                "closes_sequence": cp["closes_sequence"],
                "updated_at": _iso(cp.get("updated_at")),
                "age_s": _age(now, cp.get("updated_at"))},
            "watermarks": [{"target_table": w["target_table"],
                            "loaded_sequence": w["loaded_sequence"],
                            "loaded_sub_sequence": w["loaded_sub_sequence"],
                            "load_id": w.get("load_id"),
                            "updated_at": _iso(w.get("updated_at")),
                            "age_s": _age(now, w.get("updated_at"))}
                           for w in sorted(d.get("watermarks", []),
                                           key=lambda w: w["target_table"])],
            "status": None if st is None else {
                "state": st.get("state"),
                "owner": st.get("owner"),
                "last_read_sequence": st.get("last_read_sequence"),
                "checkpoint_sequence": st.get("checkpoint_sequence"),
                "millis_behind_latest": lag,
                "iterator_age_ms": st.get("iterator_age_ms"),
                "inflight_batches": st.get("inflight_batches"),
                "inflight_bytes": st.get("inflight_bytes"),
                "records_per_s": st.get("records_per_s"),
                "updated_at": _iso(st.get("updated_at")),
                "age_s": status_age,
                "stale": status_age is not None and status_age > stale_after},
            "alerts": why,
        })

    pending_out = []
    for p in sorted(pending, key=lambda p: p["target_table"]):
        pending_out.append({"target_table": p["target_table"], "files": int(p["files"]),
                            "bytes": int(p["bytes"] or 0), "rows": int(p["rows"] or 0),
                            "oldest_staged_at": _iso(p.get("oldest")),
                            "oldest_age_s": _age(now, p.get("oldest"))})
    down = [s for s in gearman if not s.up]
    for s in down:
        notes.append(f"gearman {s.server} is down: {s.error}")
    load = None
    if last_load:
        load = {k: last_load.get(k) for k in ("load_id", "target_table", "file_count",
                                              "byte_count", "rows_copied", "rows_inserted")}
        load["finished_at"] = _iso(last_load.get("finished_at"))
        load["age_s"] = _age(now, last_load.get("finished_at"))
        if last_load.get("started_at") and last_load.get("finished_at"):
            load["duration_s"] = _age(last_load["finished_at"], last_load["started_at"])
    return {
        "generated_at": _iso(now),
        "streams": list(streams) or sorted({k[0] for k in by_key}),
        "healthy": not alerts,
        "alerts": alerts,
        "notes": notes,
        "thresholds": {"max_lag_ms": max_lag_ms, "stale_after_s": stale_after},
        "shards": shards_out,
        "gearman": {"servers": [s.to_dict() for s in gearman],
                    "functions": gearman_admin.totals(gearman)},
        "staged_pending": pending_out,
        "staged_pending_total": {"files": sum(p["files"] for p in pending_out),
                                 "bytes": sum(p["bytes"] for p in pending_out),
                                 "rows": sum(p["rows"] for p in pending_out)},
        "last_load": load,
        "dead_letters": int(dead_letters or 0),
    }


def exit_code(report: Mapping[str, Any]) -> int:
    return ExitCode.OK if report["healthy"] else ExitCode.ALERT


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*headers).rstrip()] + [fmt.format(*r).rstrip() for r in rows]


def _short_owner(owner: str | None) -> str:
    if not owner:
        return "-"
    parts = owner.split(":")
    return ":".join(parts[:2]) if len(parts) >= 3 else owner  # host:pid:uuid -> host:pid


def render_text(report: Mapping[str, Any]) -> str:
    """The one-screen view (sequence numbers shortened; --json has them in full)."""
    state = "OK" if report["healthy"] else f"ALERT ({len(report['alerts'])})"
    lines = [f"shardline status   {', '.join(report['streams']) or '(no streams)'}   "
             f"{(report['generated_at'] or '')[:19].replace('T', ' ')} UTC   {state}", ""]
    rows = []
    multi = len(report["streams"]) > 1
    for s in report["shards"]:
        st, cp = s["status"] or {}, s["checkpoint"]
        if s["owner_live"]:
            lease = f"live {fmt_duration(s['lease_age_s'])}"
        elif s["owner"]:
            lease = "expired"
        else:
            lease = "none" if s["lease_token"] is None else "released"
        if cp is None:
            ckpt = "-"
        elif s["shard_end"]:
            ckpt = SHARD_END
        else:
            ckpt = short_seq(cp["sequence_number"])
            if cp["sub_sequence_number"] and cp["sub_sequence_number"] > 0:
                ckpt += f"/{cp['sub_sequence_number']}"
            ckpt += "" if cp["closes_sequence"] else " (at)"
        wm = s["watermarks"][0] if s["watermarks"] else None
        loaded = "-" if wm is None else short_seq(wm["loaded_sequence"])
        if wm and len(s["watermarks"]) > 1:
            loaded += f" +{len(s['watermarks']) - 1}"
        lag = st.get("millis_behind_latest")
        rps = st.get("records_per_s")
        name = f"{s['stream']}/{s['shard_id']}" if multi else s["shard_id"]
        if s["open"] is False:
            name += " (closed)"
        rows.append([
            ("! " if s["alerts"] else "  ") + name,
            _short_owner(s["owner"]), lease, ckpt,
            loaded, short_seq(st.get("last_read_sequence")) if st else "-",
            "-" if lag is None else f"{lag:,}ms",
            "-" if st.get("iterator_age_ms") is None else fmt_duration(st["iterator_age_ms"]
                                                                         / 1000),
            "-" if st.get("inflight_batches") is None else str(st["inflight_batches"]),
            "-" if rps is None else f"{rps:,.1f}",
            "-" if not st else fmt_duration(st["age_s"]) + (" STALE" if st["stale"] else ""),
            st.get("state") or "-",
        ])
    if rows:
        lines += _table(["  SHARD", "OWNER", "LEASE", "STAGED CKPT", "LOADED", "LAST READ",
                         "BEHIND", "ITER AGE", "INFL", "REC/S", "REPORTED", "STATE"], rows)
    else:
        lines.append("  (no shards: no consumer has run, and Kinesis was not listed)")
    lines.append("")
    g = report["gearman"]
    servers = ", ".join(f"{s['server']} {'up' if s['up'] else 'DOWN (' + str(s['error']) + ')'}"
                        for s in g["servers"]) or "(none configured)"
    lines.append(f"gearman: {servers}")
    if g["functions"]:
        lines += ["  " + r for r in _table(
            ["FUNCTION", "QUEUED", "RUNNING", "WORKERS"],
            [[name, str(f["queued"]), str(f["running"]), str(f["workers"])]
             for name, f in g["functions"].items()])]
    tot = report["staged_pending_total"]
    pend = f"staged, pending load: {tot['files']} files, {fmt_bytes(tot['bytes'])}, " \
           f"{tot['rows']:,} rows"
    oldest = [p["oldest_age_s"] for p in report["staged_pending"] if p["oldest_age_s"] is not None]
    if oldest:
        pend += f", oldest {fmt_duration(max(oldest))}"
    lines.append(pend)
    load = report["last_load"]
    if load:
        lines.append(f"last load: {load['finished_at']} ({fmt_duration(load['age_s'])} ago) "
                     f"{load['target_table']}: {load['file_count']} files, "
                     f"{load['rows_copied']:,} rows copied, {load['rows_inserted']:,} new")
    else:
        lines.append("last load: none yet")
    lines.append(f"dead letters: {report['dead_letters']:,}")
    for n in report["notes"]:
        lines.append(f"note: {n}")
    if report["alerts"]:
        lines += ["", "ALERTS:"] + [f"  {a}" for a in report["alerts"]]
    return "\n".join(lines) + "\n"


# -- gathering (the outside world) ---------------------------------------------------
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

    from shardline import clients
    from shardline.supervisor_config import list_shards

    out: dict[str, Any] = {}
    try:
        kinesis = clients.kinesis_client(settings)
    except (BotoCoreError, ClientError, ValueError) as exc:
        return {s: {"error": str(exc)} for s in streams}
    for stream in streams:
        try:
            out[stream] = [{"shard_id": s.shard_id, "open": s.open}
                           for s in list_shards(kinesis, stream)]
        except ClientError as exc:
            err = exc.response.get("Error", {})
            out[stream] = {"error": f"{err.get('Code')}: {err.get('Message')}"}
        except BotoCoreError as exc:
            out[stream] = {"error": str(exc)}
    return out


def collect(settings: Settings, control: Any, streams: Sequence[str], *,
            use_kinesis: bool = True, gearman_timeout_s: float = 2.0,
            clock: Any = time.time) -> dict[str, Any]:
    from shardline import clients, gearman_admin

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
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return ExitCode.OK if not exc.code else ExitCode.USAGE
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
