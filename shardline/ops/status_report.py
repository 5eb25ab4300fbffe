"""The ``shardline status`` report, pure: control-table rows in, a JSON-ready dict out.

``build_report`` joins per-shard lease, checkpoint, status and watermark rows
(plus Kinesis shard listings and gearmand queues) into the dict that
``--json`` prints, and applies the alert rules (``shard_alerts``): a shard not
at SHARD_END with no live owner, a lag past ``status.max_lag_ms``, or a status
row older than ``STALE_FACTOR`` report intervals. No I/O here, so it is
unit-tested without a database; gathering is in ``shardline.ops.status``, the text
view in ``shardline.ops.status_render``.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

from shardline.control import SHARD_END
from shardline.exitcodes import ExitCode

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



def build_report(*, now: datetime, streams: Sequence[str], leases: Iterable[Row] = (),
                 checkpoints: Iterable[Row] = (), status_rows: Iterable[Row] = (),
                 watermarks: Iterable[Row] = (), pending: Iterable[Row] = (),
                 quarantined: Iterable[Row] = (), last_load: Row | None = None,
                 transform_versions: Iterable[Row] = (),
                 gearman: Sequence[Any] = (), kinesis: Mapping[str, Any] | None = None,
                 max_lag_ms: int, report_interval_s: float) -> dict[str, Any]:
    """Everything ``status`` shows, as a JSON-ready dict with ``alerts`` and ``healthy``.

    Rows are mappings with the control tables' column names (plus ``stream``).
    ``kinesis``: {stream: [{"shard_id", "open"}, ...] or {"error": text}}, or None
    when not asked. ``gearman``: ``gearman_admin.ServerStatus`` objects.
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
                            "bytes": int(p["bytes"] or 0),
                            "oldest_staged_at": _iso(p.get("oldest")),
                            "oldest_age_s": _age(now, p.get("oldest"))})
    quarantined_out = [{"target_table": q["target_table"], "s3_key": q["s3_key"],
                        "error": q["error"], "quarantined_at": _iso(q.get("quarantined_at"))}
                       for q in quarantined]
    alerts += [f"{q['target_table']}: {q['s3_key']} is quarantined (its COPY kept failing)"
               for q in quarantined_out]
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
                                 "bytes": sum(p["bytes"] for p in pending_out)},
        "quarantined": quarantined_out,
        "last_load": load,
        # per table and transform version: rows/files loaded over 7 days (the load record)
        "transform_versions": [{**v, "last_loaded_at": _iso(v.get("last_loaded_at"))}
                               for v in transform_versions],
    }


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
