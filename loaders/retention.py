"""Warehouse retention: delete a table's hours older than its ``warehouse_retention`` from
the warehouse, once the lake holds them (docs/reconciliation.md).

It runs in the table's warehouse loader, between loads (``Loader.step`` when no load is
due), under the loader's lease: the loader is the table's only writer, so a retention
DELETE never races a merge of the same table, and each retention transaction starts with
the table's fence UPDATE under the loader's lease token, like a load: a loader whose lease
was taken over cannot delete either. (A separate command would have to take the loader's
lease, stopping loads meanwhile; the loader already holds it and knows when it is idle.)

One hour per transaction, each short: the fence, the hour's rows counted into the load
record as ``retired`` (``load_hours``), then ``DELETE FROM t WHERE arrival_time >= h AND
arrival_time < h + 1h``, a bounded range on a column with a zone map (rows are appended in
arrival order), then COMMIT. The DELETE's row count must equal the count just recorded, or
the transaction is rolled back. Under SERIALIZABLE a conflict with another writer (a GDPR
delete) rolls the hour back; the next pass tries again. Redshift only marks deleted rows:
the space returns at the next VACUUM DELETE (automatic in the background, or run by hand
after a large first pass).

An hour is deleted only when it is settled (ended ``reconcile.grace_s`` ago, no pending
file touches it in the ledger, the lake reports nothing pending for it) and the lake holds
every row the warehouse holds or held there: lake(h) = warehouse(h) + retired(h).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, ContextManager

from shardline.errors import ConfigError, LoadFailed
from shardline.logs import ContextLogger
from shardline.records import hours as kinds
from shardline.reconcile.rule import HOUR
from shardline.reconcile.run import hour_floor
from shardline.reconcile.sources import HourCounter, lake_counter, pending_files_hours, \
    warehouse_hour_counts, warehouse_record
from shardline.records.tables import TableSpec
from shardline.settings import Settings
from shardline.loaders.warehouse.plan import Refused, fence_step

PENDING_LIMIT = 100_000


def retention_lake(settings: Settings, spec: TableSpec,
                   lake: HourCounter | None = None) -> HourCounter | None:
    """The lake source retention checks against, or None when the table keeps its rows.
    A retention without a lake is refused at start: nothing else would hold the rows."""
    if spec.warehouse_retention_h is None:
        return None
    found = lake if lake is not None else lake_counter(settings, spec.name)
    if found is None:
        raise ConfigError(f"table {spec.name} has warehouse_retention but no lake target holds "
                          f"its rows: add it to lake.tables (SHARDLINE_LAKE_TABLES), or remove "
                          f"warehouse_retention from the tables file")
    return found


@dataclass(frozen=True)
class Retired:
    hour: datetime
    rows: int


class Retention:
    """One table's retention passes; ``step(now)`` is one pass when due (no sleeping)."""

    def __init__(self, settings: Settings, spec: TableSpec, lake: HourCounter,
                 store: Any, tx: Callable[[], ContextManager[Any]], log: ContextLogger):
        assert spec.warehouse_retention_h is not None
        self.settings, self.spec, self.lake, self.store, self.tx = settings, spec, lake, \
            store, tx
        self.keep = timedelta(hours=spec.warehouse_retention_h)
        self.log = log
        self.next_at = 0.0

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def step(self, now: float, token: int, load_id: str) -> list[Retired]:
        """One pass: the oldest hours before the cutoff that the lake holds, at most
        ``reconcile.retention_hours_per_pass``, each deleted in its own transaction."""
        rc = self.settings.reconcile
        self.next_at = now + rc.retention_interval_s
        when = datetime(1970, 1, 1) + timedelta(seconds=now)
        cutoff = hour_floor(when) - self.keep
        table = self.spec.name
        with self.tx() as cur:
            cur.execute(f"SELECT MIN(arrival_time) FROM {table} WHERE arrival_time < %s",
                        (cutoff,))
            oldest = cur.fetchone()[0]
        if oldest is None:
            return []
        since = hour_floor(oldest)
        until = min(cutoff, since + timedelta(hours=max(24, rc.retention_hours_per_pass)))
        settled_before = when - HOUR - timedelta(seconds=rc.grace_s)
        blocked = pending_files_hours(self.store.pending_files(table, PENDING_LIMIT))
        blocked |= self.lake.pending_hours(table, since, until)
        lake = self.lake.hour_counts(table, since, until)
        with self.tx() as cur:
            stored = warehouse_hour_counts(cur.connection, table, since, until)
            record = warehouse_record(cur.connection, table, since, until)
        done: list[Retired] = []
        for hour in sorted(stored):
            if len(done) >= rc.retention_hours_per_pass:
                break
            retired = record.get(hour, {}).get(kinds.RETIRED, 0)
            if hour in blocked or hour > settled_before:
                continue
            if lake.get(hour, 0) != stored[hour] + retired:
                self.log.warning("retention: %s hour %s kept: the lake holds %d rows, the "
                                 "warehouse %d (+%d retired)", table, f"{hour:%Y-%m-%d %H}:00",
                                 lake.get(hour, 0), stored[hour], retired)
                continue
            done.append(Retired(hour, self._delete_hour(hour, token, load_id, when)))
        if done:
            self.log.info("retention: deleted %d rows of %d hours before %s from %s (the lake "
                          "holds them; VACUUM DELETE reclaims the space)",
                          sum(r.rows for r in done), len(done), f"{cutoff:%Y-%m-%d %H}:00",
                          table)
        return done

    def _delete_hour(self, hour: datetime, token: int, load_id: str, now: datetime) -> int:
        import psycopg2

        try:
            return self._delete_hour_tx(hour, token, load_id, now)
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            raise
        except psycopg2.Error as exc:  # e.g. a serialization conflict: rolled back
            raise RetentionRaced(f"retention of {self.spec.name} {hour:%Y-%m-%d %H}:00: "
                                 f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from None

    def _delete_hour_tx(self, hour: datetime, token: int, load_id: str, now: datetime) -> int:
        table = self.spec.name
        bound = (hour, hour + HOUR)
        fence = fence_step(table, token, load_id, now)
        with self.tx() as cur:
            cur.execute(fence.text, fence.params)
            if cur.rowcount != 1:
                raise Refused(fence.refusal, "fence")
            cur.execute(f"SELECT COUNT(*) FROM {table} WHERE arrival_time >= %s "
                        "AND arrival_time < %s", bound)
            counted = int(cur.fetchone()[0])
            cur.execute(f"INSERT INTO {kinds.HOUR_RECORD_TABLE} "
                        f"({', '.join(kinds.HOUR_RECORD_COLUMNS)}) "
                        "VALUES (%s, %s, %s, %s, %s, %s)",
                        (load_id, table, hour, kinds.RETIRED, counted, now))
            cur.execute(f"DELETE FROM {table} WHERE arrival_time >= %s AND arrival_time < %s",
                        bound)
            if cur.rowcount != counted:  # another writer in between: leave it for next pass
                raise RetentionRaced(f"retention of {table} {hour:%Y-%m-%d %H}:00: counted "
                                     f"{counted} rows, DELETE removed {cur.rowcount}")
        return counted


class RetentionRaced(LoadFailed):
    """The hour changed between its count and its DELETE: rolled back, tried next pass."""
