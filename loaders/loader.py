"""The loader: COPY staged files into the warehouse, each record exactly once.

Why a loop process and not a Gearman function: a load is not a unit of work somebody
hands out; it is "whatever is pending for this table, now". One loop per table reads the
ledger (in the control store) itself, so there is no job to lose, retry or coalesce.

Two stores, exactly once. The ledger of staged files lives in the control store; the
warehouse transaction commits the rows together with an insert-only record of the files it
loaded (``loaded_files``, ``loads``). Only then is the control store told
(``mark_loaded``). A loader killed between the two is reconciled: at start and after each
load, pending files the warehouse record already holds are marked loaded from it
(``reconcile``), and the load transaction itself refuses a file already in the record.

One loader per table at a time: a lease in the control store (``LOADER_LEASE`` /
table), fenced in the warehouse by the table's fence row the merge transaction updates with
its token. No table lock: readers of the target never wait for a load.

One ``step()``:

1. hold the loader lease (take it, or renew it); a standby loader waits;
2. reconcile if needed; ask the ledger what is pending (count, bytes, oldest) and let the
   pure ``LoadTrigger`` decide: load when ``>= loader.min_bytes`` or ``>= loader.min_files``
   are pending, or the oldest has waited ``>= loader.max_interval_s``;
3. the plan (``shardline.loaders.warehouse.plan``) in two warehouse transactions: COPY into
   a staging table of the session; then one short transaction from the fence: refuse
   already-loaded files, bounded dedup merge, the record; commit; then ``mark_loaded`` in
   the control store.

A crash before the merge's commit leaves the target and the record as they were: the files
stay ``pending`` (the staging table goes with the session). A failed load
is logged with its reason and retried with exponential backoff; a file whose COPY failed
``loader.quarantine_after`` times (counted in the control store, so restarts do not reset
it) is quarantined with its error (``shardline status``
shows it) so the rest of the table goes on loading.
"""
from __future__ import annotations

import contextlib
import dataclasses
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Sequence

from shardline import clients
from shardline.records.control import utc
from shardline.controlstore import ControlStore, PendingStats, open_store
from shardline.errors import LeaseHeld, LeaseLost, LoadFailed, RetriableError
from shardline.layout import manifest_key
from shardline.lifecycle import first_line, transaction
from shardline.logs import get_logger
from shardline.metrics.pipeline import LoaderMetrics
from shardline.settings import LoaderSettings, Settings
from shardline.tables import PRE_COLUMN_LIST, TableSpec, load_tables
from shardline.records.ledger import StagedFile, e2e_observations
from shardline.loaders.lease import TableLease
from shardline.loaders.warehouse import combine, make_dialect, record
from shardline.loaders.warehouse.base import CopyErrors, Dialect, PlanResult
from shardline.loaders.warehouse.plan import LoadPlan, Manifest, Refused, Step, build_plan
from shardline.loaders.retention import Retention, retention_lake
from shardline.reconcile.sources import HourCounter

MAX_BACKOFF_S = 60.0
MERGE_ATTEMPTS = 3  # a merge that conflicts with a concurrent commit is tried this often
_IDENT = re.compile(r"[^a-z0-9]")
# The loader lease's "stream" in the control store ('@' is never in a Kinesis stream name).
LOADER_LEASE = "@loader"
QUARANTINE_REFRESH_S = 30.0  # the quarantined-files gauge reads the store this often


# -- the trigger (pure) -------------------------------------------------------------

