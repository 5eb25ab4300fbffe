"""The one-screen text view of a ``shardline status`` report.

``render_text(report)`` turns the dict from ``shardline.ops.status_report.build_report``
into the table shown by ``shardline status`` (sequence numbers shortened and
owners cut to host:pid; ``--json`` prints the dict itself, in full). Pure.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from shardline.records.control import SHARD_END
from shardline.ops.status_report import fmt_bytes, fmt_duration, short_seq


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
    hosts = report.get("hosts") or []
    if hosts:
        lines += ["hosts:"] + ["  " + r for r in _table(
            ["HOST", "HEARTBEAT", "STATE", "SHARDS"],
            [[h["host_id"], fmt_duration(h["heartbeat_age_s"]) + " ago",
              "live" if h["alive"] else "DEAD", ", ".join(h["shards"]) or "-"]
             for h in hosts])]
    tot = report["staged_pending_total"]
    pend = (f"staged, pending load: {tot['files']} files, {fmt_bytes(tot['bytes'])}, "
            f"{tot.get('rows', 0):,} rows")
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
    dl = report.get("dead_letter_window")
    if dl:
        ratio = "-" if dl["ratio"] is None else f"{dl['ratio']:.2%}"
        lines.append(f"dead letters (last {fmt_duration(dl['window_s'])}): "
                     f"{dl['dead_letters']:,} of {dl['rows'] + dl['dead_letters']:,} records "
                     f"staged ({ratio}) in {dl['files']:,} files")
    lines += [f"transform {v['target_table']} {v['transform_version'] or 'unrecorded'}: "
              f"{v['rows']:,} rows in {v['files']} files loaded ({v['reprocess_files']} by "
              f"reprocess), last {v['last_loaded_at']}" for v in report["transform_versions"]]
    lines += [f"in {v['target_table']} now: {v['transform_version'] or 'unrecorded'} "
              f"{v['rows']:,} rows" for v in report.get("versions_present", [])]
    for r in report.get("reconciliation", []):
        h = r["hours"]
        lines.append(f"reconciliation {r['target_table']} (lake {r['lake']}): {h['agree']} "
                     f"hours agree, {h['disagree']} disagree, {h['pending']} not settled, "
                     f"{h['unknown']} unknown")
        lines += [f"  {v['hour']}: staged {v['staged']:,} - duplicates {v['dropped']:,} - "
                  f"replaced {v['replaced']:,} - retired {v['retired']:,} = "
                  f"{v['expected_warehouse']:,}; warehouse {v['warehouse']:,} "
                  f"({v['warehouse_diff']:+,})"
                  + ("" if v["lake"] is None else f", lake {v['lake']:,} ({v['lake_diff']:+,})")
                  for v in r["disagreeing"]]
    quarantined = report["quarantined"]
    lines.append(f"quarantined (COPY kept failing; fix, then re-stage or replay): "
                 f"{len(quarantined)} files")
    lines += [f"  {q['target_table']} {q['s3_key']} ({q['quarantined_at']}): {q['error'][:200]}"
              for q in quarantined]
    for n in report["notes"]:
        lines.append(f"note: {n}")
    if report["alerts"]:
        lines += ["", "ALERTS:"] + [f"  {a}" for a in report["alerts"]]
    return "\n".join(lines) + "\n"
