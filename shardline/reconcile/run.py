"""Gather one table's hours from every source and judge them (``reconcile_table``)."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Mapping

from shardline.reconcile.rule import HOUR, HourCounts, HourVerdict, judge
from shardline.reconcile.sources import SKEW, HourCounter, add_ledger, add_warehouse, \
    lake_counter, warehouse_hour_counts, warehouse_record

if TYPE_CHECKING:
    from shardline.controlstore.base import ControlStore
    from shardline.settings import Settings


PENDING_LIMIT = 100_000  # pending files read to find the hours they block


def hour_floor(when: datetime) -> datetime:
    return when.replace(minute=0, second=0, microsecond=0)


def window(now: datetime, hours: int) -> tuple[datetime, datetime]:
    """[since, until): the last ``hours`` whole hours and the current one."""
    until = hour_floor(now) + HOUR
    return until - timedelta(hours=hours + 1), until


def reconcile_table(*, store: ControlStore, conn: Any, table: str, now: datetime,
                    since: datetime, until: datetime, grace: timedelta,
                    lake: HourCounter | None) -> list[HourVerdict]:
    """Every hour of [since, until) that any source has rows in, oldest first. ``conn``: a
    warehouse connection (read only; autocommit keeps the reads out of any long
    transaction); ``now`` naive UTC."""
    hours: dict[datetime, HourCounts] = {}
    files = {f.s3_key: f for f in store.staged_files_since(table, since - SKEW)}
    pending = store.pending_files(table, PENDING_LIMIT)  # maybe staged before the window
    if lake is not None:
        pending += store.lake_pending_files(table, PENDING_LIMIT)
    for f in pending:
        files.setdefault(f.s3_key, f)
    add_ledger(hours, files.values(), since, until)
    add_warehouse(hours, warehouse_hour_counts(conn, table, since, until),
                  warehouse_record(conn, table, since, until))
    if lake is not None:
        for hour, rows in lake.hour_counts(table, since, until).items():
            hours.setdefault(hour, HourCounts()).lake = rows
        for hour in lake.pending_hours(table, since, until):
            if since <= hour < until:
                hours.setdefault(hour, HourCounts()).blocked = True
    return judge(hours, now=now, grace=grace, has_lake=lake is not None)


def gather(settings: Settings, store: ControlStore, conn: Any, tables: list[str],
           now: datetime, lakes: Mapping[str, HourCounter | None] | None = None
           ) -> list[tuple[str, list[HourVerdict], bool]]:
    """(table, verdicts, has a lake) for every table over ``reconcile.hours``; ``lakes``
    overrides the lake source per table (tests' fakes), else ``lake_counter``."""
    since, until = window(now, settings.reconcile.hours)
    grace = timedelta(seconds=settings.reconcile.grace_s)
    out = []
    for table in tables:
        lake = lakes[table] if lakes is not None and table in lakes \
            else lake_counter(settings, table)
        out.append((table, reconcile_table(store=store, conn=conn, table=table, now=now,
                                           since=since, until=until, grace=grace, lake=lake),
                    lake is not None))
    return out
