"""Advancing ``shard_watermarks`` inside the load transaction (plan step 8).

A shard's watermark is the highest last position such that every ledger entry of
that shard ending at or before it is loaded: below the first still-pending entry,
the last loaded one. It never moves back. Same SQL on both warehouses.
"""
from __future__ import annotations

from typing import Any

from shardline.positions import before, before_params, order_by, position
from shardline.workers.ledger import LOADED, PENDING
from shardline.workers.warehouse.plan import AdvanceWatermarks

# Positions are compared in SQL by the one rule of shardline.positions.
_LAST = ("last_sequence", "last_sub_sequence")
_SHARD_WHERE = "target_table = %s AND stream = %s AND shard_id = %s"
_FIRST_PENDING = (f"SELECT last_sequence, last_sub_sequence FROM staged_files "
                  f"WHERE {_SHARD_WHERE} AND state = '{PENDING}' "
                  f"ORDER BY {order_by(*_LAST)} LIMIT 1")
_LAST_LOADED = (f"SELECT last_sequence, last_sub_sequence FROM staged_files "
                f"WHERE {_SHARD_WHERE} AND state = '{LOADED}'{{below}} "
                f"ORDER BY {order_by(*_LAST, descending=True)} LIMIT 1")
_BELOW = f" AND {before(*_LAST)}"
_CURRENT_WM = ("SELECT loaded_sequence, loaded_sub_sequence FROM shard_watermarks "
               "WHERE stream = %s AND shard_id = %s AND target_table = %s")
_UPDATE_WM = ("UPDATE shard_watermarks SET loaded_sequence = %s, loaded_sub_sequence = %s, "
              "load_id = %s, updated_at = %s WHERE stream = %s AND shard_id = %s "
              "AND target_table = %s")
_INSERT_WM = ("INSERT INTO shard_watermarks (loaded_sequence, loaded_sub_sequence, load_id, "
              "updated_at, stream, shard_id, target_table) VALUES (%s, %s, %s, %s, %s, %s, %s)")


def advance_watermarks(cur: Any, step: AdvanceWatermarks) -> dict[tuple[str, str], tuple]:
    """Run inside the load transaction, after the ledger UPDATE; returns the new marks."""
    moved = {}
    for stream, shard in step.shards:
        where = (step.table, stream, shard)
        cur.execute(_FIRST_PENDING, where)
        pending = cur.fetchone()
        if pending is None:
            cur.execute(_LAST_LOADED.format(below=""), where)
        else:
            cur.execute(_LAST_LOADED.format(below=_BELOW),
                        where + before_params(pending[0], pending[1]))
        best = cur.fetchone()
        if best is None:
            continue
        cur.execute(_CURRENT_WM, (stream, shard, step.table))
        current = cur.fetchone()
        if current is not None and position(*current) >= position(*best):
            continue
        params = (best[0], best[1], step.load_id, step.now, stream, shard, step.table)
        cur.execute(_UPDATE_WM if current is not None else _INSERT_WM, params)
        moved[(stream, shard)] = (best[0], best[1])
    return moved
