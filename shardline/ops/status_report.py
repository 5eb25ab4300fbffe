"""The ``shardline status`` report, pure: control-table rows in, a JSON-ready dict out.

``build_report`` joins per-shard lease, checkpoint, status and watermark rows
(plus Kinesis shard listings and gearmand queues) into the dict that
``--json`` prints, and applies the alert rules: per shard (``shard_alerts``) a shard
not at SHARD_END with no live owner, a lag past ``status.max_lag_ms``, or a status
row older than ``STALE_FACTOR`` report intervals; beyond shards a quarantined file,
the loader not loading (``pending_alerts``), gearmand unreachable or without stage
workers (``gearman_alerts``), too many dead letters (``dead_letter_alerts``) and a
host whose heartbeat stopped (``host_alerts``). No I/O here, so it is unit-tested
without a database; gathering is in ``shardline.ops.status``, the text view in
``shardline.ops.status_render``.

Stable keys (``--json``, the status web page): ``generated_at``, ``streams``, ``healthy``,
``alerts`` (list of str), ``notes``, ``thresholds``, ``shards``, ``hosts`` (``host_id``,
``heartbeat_at``, ``heartbeat_age_s``, ``alive``, ``shards``, ``expired_s``), ``gearman``,
``staged_pending``, ``staged_pending_total``, ``quarantined``, ``last_load``,
``dead_letters``, ``dead_letter_window`` and ``reconciliation`` (per table: ``lake``,
``hours`` by state, ``warehouse_diff_rows``, ``lake_diff_rows``, ``disagreeing``).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence, overload

from shardline.records.control import SHARD_END
from shardline.exitcodes import ExitCode
from shardline.ops.gearman_admin import ServerStatus

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


@overload
def _age(now: datetime, then: datetime) -> float: ...
@overload
def _age(now: datetime, then: datetime | None) -> float | None: ...
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



def build_report(*, now: datetime, streams: Sequence[str], leases: Iterable[Row] = (),
                 checkpoints: Iterable[Row] = (), status_rows: Iterable[Row] = (),
                 watermarks: Iterable[Row] = (), pending: Iterable[Row] = (),
                 quarantined: Iterable[Row] = (), last_load: Row | None = None,
                 transform_versions: Iterable[Row] = (),
                 gearman: Sequence[ServerStatus] = (), kinesis: Mapping[str, Any] | None = None,
                 max_lag_ms: int, report_interval_s: float,
                 hosts: Iterable[Row] = (), assignments: Iterable[Row] = (),
                 staged_recent: Iterable[Row] = (), stage_function: str | None = None,
                 max_pending_age_s: float | None = None,
                 max_dead_letter_ratio: float | None = None,
                 dead_letter_window_s: float | None = None,
                 dead_host_alert_s: float | None = None,
                 reconciliation: Sequence[Row] = ()) -> dict[str, Any]:
    """Everything ``status`` shows, as a JSON-ready dict with ``alerts`` and ``healthy``.

    Rows are mappings with the control tables' column names (plus ``stream``).
    ``kinesis``: {stream: [{"shard_id", "open"}, ...] or {"error": text}}, or None
    when not asked. ``gearman``: ``gearman_admin.ServerStatus`` objects. ``hosts``:
    {host_id, renewed_at, expires_at, info}; ``assignments``: {stream, shard_id, host_id};
    ``staged_recent``: {target_table, stream, files, rows, dead_letters} over the last
    ``dead_letter_window_s``. A threshold left None switches its alert off (the rules
    beyond shards: ``pending_alerts``, ``gearman_alerts``, ``dead_letter_alerts``,
    ``host_alerts``).
    """
    from shardline.ops import gearman_admin

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
        why = [] if shard_end else shard_alerts(
            now=now, lease=lease, status=st, live=live, status_age=status_age, lag=lag,
            stale_after=stale_after, max_lag_ms=max_lag_ms)
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
                            "bytes": int(p["bytes"] or 0), "rows": int(p.get("rows") or 0),
                            "oldest_staged_at": _iso(p.get("oldest")),
                            "oldest_age_s": _age(now, p.get("oldest"))})
    quarantined_out = [{"target_table": q["target_table"], "s3_key": q["s3_key"],
                        "error": q["error"], "quarantined_at": _iso(q.get("quarantined_at"))}
                       for q in quarantined]
    alerts += [f"{q['target_table']}: {q['s3_key']} is quarantined (its COPY kept failing)"
               for q in quarantined_out]
    load = None
    if last_load:
        load = {k: last_load.get(k) for k in ("load_id", "target_table", "file_count",
                                              "byte_count", "rows_copied", "rows_inserted")}
        load["finished_at"] = _iso(last_load.get("finished_at"))
        load["age_s"] = _age(now, last_load.get("finished_at"))
        if last_load.get("started_at") and last_load.get("finished_at"):
            load["duration_s"] = _age(last_load["finished_at"], last_load["started_at"])
    shown = list(streams) or sorted({k[0] for k in by_key})
    functions = gearman_admin.totals(gearman)
    alerts += pending_alerts(pending_out, load, max_pending_age_s)
    alerts += gearman_alerts(gearman, functions, stage_function)
    dead_out = dead_letter_window(staged_recent, shown, dead_letter_window_s)
    alerts += dead_letter_alerts(dead_out, max_dead_letter_ratio)
    hosts_out = fleet_hosts(now, hosts, assignments, shards_out, shown)
    alerts += host_alerts(hosts_out, dead_host_alert_s)
    # settled hours whose counts disagree (shardline.reconcile: the rule, the alert lines)
    reconciliation_out = [{k: v for k, v in r.items() if k != "alerts"} for r in reconciliation]
    alerts += [line for r in reconciliation for line in r.get("alerts", ())]
    return {
        "generated_at": _iso(now),
        "streams": shown,
        "healthy": not alerts,
        "alerts": alerts,
        "notes": notes,
        "thresholds": {"max_lag_ms": max_lag_ms, "stale_after_s": stale_after,
                       "max_pending_age_s": max_pending_age_s,
                       "max_dead_letter_ratio": max_dead_letter_ratio,
                       "dead_letter_window_s": dead_letter_window_s,
                       "dead_host_alert_s": dead_host_alert_s},
        "shards": shards_out,
        "hosts": hosts_out,
        "gearman": {"servers": [s.to_dict() for s in gearman], "functions": functions,
                    "stage_function": stage_function},
        "staged_pending": pending_out,
        "staged_pending_total": {"files": sum(p["files"] for p in pending_out),
                                 "bytes": sum(p["bytes"] for p in pending_out),
                                 "rows": sum(p["rows"] for p in pending_out)},
        "quarantined": quarantined_out,
        "last_load": load,
        "dead_letters": dead_out["dead_letters"],
        "dead_letter_window": dead_out,
        "reconciliation": reconciliation_out,
        # per table and transform version: rows/files loaded over 7 days (the load record)
        "transform_versions": [{**v, "last_loaded_at": _iso(v.get("last_loaded_at"))}
                               for v in transform_versions],
    }


# -- beyond shards: the loader, gearmand, dead letters, the fleet ------------------
def pending_alerts(pending: Sequence[Row], last_load: Row | None,
                   max_age_s: float | None) -> list[str]:
    """The loader is not loading: a table's oldest pending file is older than
    ``max_age_s`` (it loads at ``loader.max_interval_s`` at the latest when it runs)."""
    if max_age_s is None:
        return []
    since = ("no load in the last 7 days" if last_load is None else
             f"last load {fmt_duration(last_load.get('age_s'))} ago")
    return [f"{p['target_table']}: the loader is not loading: {p['files']} files pending, "
            f"the oldest staged {fmt_duration(p['oldest_age_s'])} ago "
            f"(> status.max_pending_age_s = {fmt_duration(max_age_s)}); {since}"
            for p in pending
            if p["files"] and p["oldest_age_s"] is not None and p["oldest_age_s"] > max_age_s]


def gearman_alerts(servers: Sequence[ServerStatus], functions: Mapping[str, Mapping[str, int]],
                   stage_function: str | None) -> list[str]:
    """A configured gearmand that does not answer; no worker registered for the stage
    function on the servers that do (consumers' jobs would queue and time out)."""
    why = [f"gearman {s.server} is unreachable: {s.error}" for s in servers if not s.up]
    up = [s.server for s in servers if s.up]
    if stage_function and up and not functions.get(stage_function, {}).get("workers"):
        queued = functions.get(stage_function, {}).get("queued", 0)
        why.append(f"gearman: no worker is registered for {stage_function} on "
                   f"{', '.join(up)} ({queued} jobs queued)")
    return why


def dead_letter_window(staged_recent: Iterable[Row], streams: Sequence[str],
                       window_s: float | None) -> dict[str, Any]:
    """Per stream (of ``streams``), the files, good rows and dead letters staged in the
    window, and the dead-letter ratio (dead letters / all records)."""
    agg: dict[str, dict[str, int]] = {}
    for r in staged_recent:
        if streams and r["stream"] not in streams:
            continue
        a = agg.setdefault(r["stream"], {"files": 0, "rows": 0, "dead_letters": 0})
        for k in a:
            a[k] += int(r.get(k) or 0)

    def ratio(a: Mapping[str, int]) -> float | None:
        total = a["rows"] + a["dead_letters"]
        return round(a["dead_letters"] / total, 6) if total else None

    by_stream: list[dict[str, Any]] = [{"stream": s, **a, "ratio": ratio(a)}
                                       for s, a in sorted(agg.items())]
    total = {k: sum(b[k] for b in by_stream) for k in ("files", "rows", "dead_letters")}
    return {"window_s": window_s, **total, "ratio": ratio(total), "by_stream": by_stream}


def dead_letter_alerts(window: Mapping[str, Any], max_ratio: float | None) -> list[str]:
    """A stream whose dead-letter ratio over the window is above ``max_ratio``."""
    if max_ratio is None:
        return []
    return [f"{b['stream']}: {b['dead_letters']} dead letters of "
            f"{b['rows'] + b['dead_letters']} records staged in the last "
            f"{fmt_duration(window['window_s'])} ({b['ratio']:.2%} > "
            f"status.max_dead_letter_ratio = {max_ratio:g})"
            for b in window["by_stream"] if b["ratio"] is not None and b["ratio"] > max_ratio]


def _lease_host(owner: str | None) -> str | None:
    """``host:pid:uuid`` -> host (a consumer's lease owner names its machine)."""
    return owner.split(":", 1)[0] if owner else None


def fleet_hosts(now: datetime, hosts: Iterable[Row], assignments: Iterable[Row],
                shards: Sequence[Row], streams: Sequence[str]) -> list[dict[str, Any]]:
    """The fleet's hosts (of ``streams``: an agent's heartbeat names its stream), live or
    not, each with the shards assigned to it, holding a live lease of it (lease owner's
    host part: consumers name their machine, the agent's default host id) or listed as
    running there in its heartbeat; ``stream/shard`` when several streams are shown."""
    multi = len(streams) > 1

    def name(stream: str, shard: str) -> str:
        return f"{stream}/{shard}" if multi else shard

    held: dict[str, set[str]] = {}
    for a in assignments:
        if not streams or a["stream"] in streams:
            held.setdefault(a["host_id"], set()).add(name(a["stream"], a["shard_id"]))
    for s in shards:
        if s["owner_live"] and (host := _lease_host(s["owner"])):
            held.setdefault(host, set()).add(name(s["stream"], s["shard_id"]))
    out = []
    for h in sorted(hosts, key=lambda h: h["host_id"]):
        info = h.get("info") or {}
        stream = info.get("stream")
        if streams and stream and stream not in streams:
            continue
        mine = set(held.get(h["host_id"], ()))
        mine |= {name(stream, r) for r in filter(None, info.get("running", "").split(","))
                 if stream}
        out.append({"host_id": h["host_id"], "heartbeat_at": _iso(h["renewed_at"]),
                    "heartbeat_age_s": _age(now, h["renewed_at"]),
                    "alive": h["expires_at"] > now, "shards": sorted(mine),
                    "expired_s": None if h["expires_at"] > now else _age(now, h["expires_at"])})
    return out


def host_alerts(hosts: Sequence[Row], dead_host_alert_s: float | None) -> list[str]:
    """A registered host whose heartbeat stopped (its TTL ran out), for
    ``dead_host_alert_s`` after that (0: for as long as it stays registered)."""
    if dead_host_alert_s is None:
        return []
    return [f"host {h['host_id']}: heartbeat stopped {fmt_duration(h['heartbeat_age_s'])} "
            f"ago (expired {fmt_duration(h['expired_s'])} ago)"
            + (f"; it still has {', '.join(h['shards'])}" if h["shards"] else "")
            for h in hosts if not h["alive"]
            and (not dead_host_alert_s or h["expired_s"] <= dead_host_alert_s)]


def shard_alerts(*, now: datetime, lease: Row | None, status: Row | None, live: bool,
                 status_age: float | None, lag: int | None, stale_after: float,
                 max_lag_ms: int) -> list[str]:
    """Why a shard that is not at SHARD_END needs attention (empty: it does not).

    No live owner (no lease, released, expired); a live lease but no status row
    after ``stale_after`` seconds; a status row older than ``stale_after``; a lag
    over ``max_lag_ms``.
    """
    why: list[str] = []
    if lease is None:
        why.append("no live owner (no lease: no consumer has run for this shard)")
    elif not lease.get("owner"):
        why.append(f"no live owner (lease released "
                   f"{fmt_duration(_age(now, lease.get('expires_at')))} ago)")
    elif not live:
        why.append(f"no live owner ({lease['owner']}'s lease expired "
                   f"{fmt_duration(_age(now, lease.get('expires_at')))} ago)")
    if status is None:
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
    return why


def exit_code(report: Mapping[str, Any]) -> int:
    """``OK`` when healthy, ``ALERT`` (3) when there is any alert."""
    return ExitCode.OK if report["healthy"] else ExitCode.ALERT
