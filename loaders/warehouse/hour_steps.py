"""The load record per hour (``load_hours``): the plan's steps that count rows per UTC hour
of ``arrival_time`` in the transaction that stages, inserts or removes them (the kinds:
``shardline.records.hours``; the reading: ``shardline.reconcile``)."""
from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Sequence

from shardline.records import hours
from shardline.records.ledger import StagedFile, parse_hour_counts
from shardline.loaders.warehouse.steps import Results, Sql

_HOUR_INSERT = f"INSERT INTO {hours.HOUR_RECORD_TABLE} ({', '.join(hours.HOUR_RECORD_COLUMNS)})"


def hour_count_step(name: str, kind: str, table: str, load_id: str, recorded_at: datetime,
                     source: str, params: Any = ()) -> Sql:
    """Record the rows of ``source`` (``FROM`` text: a table and its WHERE) per hour of
    arrival as ``kind``, in the transaction that is about to insert or remove them."""
    head = (load_id, table, kind, recorded_at)
    sql = (f"{_HOUR_INSERT} SELECT %s, %s, {hours.HOUR_OF_ARRIVAL}, %s, COUNT(*), %s "
           f"FROM {source} GROUP BY {hours.HOUR_OF_ARRIVAL}")
    full: Any = (lambda r: (*head, *params(r))) if callable(params) else (*head, *params)
    return Sql(name, sql, full)


def _ledger_hours(entries: Sequence[StagedFile]) -> dict[datetime, int]:
    total: dict[datetime, int] = {}
    for e in entries:
        for hour, rows in parse_hour_counts(e.hour_counts).items():
            total[hour] = total.get(hour, 0) + rows
    return total


def _hour_values_step(name: str, kind: str, table: str, load_id: str,
                      total: dict[datetime, int], recorded_at: datetime,
                      only_if: Callable[[Results], bool] | None = None) -> list[Sql]:
    if not total:
        return []
    row = "(" + ", ".join(["%s"] * len(hours.HOUR_RECORD_COLUMNS)) + ")"
    params: list[Any] = []
    for hour, rows in sorted(total.items()):
        params += [load_id, table, hour, kind, rows, recorded_at]
    return [Sql(name, f"{_HOUR_INSERT} VALUES " + ", ".join([row] * len(total)),
                tuple(params), only_if=only_if)]


def staged_hours_step(table: str, load_id: str, entries: Sequence[StagedFile],
                      recorded_at: datetime) -> list[Sql]:
    """The load's files' rows per hour (the ledger's counts) as ``staged``: with the
    ``inserted`` rows, the duplicates the merge dropped in each hour."""
    return _hour_values_step("record_staged_hours", hours.STAGED, table, load_id,
                             _ledger_hours(entries), recorded_at)


def _dropped(results: Results) -> bool:
    return int(results.get("rows_inserted", 0)) < int(results.get("rows_copied", 0))


def inserted_hours_steps(table: str, key: Sequence[str], order: str, stage_table: str,
                         load_id: str, entries: Sequence[StagedFile], recorded_at: datetime
                         ) -> list[Sql]:
    """The rows the merge inserted, per hour, as ``inserted``. When it inserted every row it
    copied (the common case: no duplicates), they are the ledger's counts, written as
    values; only a load that dropped duplicates counts the first copies left in the staging
    table (the insert's own ranking, a second pass over the staging table)."""
    ranked = (f"(SELECT arrival_time, ROW_NUMBER() OVER (PARTITION BY {', '.join(key)} "
              f"ORDER BY {order}) AS rn FROM {stage_table}) ranked WHERE rn = 1")
    counted = hour_count_step("record_inserted_hours", hours.INSERTED, table, load_id,
                              recorded_at, ranked)
    return [Sql(counted.name, counted.text, counted.params, only_if=_dropped),
            *_hour_values_step("record_inserted_hours_all", hours.INSERTED, table,
                               load_id, _ledger_hours(entries), recorded_at,
                               only_if=lambda r: not _dropped(r))]
