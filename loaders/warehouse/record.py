"""Reading back the warehouse's insert-only load record (``loaded_files``, ``loads``).

The load transaction commits the rows together with one ``loaded_files`` row per file
(plan.py). The control store's ledger is then told (``mark_loaded``) after the commit; a
loader killed in between leaves files ``pending`` in the store although the warehouse has
them. ``loaded_by`` is how the next loader (at start, and after each load) finds them and
reconciles, so such a file is neither loaded twice nor lost. Only the loader writes these
tables, and these reads run outside the load transaction.

Every query carries a range on ``loaded_at`` (the record's sort key): a file is loaded after
it was staged, so ``loaded_at >= staged_at - skew``.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Sequence

from shardline.positions import position
from shardline.records.ledger import StagedFile
from shardline.loaders.warehouse.plan import IN_CHUNK, fence_table

CLOCK_SKEW = timedelta(hours=1)


def ensure_fence(cur: Any, table: str, now: datetime) -> None:
    """The table's fence table and its one row, made at loader start (when the lease is
    taken). Its first token is the one the shared ``load_fence`` table held for the table
    (loaders of the release before fence tables of their own), so no older token lands."""
    fence = fence_table(table)
    cur.execute(f"CREATE TABLE IF NOT EXISTS {fence} (target_table VARCHAR(128) NOT NULL, "
                "lease_token BIGINT NOT NULL, load_id VARCHAR(64) NOT NULL, "
                "updated_at TIMESTAMP NOT NULL)")
    cur.execute(f"INSERT INTO {fence} (target_table, lease_token, load_id, updated_at) "
                "SELECT %s, (SELECT COALESCE(MAX(lease_token), 0) FROM load_fence WHERE "
                f"target_table = %s), '', %s WHERE NOT EXISTS (SELECT 1 FROM {fence})",
                (table, table, now))


def loaded_by(cur: Any, table: str, entries: Sequence[StagedFile]) -> dict[str, str]:
    """s3_key -> load_id for those of ``entries`` the warehouse already holds."""
    out: dict[str, str] = {}
    if not entries:
        return out
    since = min(e.staged_at for e in entries) - CLOCK_SKEW
    keys = [e.s3_key for e in entries]
    for start in range(0, len(keys), IN_CHUNK):
        chunk = keys[start:start + IN_CHUNK]
        cur.execute("SELECT s3_key, load_id FROM loaded_files WHERE target_table = %s AND "
                    f"loaded_at >= %s AND s3_key IN ({', '.join(['%s'] * len(chunk))})",
                    (table, since, *chunk))
        out.update(dict(cur.fetchall()))
    return out


def loaded_positions(cur: Any, streams: Sequence[str], since: datetime
                     ) -> list[dict[str, Any]]:
    """Per (stream, shard, table): the highest last position loaded since ``since`` (status)."""
    if not streams:
        return []
    cur.execute("SELECT stream, shard_id, target_table, last_sequence, last_sub_sequence, "
                "load_id, loaded_at FROM loaded_files WHERE loaded_at >= %s AND stream IN ("
                + ", ".join(["%s"] * len(streams)) + ")", (since, *streams))
    best: dict[tuple[str, str, str], tuple[str, int, str, datetime]] = {}
    for stream, shard, table, seq, sub, load_id, at in cur.fetchall():
        key = (stream, shard, table)
        if key not in best or position(seq, sub) > position(*best[key][:2]):
            best[key] = (seq, sub, load_id, at)
    return [{"stream": s, "shard_id": sh, "target_table": t, "loaded_sequence": seq,
             "loaded_sub_sequence": sub, "load_id": lid, "updated_at": at}
            for (s, sh, t), (seq, sub, lid, at) in sorted(best.items())]


def loaded_versions(cur: Any, since: datetime) -> list[dict[str, Any]]:
    """Per (table, transform version): files and rows loaded since ``since``, how many of
    the files a reprocess run staged, the last load time (status: watching a reprocess
    converge). From the load record, a range on its sort key: never a scan of the table."""
    cur.execute("SELECT target_table, transform_version, COUNT(*), SUM(row_count), "
                "SUM(CASE WHEN generation IS NULL THEN 0 ELSE 1 END), MAX(loaded_at) "
                "FROM loaded_files WHERE loaded_at >= %s GROUP BY target_table, "
                "transform_version", (since,))
    return [{"target_table": t, "transform_version": v, "files": int(f), "rows": int(r or 0),
             "reprocess_files": int(rf or 0), "last_loaded_at": at}
            for t, v, f, r, rf, at in sorted(cur.fetchall(), key=lambda x: (x[0], x[5]))]