@dataclass(frozen=True)
class LoadTrigger:
    """When is a load due? No I/O, no clock of its own: the caller passes ``now``."""

    min_bytes: int
    min_files: int
    max_interval_s: float

    @classmethod
    def from_settings(cls, loader: LoaderSettings) -> "LoadTrigger":
        """min_bytes rounded up to a multiple of slices x 1 MB (every slice gets work)."""
        unit = loader.slices * 1024 * 1024
        min_bytes = -(-loader.min_bytes // unit) * unit if loader.min_bytes >= unit \
            else loader.min_bytes  # tests and the demo use tiny thresholds on purpose
        return cls(min_bytes, loader.min_files, loader.max_interval_s)

    def reason(self, stats: PendingStats, now: datetime) -> str | None:
        """Why a load is due (for the log), or None when it is not."""
        if stats.files <= 0:
            return None
        if stats.bytes >= self.min_bytes:
            return f"{stats.bytes} bytes pending >= min_bytes {self.min_bytes}"
        if self.min_files and stats.files >= self.min_files:
            return f"{stats.files} files pending >= min_files {self.min_files}"
        if self.max_interval_s <= 0:
            return "files pending and max_interval_s is 0"
        if stats.oldest is not None:
            age = (now - stats.oldest).total_seconds()
            if age >= self.max_interval_s:
                return f"oldest pending file is {age:.1f}s old >= max_interval_s " \
                       f"{self.max_interval_s:g}"
        return None

    def due(self, stats: PendingStats, now: datetime) -> bool:
        return self.reason(stats, now) is not None


def load_group(entries: Sequence[StagedFile],
               columns_of: Callable[[StagedFile], Any] = lambda e: e.columns
               ) -> list[StagedFile]:
    """The files of one load, from the oldest pending ones (oldest first): all of one kind
    (normal, or one reprocess run's), one transform version and one column list (the COPY
    names it: files staged before an ADD COLUMN have fewer), so the load writes one
    version into its rows and replaces ranges only for reprocess files. A reprocess load
    stops before a normal file of another version: a file an older transform staged must
    load first, or its rows would come back over the reprocessed range. Files a normal
    load passes over wait for the next load (files of a new version are identical to what
    a reprocess of the same records makes, so their order does not matter)."""
    if not entries:
        return []
    first = entries[0]
    kind = (first.generation, first.transform_version, columns_of(first))
    out = []
    for e in entries:
        if (e.generation, e.transform_version, columns_of(e)) == kind:
            out.append(e)
        elif first.replaces and not e.replaces \
                and e.transform_version != first.transform_version:
            break
    return out


def file_columns(spec: TableSpec, entry: StagedFile) -> tuple[str, ...]:
    """The file's CSV columns: recorded by its stage worker, or (a file staged before
    files recorded them) the columns that release staged."""
    return entry.columns or PRE_COLUMN_LIST.get(spec.name) or tuple(spec.column_names)


def stats_of(entries: Sequence[StagedFile]) -> PendingStats:
    return PendingStats(len(entries), sum(e.byte_count for e in entries),
                        min((e.staged_at for e in entries), default=None))


# -- results -------------------------------------------------------------------------

@dataclass(frozen=True)
class LoadResult:
    load_id: str
    table: str
    manifest_key: str
    files: int
    bytes: int
    rows_copied: int
    rows_inserted: int
    seconds: float
    capped: bool  # the load took max_files_per_load entries: more may be waiting
    timings: dict[str, float] = field(default_factory=dict)  # plan step -> seconds
    rows_replaced: int = 0  # a reprocess load: stored rows deleted from its files' ranges


@dataclass(frozen=True)
class StepResult:
    state: str  # idle | not_due | loaded | nothing | failed | backoff | standby
    wait_s: float
    load: LoadResult | None = None
    error: BaseException | None = None


def new_load_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%S}Z-{uuid.uuid4().hex[:12]}"


# -- the loop ----------------------------------------------------------------------

class Warehouse:
    """One lazily opened warehouse connection, rebuilt after a connection error."""

    def __init__(self, connect: Callable[[], Any]):
        self._connect = connect
        self._conn: Any = None

    def tx(self) -> contextlib.AbstractContextManager[Any]:
        return transaction(self, "warehouse")

    def commit(self) -> None:
        """Commit the open transaction before ``tx()`` would (which then has nothing to do)."""
        self._conn.commit()

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None


