"""Rows of a lake table per UTC hour of ``arrival_time``: the lake's side of the hour-by-hour
reconciliation (staged in the ledger = rows in the warehouse = rows in the lake)."""
from __future__ import annotations

from datetime import datetime, timezone

import pyarrow.compute as pc

from shardline.lake import filters
from shardline.lake.catalog import lake_spec, open_table
from shardline.settings import Settings

ARRIVAL = "arrival_time"


def _naive_utc(when: datetime) -> datetime:
    return when.astimezone(timezone.utc).replace(tzinfo=None) if when.tzinfo else when


def hour_counts(settings: Settings, table: str, since: datetime, until: datetime
                ) -> dict[datetime, int]:
    """{hour: rows} for rows that arrived in [since, until) (naive UTC hours, truncated;
    aware datetimes are converted to UTC). Hours without rows are absent. Reads only the
    ``arrival_time`` column of the data files the range can touch."""
    lake_spec(settings, table)  # ConfigError: not a lake table
    since, until = _naive_utc(since), _naive_utc(until)
    scan = open_table(settings, table).scan(row_filter=filters.half_open(ARRIVAL, since, until),
                                            selected_fields=(ARRIVAL,))
    column = scan.to_arrow().column(ARRIVAL)
    if len(column) == 0:
        return {}
    hours = pc.value_counts(pc.floor_temporal(column, unit="hour"))
    return {h["values"]: int(h["counts"]) for h in hours.to_pylist()}
