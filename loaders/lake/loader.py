"""The lake loader: staged files into a table's Apache Iceberg table, each row exactly once.

The warehouse loader's design (``shardline.loaders.loader``) with an Iceberg commit where
the warehouse has its transaction: one loop per lake table, a lease in the control store
(``@lake`` / table, ``TableLease``), the same pure ``LoadTrigger`` and ``load_group`` over
the ledger's *lake-pending* files (a state of their own beside the warehouse's), one
Iceberg commit per load, ``step()`` never sleeps and reads the injected clock.

Exactly once across the two stores: each commit records the files it holds
(``commits``: a manifest object and the snapshot summary); the ledger is updated after.
At start (and whenever the lease is taken) and before every commit the loader reads the
table's snapshots it has not seen and marks the files they hold lake-loaded, so a loader
killed between commit and ledger update neither adds a file twice nor loses one.
Concurrent commits are refused by Iceberg's optimistic concurrency (the commit names the
snapshot it read); a refused load reconciles and tries again.

Dedup on the table's dedup key within ``loader.dedup_window_s`` of the load's range of
the sort key, as the warehouse merge: within the load (the first copy by Kinesis
position) and against the stored rows (a scan of that range selecting only the key). A
reprocess load deletes the stored rows of its files' position ranges and appends the new
rows in the same commit.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

import botocore.exceptions
import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy.exc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, CommitStateUnknownException
from pyiceberg.expressions import And, BooleanExpression, Not
from pyiceberg.table import Table

from shardline import clients
from shardline.controlstore import ControlStore, PendingStats, open_store
from shardline.errors import LeaseHeld, LeaseLost, LoadFailed, RetriableError
from shardline.lake import schema as lake_schema
from shardline.lake.catalog import lake_spec, open_catalog, open_table
from shardline.lake.config import LOAD_ID_PREFIX
from shardline.layout import manifest_key
from shardline.lifecycle import first_line
from shardline.lake import filters
from shardline.loaders.lake import commits
from shardline.loaders.lake.rows import first_by_position, not_stored, read_staged
from shardline.loaders.lease import TableLease
from shardline.loaders.loader import (MAX_BACKOFF_S, LoadTrigger, StepResult, default_owner,
                                      file_columns, load_group, new_load_id)
from shardline.logs import get_logger
from shardline.metrics.pipeline import LakeLoaderMetrics
from shardline.records.control import utc
from shardline.records.ledger import StagedFile
from shardline.settings import Settings

LAKE_LEASE = "@lake"  # the lake loader lease's "stream" ('@' is never in a stream name)
# The chaos campaign's kill point (tests/chaos/lake.py), for tests only: a file path. A lake
# loader that has just committed and finds the file removes it and SIGKILLs itself before
# the ledger update, the window that reconcile() repairs. Unset everywhere else.
KILL_AFTER_COMMIT_ENV = "CHAOS_KILL_AFTER_LAKE_COMMIT"


def _test_kill_point() -> None:
    path = os.environ.get(KILL_AFTER_COMMIT_ENV)
    if not path:
        return
    try:
        os.unlink(path)  # claimed by exactly one loader
    except FileNotFoundError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


@dataclass(frozen=True)
class LakeLoad:
    load_id: str
    files: int
    rows_staged: int
    rows_added: int
    rows_replaced: int
    seconds: float
    capped: bool
    committed: bool  # False: nothing to write (every row already stored)


# What a lake load can fail with that is not a bug: the catalog (its database, Glue), S3,
# a concurrent commit. The files stay pending; the next step reconciles and tries again.
LAKE_ERRORS: tuple[type[BaseException], ...] = (
    LoadFailed, RetriableError, CommitFailedException, CommitStateUnknownException, OSError,
    sqlalchemy.exc.SQLAlchemyError, botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError)


def within_bytes(entries: list[StagedFile], limit: int) -> list[StagedFile]:
    """The first files up to ``limit`` staged bytes (at least one): a load's rows are in
    memory at once; the rest waits for the next load, right after."""
    out: list[StagedFile] = []
    total = 0
    for e in entries:
        if out and total + e.byte_count > limit:
            break
        out.append(e)
        total += e.byte_count
    return out


class LakeLoader:
    """One lake table's loader; ``step()`` is one look at the ledger (and maybe one load)."""

    def __init__(self, settings: Settings, table: str = "page_views", *,
                 s3: commits.ObjectStore | None = None, store: ControlStore | None = None,
                 catalog: Catalog | None = None, clock: Callable[[], float] = time.time,
                 load_id_factory: Callable[[datetime], str] = new_load_id,
                 owner: str | None = None):
        self.settings = settings
        self.spec = lake_spec(settings, table)  # ConfigError: not a lake table
        self.table = self.spec.name
        self.defaults = {c.name: c.default for c in self.spec.columns if c.default is not None}
        self.s3 = s3 if s3 is not None else clients.s3_client(settings)
        self._owns_store = store is None
        self.store = store if store is not None else open_store(settings, clock)
        self.catalog = catalog
        self.clock = clock
        self.load_id_factory = load_id_factory
        self.trigger = LoadTrigger.from_settings(settings.loader)
        self.log = get_logger("lake-loader", table=self.table, load_id="-")
        self.lease = TableLease(self.store, LAKE_LEASE, self.table,
                                owner or default_owner(), settings.loader.lease_ttl_s, clock,
                                self.log)
        self.metrics = LakeLoaderMetrics(self.table)
        self.seen: set[int] = set()  # snapshot ids whose files the ledger knows are loaded
        self.reconciled = False
        self.failures = 0
        self.retry_at = 0.0
        self._iceberg: Table | None = None

    # -- one iteration -----------------------------------------------------------
    def step(self) -> StepResult:
        poll = self.settings.loader.poll_s
        now = self.clock()
        if now < self.retry_at:
            if self.lease.token is not None:
                try:
                    self.lease.hold()
                except (LeaseHeld, LeaseLost, RetriableError):
                    pass
            return StepResult("backoff", self.retry_at - now)
        try:
            if not self.lease.hold():
                self.metrics.standby()
                return StepResult("standby", poll)
            if self.lease.taken:
                self.reconciled = False
                self.log.info("lake loader lease taken (token %d)", self.lease.token)
            if not self.reconciled:
                self.reconcile()
            stats = self.store.lake_pending_stats(self.table)
            self._gauges(stats, now)
            reason = self.trigger.reason(stats, utc(now))
            if reason is None:
                return StepResult("idle" if stats.files == 0 else "not_due", poll)
            result = self.load(reason)
        except LAKE_ERRORS as exc:
            self.failures += 1
            self.reconciled = False  # a commit whose outcome is unknown is found next
            self._iceberg = None
            delay = min(MAX_BACKOFF_S, max(poll, 1.0) * 2 ** (self.failures - 1))
            self.retry_at = self.clock() + delay
            self.metrics.load_failed()
            self.log.error("lake load failed (%s, failure %d in a row); its files stay "
                           "pending, retrying in %.1fs: %s", type(exc).__name__,
                           self.failures, delay, first_line(exc))
            return StepResult("failed", delay, error=exc)
        self.failures = 0
        self.retry_at = 0.0
        if result is None:
            return StepResult("nothing", poll)
        return StepResult("loaded", 0.0 if result.capped else poll)

    def describe(self) -> str:
        """The start log line's settings (``shardline.loaders.process`` runs the loop)."""
        lc = self.settings.loader
        return (f"{self.table}; trigger: >= {lc.min_bytes} bytes or >= {lc.min_files} files "
                f"or oldest >= {lc.max_interval_s:g}s; dedup window {lc.dedup_window_s:g}s")

    def release(self) -> None:
        self.lease.release()

    def close(self) -> None:
        if self._owns_store:
            self.store.close()

    def _gauges(self, stats: PendingStats, now: float) -> None:
        age = (utc(now) - stats.oldest).total_seconds() if stats.oldest is not None else 0.0
        self.metrics.pending(stats.files, stats.bytes, age)

    # -- the table and the ledger ----------------------------------------------------
    def iceberg(self) -> Table:
        """The Iceberg table, refreshed (its current snapshot and schema)."""
        if self._iceberg is None:
            if self.catalog is None:
                self.catalog = open_catalog(self.settings)
            self._iceberg = open_table(self.settings, self.table, self.catalog)
        else:
            self._iceberg.refresh()
        return self._iceberg

    def reconcile(self, table: Table | None = None) -> int:
        """Mark lake-loaded the pending files that snapshots not seen yet hold; returns
        how many were flipped."""
        table = table or self.iceberg()
        # listed before the ledger is read: a snapshot committed after this is looked at next
        # time, never taken as accounted for below
        listed = {s.snapshot_id for s in table.snapshots()}
        oldest = self.store.lake_pending_stats(self.table).oldest
        flipped = 0
        if oldest is not None:
            for load in commits.committed_loads(table, oldest, self.seen):
                keys = commits.read_manifest(self.s3, self.settings.s3.bucket,
                                             load.manifest)
                n = self.store.mark_lake_loaded(self.table, keys, load.load_id)
                if n:
                    self.log.bind(load_id=load.load_id).warning(
                        "reconciled %d files the lake already held (a loader stopped between "
                        "its commit and the ledger update)", n)
                flipped += n
                self.seen.update(load.snapshot_ids)
        else:  # nothing pending: every snapshot listed is accounted for
            self.seen.update(listed)
        self.reconciled = True
        return flipped

    # -- one load --------------------------------------------------------------------
    def load(self, reason: str = "requested") -> LakeLoad | None:
        t0 = time.monotonic()
        started = utc(self.clock())
        load_id = LOAD_ID_PREFIX + self.load_id_factory(started)
        log = self.log.bind(load_id=load_id)
        table = self.iceberg()
        self.reconcile(table)  # before every commit: what another loader committed
        cap = self.settings.loader.max_files_per_load
        fetched = self.store.lake_pending_files(self.table, cap)
        entries = within_bytes(load_group(fetched, lambda e: file_columns(self.spec, e)),
                               self.settings.lake.max_load_bytes)
        if not entries:
            return None
        first = entries[0]
        rows = self._read(entries, table, started.replace(tzinfo=None))
        staged = rows.num_rows
        key = list(self.spec.dedup_key)
        batch = first_by_position(rows, key)
        time_col = lake_schema.time_column(self.spec)
        time_range = None
        if batch.num_rows:
            low, high = pc.min_max(batch.column(time_col)).values()
            time_range = (low.as_py(), high.as_py())
        window_s = self.settings.loader.dedup_window_s
        replace: BooleanExpression | None = None
        if first.replaces:
            replace = filters.replace_filter(entries, time_col, time_range, window_s)
        if time_range is not None:
            scope: BooleanExpression = filters.window(time_col, *time_range, window_s)
            if replace is not None:
                scope = And(scope, Not(replace))
            stored = table.scan(row_filter=scope, selected_fields=tuple(key)).to_arrow()
            batch = not_stored(batch, stored, key)
        replaced = 0
        if replace is not None:
            replaced = table.scan(row_filter=replace, selected_fields=(key[0],)).count()
        committed = False
        if batch.num_rows or replaced:
            mkey = manifest_key(self.settings.s3.prefix, self.table, load_id)
            commits.write_manifest(self.s3, self.settings.s3.bucket, mkey,
                                   load_id, self.table, entries)
            props = commits.summary(load_id, mkey, len(entries))
            with table.transaction() as tx:
                if replace is not None and replaced:
                    tx.delete(replace, snapshot_properties=props)
                if batch.num_rows:  # in the table's sort order: min/max stats prune
                    tx.append(batch.sort_by(time_col), snapshot_properties=props)
            committed = True
            _test_kill_point()
        # The lake has committed; a kill here is what reconcile() repairs.
        try:
            self.store.mark_lake_loaded(self.table, [e.s3_key for e in entries], load_id)
        except RetriableError as exc:
            self.reconciled = False
            log.warning("loaded, but the control store did not take the update (%s); "
                        "reconciling from the table's snapshots next", exc)
        else:
            if committed:
                self.seen.update(commits.load_snapshot_ids(table, load_id))
        seconds = time.monotonic() - t0
        self.metrics.load_done(seconds, batch.num_rows, staged - batch.num_rows)
        log.info("lake loaded %d files, %d rows staged, %d added, %d duplicates skipped%s "
                 "in %.2fs because %s", len(entries), staged, batch.num_rows,
                 staged - batch.num_rows,
                 f", {replaced} stored rows of reprocessed ranges replaced" if replace else "",
                 seconds, reason)
        return LakeLoad(load_id, len(entries), staged, batch.num_rows, replaced, seconds,
                        len(fetched) >= cap or len(entries) < len(fetched), committed)

    def _read(self, entries: list[StagedFile], table: Table, loaded_at: datetime) -> pa.Table:
        schema = lake_schema.arrow_schema(table)
        parts = []
        for e in entries:
            if e.row_count <= 0:
                continue
            try:
                body = self.s3.get_object(
                    Bucket=self.settings.s3.bucket, Key=e.s3_key)["Body"].read()
            except Exception as exc:  # botocore's errors: the file stays pending
                raise LoadFailed(f"cannot read s3://{self.settings.s3.bucket}/{e.s3_key}: "
                                 f"{first_line(exc)}") from None
            part = read_staged(body, file_columns(self.spec, e), schema, loaded_at=loaded_at,
                               transform_version=e.transform_version, defaults=self.defaults)
            if part.num_rows != e.row_count:
                raise LoadFailed(f"s3://{self.settings.s3.bucket}/{e.s3_key} has "
                                 f"{part.num_rows} rows, the ledger counts {e.row_count}")
            parts.append(part)
        return pa.concat_tables(parts) if parts else schema.empty_table()


