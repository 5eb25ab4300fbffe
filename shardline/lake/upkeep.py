"""``shardline lake compact`` and ``lake expire``: the lake table's upkeep.

compact: pyiceberg 0.12 has no rewrite-data-files action, so a partition holding several
data files smaller than half of ``lake.target_file_bytes`` is rewritten by an overwrite of
that partition with its own rows (sorted by the sort key) in ONE commit: readers see the
old files or the new ones, never both and never neither. The commit asserts the snapshot
the rows were read from, so a lake load committing to the table meanwhile makes the
compaction fail (run it again) instead of dropping that load's rows. It carries no
``shardline.load-id``: the exactly-once reconcile never mistakes it for a load.

expire: drops snapshots older than ``lake.snapshot_retention_s``, but never one the
reconcile may still need: none taken after the oldest lake-pending file was staged
(minus the clock-skew margin), and never the current one.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta, timezone

from pyiceberg.expressions import AlwaysTrue, BooleanExpression

from shardline.controlstore import open_store
from shardline.lake import schema as lake_schema
from shardline.lake.catalog import TARGET_FILE_PROPERTY, lake_spec, open_table
from shardline.lake.config import CLOCK_SKEW_MS
from shardline.lake import filters
from shardline.settings import Settings

COMPACTION_PROPERTY = "shardline.compaction"


def _partition_range(value: object, granularity: str) -> tuple[datetime, datetime] | None:
    """The time range one partition value covers (day: a date; hour: a datetime or hours
    since the epoch), as [start, end - 1 µs]."""
    tiny = timedelta(microseconds=1)
    if isinstance(value, datetime):
        start = value.replace(tzinfo=None)
        return start, start + timedelta(hours=1) - tiny
    if isinstance(value, date):
        start = datetime(value.year, value.month, value.day)
        return start, start + timedelta(days=1) - tiny
    if isinstance(value, int):
        unit = timedelta(hours=1) if granularity == "hour" else timedelta(days=1)
        start = datetime(1970, 1, 1) + unit * value
        return start, start + unit - tiny
    return None


def compact(settings: Settings, table_name: str) -> dict[str, object]:
    spec = lake_spec(settings, table_name)
    table = open_table(settings, table_name)
    target = int(table.properties.get(TARGET_FILE_PROPERTY, settings.lake.target_file_bytes))
    files = table.inspect.files().select(["partition", "file_size_in_bytes",
                                          "content"]).to_pylist()
    small: dict[tuple[tuple[str, object], ...], list[int]] = defaultdict(list)
    for f in files:
        if f["content"] == 0 and f["file_size_in_bytes"] < target // 2:
            small[tuple(sorted((f["partition"] or {}).items()))].append(
                f["file_size_in_bytes"])
    time_col = lake_schema.time_column(spec)
    rewritten, files_before, rows = 0, 0, 0
    for partition, sizes in sorted(small.items(), key=lambda p: str(p[0])):
        if len(sizes) < 2:
            continue
        values = [v for _, v in partition]
        span = _partition_range(values[0], settings.lake.partition) if values else None
        where: BooleanExpression = AlwaysTrue() if span is None else \
            filters.between(time_col, *span)
        data = table.scan(row_filter=where).to_arrow().sort_by(time_col)
        table.overwrite(data, overwrite_filter=where,
                        snapshot_properties={COMPACTION_PROPERTY: str(len(sizes))})
        rewritten += 1
        files_before += len(sizes)
        rows += data.num_rows
    return {"table": table_name, "partitions_rewritten": rewritten,
            "small_files_before": files_before, "rows_rewritten": rows,
            "data_files_after": len(table.inspect.files())}


def expire(settings: Settings, table_name: str, now: datetime | None = None
           ) -> dict[str, object]:
    lake_spec(settings, table_name)
    table = open_table(settings, table_name)
    now = now or datetime.now(timezone.utc).replace(tzinfo=None)
    cutoff = now - timedelta(seconds=settings.lake.snapshot_retention_s)
    store = open_store(settings)
    try:
        oldest = store.lake_pending_stats(table_name).oldest
    finally:
        store.close()
    if oldest is not None:  # the reconcile reads snapshots from there on
        cutoff = min(cutoff, oldest - timedelta(milliseconds=CLOCK_SKEW_MS))
    before = len(table.snapshots())
    table.maintenance.expire_snapshots().older_than(cutoff).commit()
    after = len(table.refresh().snapshots())
    return {"table": table_name, "cutoff": cutoff.isoformat(sep=" "),
            "snapshots_expired": before - after, "snapshots_kept": after}