class Loader:
    """One table's loader; ``step()`` is one look at the ledger (and maybe one load)."""

    def __init__(self, settings: Settings, table: str = "page_views", *,
                 dialect: Dialect | None = None, s3: Any = None,
                 connect: Callable[[], Any] | None = None,
                 store: ControlStore | None = None,
                 clock: Callable[[], float] = time.time,
                 load_id_factory: Callable[[datetime], str] = new_load_id,
                 owner: str | None = None, lake: HourCounter | None = None):
        self.settings = settings
        self.spec = load_tables(settings)[table]  # ConfigError: not in the tables file
        self.table = self.spec.name
        self.s3 = s3 if s3 is not None else clients.s3_client(settings)
        self.dialect = dialect if dialect is not None else make_dialect(settings, self.s3)
        self.clock = clock
        self.warehouse = Warehouse(connect or (lambda: clients.warehouse_connect(settings)))
        self._owns_store = store is None  # a store handed in belongs to the caller
        self.store = store if store is not None else open_store(settings, clock)
        self.trigger = LoadTrigger.from_settings(settings.loader)
        self.load_id_factory = load_id_factory
        self.owner = owner or f"{default_owner()}"
        self.reconciled = False
        self.failures = 0
        self.retry_at = 0.0
        self.isolate = False  # a COPY failed naming no file: load one file at a time
        self.last_load_id: str | None = None
        self.log = get_logger("loader", table=self.table, load_id="-")
        self.lease = TableLease(self.store, LOADER_LEASE, self.table, self.owner,
                                settings.loader.lease_ttl_s, clock, self.log)
        self.metrics = LoaderMetrics(self.table)
        self.quarantine_read_at: float | None = None  # None: read at the next step
        # warehouse retention, between loads (``lake``: the lake source it checks; None:
        # the lake target's, and a table with retention and no lake stops here)
        retention_source = retention_lake(settings, self.spec, lake)
        self.retention = None if retention_source is None else Retention(
            settings, self.spec, retention_source, self.store, self.warehouse.tx, self.log)

    # -- one iteration -----------------------------------------------------------
    def step(self) -> StepResult:
        """Hold the lease, look at the ledger, load if the trigger fires. Retriable
        failures are logged and turned into a backoff (the next steps return ``backoff``
        until it passes); anything else is a bug and propagates."""
        poll = self.settings.loader.poll_s
        now = self.clock()
        self.last_load_id = None
        if now < self.retry_at:
            if self.token is not None:  # a backoff longer than the lease must not lose it
                with contextlib.suppress(LeaseHeld, LeaseLost, RetriableError):
                    self.hold_lease()
            return StepResult("backoff", self.retry_at - now)
        try:
            if not self.hold_lease():
                self.metrics.standby()
                return StepResult("standby", poll)
            if not self.reconciled:
                self.reconcile()
            stats = self.pending_stats()
            self._gauges(stats, now)
            reason = self.trigger.reason(stats, utc(now))
            if reason is None:
                if self.retention is not None and self.retention.due(now) and self.token:
                    retired = self.retention.step(now, self.token,
                                                  f"retention-{self.load_id_factory(utc(now))}")
                    if retired:
                        return StepResult("retention", 0.0)
                return StepResult("idle" if stats.files == 0 else "not_due", poll)
            result = self.load(reason)
        except Refused as exc:
            self.reconciled = False  # the warehouse knows something the store does not
            if exc.step == "fence":
                self.token = None  # a newer loader holds the table
            self.log.warning("load refused: %s", exc)
            return StepResult("nothing", 0.0 if exc.step != "fence" else poll)
        except (LoadFailed, RetriableError) as exc:
            self.failures += 1
            delay = min(MAX_BACKOFF_S, max(poll, 1.0) * 2 ** (self.failures - 1))
            self.retry_at = self.clock() + delay
            if self.last_load_id is not None:
                self.metrics.load_failed()
            log = self.log.bind(load_id=self.last_load_id or "-")
            log.error("load failed (%s, failure %d in a row); its files stay pending, "
                      "retrying in %.1fs: %s", type(exc).__name__, self.failures, delay,
                      self.dialect.redact(str(exc)))
            return StepResult("failed", delay, error=exc)
        self.failures = 0
        self.retry_at = 0.0
        if result is None:
            return StepResult("nothing", poll)
        return StepResult("loaded", 0.0 if result.capped else poll, load=result)

    def describe(self) -> str:
        """The start log line's settings (``shardline.loaders.process`` runs the loop)."""
        lc = self.settings.loader
        return (f"dialect={self.dialect.name} trigger: >= {lc.min_bytes} bytes or >= "
                f"{lc.min_files} files or oldest >= {lc.max_interval_s:g}s; <= "
                f"{lc.max_files_per_load} files per load; dedup window {lc.dedup_window_s:g}s; "
                f"poll {lc.poll_s:g}s")

    def close(self) -> None:
        self.warehouse.close()
        if self._owns_store:
            self.store.close()

    def _gauges(self, stats: PendingStats, now: float) -> None:
        """Pending and quarantined files for the metrics (the quarantine list is read every
        ``QUARANTINE_REFRESH_S``, and at once after a quarantine)."""
        age = (utc(now) - stats.oldest).total_seconds() if stats.oldest is not None else 0.0
        self.metrics.pending(stats.files, stats.bytes, age)
        if self.quarantine_read_at is None or now - self.quarantine_read_at >= \
                QUARANTINE_REFRESH_S:
            self.quarantine_read_at = now
            self.metrics.quarantined.set(len(self.store.quarantined(self.table)))

    # -- the loader lease ----------------------------------------------------------
    @property
    def token(self) -> int | None:
        return self.lease.token

    @token.setter
    def token(self, value: int | None) -> None:
        self.lease.token = value

    def hold_lease(self) -> bool:
        """Take or renew the table's loader lease; False while another loader holds it."""
        if not self.lease.hold():
            return False
        if self.lease.taken:
            self.reconciled = False
            with self.warehouse.tx() as cur:
                record.ensure_fence(cur, self.table, utc(self.clock()))
            self.log.info("loader lease taken (token %d)", self.token)
        return True

    def release(self) -> None:
        self.lease.release()

    # -- the two stores ------------------------------------------------------------
    def pending_stats(self) -> PendingStats:
        return self.store.pending_stats(self.table)

    def reconcile(self) -> int:
        """Mark loaded what the warehouse record already holds. A load takes the oldest
        pending files, so one load's worth of the oldest is all that can be unmarked."""
        entries = self.store.pending_files(self.table, self.settings.loader.max_files_per_load)
        with self.warehouse.tx() as cur:
            found = record.loaded_by(cur, self.table, entries)
        by_load: dict[str, list[str]] = {}
        for key, load_id in found.items():
            by_load.setdefault(load_id, []).append(key)
        for load_id, keys in sorted(by_load.items()):
            n = self.store.mark_loaded(self.table, keys, load_id)
            self.log.bind(load_id=load_id).warning(
                "reconciled %d files the warehouse already held (the loader stopped between "
                "its commit and the control store update)", n)
        self.reconciled = True
        return len(found)

    # -- one load --------------------------------------------------------------------
    def load(self, reason: str = "requested") -> LoadResult | None:
        """One load transaction, then the ledger update; None when nothing is pending any
        more. Raises ``LoadFailed`` / ``ServiceUnavailable`` / ``Refused``."""

        t0 = time.monotonic()
        started = utc(self.clock())
        load_id = self.load_id_factory(started)
        self.last_load_id = load_id
        log = self.log.bind(load_id=load_id)
        stage_table = f"stage_{self.table[:24]}_{_IDENT.sub('_', load_id.lower())[:32]}"
        lc = self.settings.loader
        cap = 1 if self.isolate else lc.max_files_per_load
        fetched = self.store.pending_files(self.table, cap)
        entries = load_group(fetched, self.columns_of)
        if not entries:
            return None
        first = entries[0]
        columns = self.columns_of(first)
        manifest = Manifest(self.settings.s3.bucket,
                            manifest_key(self.settings.s3.prefix, self.table, load_id),
                            tuple(e for e in entries if e.row_count > 0))
        if self.dialect.name == "redshift":  # COPY reads parts of >= combine_min_bytes
            groups = combine.plan_parts(manifest.entries, lc.combine_min_bytes, lc.slices)
            if groups:
                parts = combine.write_parts(self.s3, manifest.bucket, self.settings.s3.prefix,
                                            self.table, load_id, groups)
                manifest = dataclasses.replace(
                    manifest, parts=tuple(parts),
                    combined=frozenset(e.s3_key for g in groups for e in g),
                    members=tuple(tuple(g) for g in groups))
        log.info("loading %d files (%d bytes; transform %s%s) because %s%s", len(entries),
                 sum(e.byte_count for e in entries), first.transform_version or "unrecorded",
                 f"; reprocess {first.generation}: replacing their ranges"
                 if first.replaces else "", reason,
                 " (one at a time: finding the file whose COPY fails)" if self.isolate else "")
        if manifest.entries:
            self._put_manifest(manifest)
        plan = build_plan(self.spec, load_id=load_id, stage_table=stage_table,
                          manifest=manifest, entries=entries, started_at=started,
                          finished_at=lambda: utc(self.clock()), lease_token=self.token or 0,
                          dedup_window_s=lc.dedup_window_s, replace=first.replaces,
                          transform_version=first.transform_version, columns=columns)
        results: dict[str, Any] = {}  # what the copy found (row count, sort range), for the merge
        copied = PlanResult()
        if plan.copy:
            try:
                copied = self._run_tx(plan.copy, results)
            except LoadFailed as exc:
                if getattr(exc, "step", None) == "count":
                    self.metrics.mismatches.inc()
                    log.error("ALERT row count mismatch: %s (files: %s)", exc, ", ".join(
                        manifest.object_url(e) for e in manifest.entries[:20]))
                if getattr(exc, "step", None) in ("copy", "count"):
                    self._copy_failed(log, manifest, str(exc), started)
                raise
        try:
            outcome = self._merge(log, plan, results)
        except LoadFailed as exc:
            if getattr(exc, "step", None) == "merge":  # the rows of some file: find it
                self._copy_failed(log, manifest, str(exc), started)
            raise
        outcome.timings = {**copied.timings, **outcome.timings}
        queryable_ms = int(self.clock() * 1000)
        self.isolate = False
        # The warehouse has committed; a kill here is what reconcile() repairs.
        try:
            self.store.mark_loaded(self.table, [e.s3_key for e in entries], load_id)
        except RetriableError as exc:
            self.reconciled = False
            log.warning("loaded, but the control store did not take the update (%s); "
                        "reconciling from the warehouse record next", exc)
        seconds = time.monotonic() - t0
        result = LoadResult(load_id, self.table, manifest.key, len(entries),
                            sum(e.byte_count for e in entries), outcome.rows_copied,
                            outcome.rows_inserted, seconds,
                            len(fetched) >= cap or len(entries) < len(fetched),
                            outcome.timings, outcome.rows_replaced)
        share = outcome.rows_inserted / outcome.rows_copied if outcome.rows_copied else 0.0
        # a reprocess or redrive re-loads old records: their age is not the pipeline's latency
        self.metrics.load_done(seconds, outcome.rows_inserted, outcome.rows_copied,
                               [] if first.generation else
                               e2e_observations(entries, queryable_ms, share))
        log.info("loaded %d files, %d rows copied, %d inserted, %d duplicates skipped, "
                 "%s""in %.2fs (%.0f rows/s; %s)", result.files,
                 result.rows_copied, result.rows_inserted,
                 result.rows_copied - result.rows_inserted,
                 f"{result.rows_replaced} stored rows of reprocessed ranges replaced, "
                 if first.replaces else "",
                 seconds,
                 result.rows_copied / seconds if seconds > 0 else 0.0,
                 " ".join(f"{k}={v:.2f}s" for k, v in outcome.timings.items() if v >= 0.01)
                 or "steps < 0.01s")
        return result

    def _run_tx(self, steps: Sequence[Step], results: dict[str, Any]) -> PlanResult:
        """Steps in one warehouse transaction; a SQL error is a ``LoadFailed`` naming it
        (``SerializationConflict``: a conflict with a concurrent commit, worth running again)."""
        import psycopg2

        with self.warehouse.tx() as cur:
            try:
                out = self.dialect.run(cur, steps, results)
                # committed here, not by tx(): a serialization failure at COMMIT is then a
                # conflict to merge again, not a lost connection (the session and its
                # staging table stay)
                self.warehouse.commit()
                return out
            except LoadFailed:
                raise
            except (psycopg2.DataError, psycopg2.IntegrityError) as exc:
                # a value the target refuses (class 22/23: a check, NOT NULL, a type): the
                # rows of some file, found and quarantined like a failed COPY's
                failed = LoadFailed(self.dialect.redact(
                    f"{type(exc).__name__}: {first_line(exc)}"))
                failed.step = "merge" if any(s.name == "fence" for s in steps) else None
                raise failed from None
            except psycopg2.extensions.TransactionRollbackError as exc:
                raise SerializationConflict(self.dialect.redact(
                    f"{type(exc).__name__}: {first_line(exc)}")) from None
            except (psycopg2.OperationalError, psycopg2.InterfaceError):
                raise
            except psycopg2.Error as exc:
                kind = SerializationConflict if serialization_failure(exc) else LoadFailed
                raise kind(self.dialect.redact(
                    f"{type(exc).__name__}: {first_line(exc)}")) from None

    def _merge(self, log: Any, plan: LoadPlan, results: dict[str, Any]) -> PlanResult:
        """The short merge transaction, run again (from the staging table, without the COPY)
        after a serialization conflict with another session's commit. Whatever fails, the
        session is closed: its staging table goes with it."""
        for attempt in range(1, MERGE_ATTEMPTS + 1):
            try:
                return self._run_tx(plan.merge, results)
            except LoadFailed as exc:
                if isinstance(exc, SerializationConflict) and attempt < MERGE_ATTEMPTS:
                    log.warning("merge conflicted with a concurrent commit (%s); merging "
                                "again from the staged rows (%d/%d)", exc, attempt,
                                MERGE_ATTEMPTS)
                    continue
                self.warehouse.close()
                raise
            except BaseException:
                self.warehouse.close()
                raise
        raise AssertionError("unreachable")

    def columns_of(self, entry: StagedFile) -> tuple[str, ...]:
        return file_columns(self.spec, entry)

    def _put_manifest(self, manifest: Manifest) -> None:
        try:
            self.s3.put_object(Bucket=manifest.bucket, Key=manifest.key, Body=manifest.to_json(),
                               ContentType="application/json")
        except Exception as exc:  # botocore errors: the load cannot go on
            raise LoadFailed(f"cannot write manifest s3://{manifest.bucket}/{manifest.key}: "
                             f"{first_line(exc)}") from None

    def _copy_failed(self, log: Any, manifest: Manifest, error: str, started: datetime) -> None:
        """A failure of the files' rows (a failed COPY, a row count mismatch, a value the
        target refuses in the merge): count it against the file the dialect's details point
        at, else the file
        the error names (or, naming none, against the only file of an isolated load) in the
        control store; quarantine a file at ``loader.quarantine_after`` failures, however
        many loader processes made them."""
        details = self._copy_error_details(log, manifest, started)
        text = " ".join([error, *details.lines])
        named = list(details.files) or [e for e in manifest.entries
                                        if manifest.object_url(e) in text]
        if not named and len(manifest.entries) == 1:
            named = list(manifest.entries)
        if not named:
            self.isolate = True
            return
        limit = self.settings.loader.quarantine_after
        reason = self.dialect.redact(text)[:4000]
        for entry in named:
            # counted in the control store: a loader restarted after each failure goes on
            # counting where the last one stopped
            n = self.store.count_copy_failure(entry.s3_key, reason)
            if n >= limit:
                self.quarantine_read_at = None  # the gauge reads the list again
                if self.store.quarantine(entry.s3_key, reason):
                    log.error("quarantined %s after %d failed COPYs: %s",
                              manifest.object_url(entry), n, reason)
                self.isolate = False

    def _copy_error_details(self, log: Any, manifest: Manifest, started: datetime) -> CopyErrors:
        """Redshift: after the rollback, this session's STL_LOAD_ERRORS rows, mapped to
        staged files."""
        try:
            with self.warehouse.tx() as cur:
                details = self.dialect.copy_error_details(cur, manifest, started)
        except Exception as exc:  # diagnostics must never hide the load error itself
            log.warning("could not read the COPY error details: %s",
                        self.dialect.redact(first_line(exc)))
            return CopyErrors()
        for line in details.lines:
            log.error("COPY error: %s", line)
        return details


class SerializationConflict(LoadFailed):
    """The transaction conflicted with a concurrent commit (PostgreSQL 40001, Redshift
    1023): the same steps on a new snapshot may well succeed."""


def serialization_failure(exc: BaseException) -> bool:
    """A conflict with a concurrent transaction that a new snapshot resolves: PostgreSQL's
    SQLSTATE 40001, Redshift's ERROR 1023 (serializable isolation violation)."""
    return getattr(exc, "pgcode", None) == "40001" or \
        "serializable isolation violation" in str(exc).lower()


def default_owner() -> str:
    import os
    import socket

    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
