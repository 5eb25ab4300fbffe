"""Where reconciliation's counts come from: the ledger, the warehouse, and the lake.

The lake is a pluggable source: anything with ``hour_counts`` (and ``pending_hours``) is a
``HourCounter``. ``lake_counter`` finds the lake's when the lake target is built into this
install (``shardline.lake.counts.hour_counts(settings, table, since, until)``) and the table
is one of its tables; otherwise there is no lake source for the table, and reconciliation
shows the lake as "not configured".
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol

from shardline.records import hours as kinds
from shardline.records.ledger import LOADED, PENDING, QUARANTINED, StagedFile, file_hours, \
    span_hours
from shardline.reconcile.rule import HOUR, HourCounts

if TYPE_CHECKING:
    from shardline.settings import Settings

SKEW = HOUR  # clock skew allowed between the host that stamps staged_at and Kinesis


class HourCounter(Protocol):
    """A target's rows per UTC hour of ``arrival_time`` (the lake's, or a test's fake)."""

    def hour_counts(self, table: str, since: datetime, until: datetime
                    ) -> dict[datetime, int]:
        """{hour start (naive UTC): rows} for hours in [since, until)."""
        ...

    def pending_hours(self, table: str, since: datetime, until: datetime) -> set[datetime]:
        """Hours in [since, until) that still have rows on their way into this target."""
        ...


@dataclass(frozen=True)
class FunctionCounter:
    """A ``HourCounter`` over plain functions (the lake module's)."""

    counts: Callable[[str, datetime, datetime], dict[datetime, int]]
    pending: Callable[[str, datetime, datetime], set[datetime]] | None = None

    def hour_counts(self, table: str, since: datetime, until: datetime
                    ) -> dict[datetime, int]:
        return self.counts(table, since, until)

    def pending_hours(self, table: str, since: datetime, until: datetime) -> set[datetime]:
        return self.pending(table, since, until) if self.pending else set()


def lake_tables(settings: Settings) -> list[str]:
    """The tables the lake target is configured for (none when it is not built in)."""
    lake = getattr(settings, "lake", None)  # the lake's settings section, when present
    names = getattr(lake, "tables", None) or ()
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
    return [str(n) for n in names if str(n)]


def lake_counter(settings: Settings, table: str) -> HourCounter | None:
    """The lake's counts of ``table``, or None when the table has no lake target."""
    if table not in lake_tables(settings):
        return None
    try:
        module = importlib.import_module("shardline.lake.counts")
    except ImportError:
        return None
    counts: Any = module.hour_counts
    pending: Any = getattr(module, "pending_hours", None)
    return FunctionCounter(
        lambda t, s, u: dict(counts(settings, t, s, u)),
        (lambda t, s, u: set(pending(settings, t, s, u))) if pending else None)


# -- the ledger ------------------------------------------------------------------------

def add_ledger(out: dict[datetime, HourCounts], files: Iterable[StagedFile],
               since: datetime, until: datetime) -> None:
    """Each file's rows into its hours (loaded: staged; pending; quarantined); a pending
    file blocks every hour its arrival range touches."""
    for f in files:
        counts, unknown = file_hours(f)
        for hour, rows in counts.items():
            if since <= hour < until:
                c = out.setdefault(hour, HourCounts())
                if f.state == LOADED:
                    c.staged += rows
                elif f.state == PENDING:
                    c.pending += rows
                elif f.state == QUARANTINED:
                    c.quarantined += rows
        for hour in unknown:
            if since <= hour < until:
                out.setdefault(hour, HourCounts()).unknown = True
        if f.state == PENDING:
            for hour in span_hours(f):
                if since <= hour < until:
                    out.setdefault(hour, HourCounts()).blocked = True


def pending_files_hours(files: Iterable[StagedFile]) -> set[datetime]:
    """The hours pending files touch (their arrival ranges, whole)."""
    found: set[datetime] = set()
    for f in files:
        if f.state == PENDING:
            found.update(span_hours(f) or file_hours(f)[0])
    return found


# -- the warehouse ---------------------------------------------------------------------

def warehouse_hour_counts(conn: Any, table: str, since: datetime, until: datetime
                          ) -> dict[datetime, int]:
    """Rows per hour of ``arrival_time`` in [since, until): a bounded range on a column
    with a zone map on Redshift (rows are appended in arrival order; a BRIN index in the
    redshift-like mode), so it reads the window's blocks, not the table."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT {kinds.HOUR_OF_ARRIVAL}, COUNT(*) FROM {table} "
                    "WHERE arrival_time >= %s AND arrival_time < %s "
                    f"GROUP BY {kinds.HOUR_OF_ARRIVAL}", (since, until))
        return {hour: int(n) for hour, n in cur.fetchall()}


def warehouse_record(conn: Any, table: str, since: datetime, until: datetime
                     ) -> dict[datetime, dict[str, int]]:
    """{hour: {kind: rows}} from ``load_hours`` (its sort key is the hour)."""
    out: dict[datetime, dict[str, int]] = {}
    with conn.cursor() as cur:
        cur.execute(f"SELECT hour, kind, SUM(row_count) FROM {kinds.HOUR_RECORD_TABLE} "
                    "WHERE target_table = %s AND hour >= %s AND hour < %s GROUP BY hour, kind",
                    (table, since, until))
        for hour, kind, rows in cur.fetchall():
            out.setdefault(hour, {})[kind] = int(rows)
    return out


def add_warehouse(out: dict[datetime, HourCounts], counts: dict[datetime, int],
                  record: dict[datetime, dict[str, int]]) -> None:
    for hour, rows in counts.items():
        out.setdefault(hour, HourCounts()).warehouse = rows
    for hour, by_kind in record.items():
        c = out.setdefault(hour, HourCounts())
        c.record_staged = by_kind.get(kinds.STAGED, 0)
        c.inserted = by_kind.get(kinds.INSERTED, 0)
        c.replaced = by_kind.get(kinds.REPLACED, 0)
        c.retired = by_kind.get(kinds.RETIRED, 0)
