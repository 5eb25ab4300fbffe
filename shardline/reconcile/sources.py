"""Where reconciliation's counts come from: the ledger, the warehouse, and the lake.

The lake is a pluggable source: anything with ``hour_counts`` (and ``pending_hours``) is a
``HourCounter`` (tests plug fakes in). ``lake_counter`` gives the lake's
(``shardline.lake.counts.hour_counts``) for a table of ``lake.tables``; for any other table
there is no lake source, and reconciliation shows the lake as "not configured".
"""
from __future__ import annotations

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


def lake_counter(settings: Settings, table: str) -> HourCounter | None:
    """The lake's counts of ``table``, or None when the table has no lake target. The lake
    module (pyiceberg) is imported only for a lake table: status on an install without the
    lake extra still runs when no table goes to the lake. The lake's pending hours come
    from the ledger (``lake_state``, read with the staged counts: ``add_ledger``)."""
    if table not in settings.lake.tables:
        return None
    from shardline.lake import counts

    return FunctionCounter(lambda t, s, u: counts.hour_counts(settings, t, s, u))


# -- the ledger ------------------------------------------------------------------------

def add_ledger(out: dict[datetime, HourCounts], files: Iterable[StagedFile],
               since: datetime, until: datetime) -> None:
    """Each file's rows into its hours (loaded: staged; pending; quarantined); a file
    pending for either target (the warehouse's ``state``, the lake's ``lake_state``) blocks
    every hour its arrival range touches."""
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
        if _pending(f):
            for hour in span_hours(f):
                if since <= hour < until:
                    out.setdefault(hour, HourCounts()).blocked = True


def _pending(f: StagedFile) -> bool:
    return f.state == PENDING or f.lake_state == PENDING


def pending_files_hours(files: Iterable[StagedFile]) -> set[datetime]:
    """The hours pending files touch (their arrival ranges, whole)."""
    found: set[datetime] = set()
    for f in files:
        if _pending(f):
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
