"""The loader: COPY staged files into the warehouse, each record exactly once.

Why a loop process and not a Gearman function: a load is not a unit of work
somebody hands out; it is "whatever is pending for this table, now". One loop per
table reads the ledger itself, so there is no job to lose, retry or coalesce,
and nothing is in flight outside the warehouse transaction. The warehouse lock
taken in every load serialises loads of a table anyway, so Gearman fan-out would
buy no parallelism; a second loader (e.g. a standby) is safe, it just waits for
the lock and then finds nothing (or only newer files) pending.

One ``step()``:

1. ask the ledger what is pending for the table (count, bytes, oldest ``staged_at``)
   and let the pure ``LoadTrigger`` decide: load when ``>= loader.min_bytes`` or
   ``>= loader.min_files`` are pending, or the oldest has waited
   ``>= loader.max_interval_s``;
2. in ONE transaction: lock the target table (``LOCK TABLE ... IN SHARE ROW
   EXCLUSIVE MODE`` / Redshift ``LOCK``), re-read the pending entries inside the
   lock (oldest first, at most ``loader.max_files_per_load``), write the COPY
   manifest to S3, then run the dialect's plan (``shardline.workers.warehouse``): staging
   table, COPY, dedup merge, ledger ``loaded``, ``loads`` row, watermarks; commit.

A crash anywhere before the commit rolls everything back: the files stay
``pending`` and the next load picks them up (a manifest object may be left
behind; it is never read again). A failed load (bad data, S3 or warehouse
trouble) is logged with its reason and retried with exponential backoff; the
loop never dies on a retriable error and never retries silently.
"""
from __future__ import annotations

import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Sequence

from shardline import clients
from shardline.control import Control, utc
from shardline.errors import LoadFailed, RetriableError
from shardline.layout import manifest_key
from shardline.lifecycle import StopSignals, first_line
from shardline.logs import get_logger
from shardline.settings import LoaderSettings, Settings
from shardline.tables import table_spec
from shardline.workers.ledger import PENDING, PENDING_FILES_SQL, PENDING_STATS_SQL, StagedFile
from shardline.workers.warehouse import make_dialect
from shardline.workers.warehouse.base import Dialect
from shardline.workers.warehouse.plan import Manifest, build_plan

MAX_BACKOFF_S = 60.0
_IDENT = re.compile(r"[^a-z0-9]")


# -- the trigger (pure) -------------------------------------------------------------

@dataclass(frozen=True)
class PendingStats:
    files: int
    bytes: int
    oldest: datetime | None  # naive UTC staged_at of the oldest pending file


@dataclass(frozen=True)
class LoadTrigger:
    """When is a load due? No I/O, no clock of its own: the caller passes ``now``."""

    min_bytes: int
    min_files: int
    max_interval_s: float

    @classmethod
    def from_settings(cls, loader: LoaderSettings) -> "LoadTrigger":
        return cls(loader.min_bytes, loader.min_files, loader.max_interval_s)

    def reason(self, stats: PendingStats, now: datetime) -> str | None:
        """Why a load is due (for the log), or None when it is not."""
        if stats.files <= 0:
            return None
        if stats.bytes >= self.min_bytes:
            return f"{stats.bytes} bytes pending >= min_bytes {self.min_bytes}"
        if stats.files >= self.min_files:
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
    watermarks: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)  # plan step -> seconds


@dataclass(frozen=True)
class StepResult:
    state: str  # idle | not_due | loaded | nothing | failed | backoff
    wait_s: float
    load: LoadResult | None = None
    error: BaseException | None = None


def new_load_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%S}Z-{uuid.uuid4().hex[:12]}"


# -- the loop ----------------------------------------------------------------------

class Loader:
    """One table's loader; ``step()`` is one look at the ledger (and maybe one load)."""

    def __init__(self, settings: Settings, table: str = "page_views", *,
                 dialect: Dialect | None = None, s3: Any = None,
                 connect: Callable[[], Any] | None = None,
                 clock: Callable[[], float] = time.time,
                 load_id_factory: Callable[[datetime], str] = new_load_id):
        self.settings = settings
        self.spec = table_spec(table)
        self.table = self.spec.name
        self.s3 = s3 if s3 is not None else clients.s3_client(settings)
        self.dialect = dialect if dialect is not None else make_dialect(settings, self.s3)
        self.clock = clock
        self.control = Control(connect or (lambda: clients.warehouse_connect(settings)),
                               self.dialect.name, clock)
        self.trigger = LoadTrigger.from_settings(settings.loader)
        self.load_id_factory = load_id_factory
        self.failures = 0
        self.retry_at = 0.0
        self.last_load_id: str | None = None
        self.log = get_logger("loader", table=self.table, load_id="-")

    # -- one iteration -----------------------------------------------------------
    def step(self) -> StepResult:
        """Look at the ledger; load if the trigger fires. Retriable failures are logged
        and turned into a backoff (the next steps return ``backoff`` until it passes);
        anything else is a bug and propagates."""
        poll = self.settings.loader.poll_s
        now = self.clock()
        self.last_load_id = None
        if now < self.retry_at:
            return StepResult("backoff", self.retry_at - now)
        try:
            stats = self.pending_stats()
            reason = self.trigger.reason(stats, utc(now))
            if reason is None:
                return StepResult("idle" if stats.files == 0 else "not_due", poll)
            result = self.load(reason)
        except (LoadFailed, RetriableError) as exc:
            self.failures += 1
            delay = min(MAX_BACKOFF_S, max(poll, 1.0) * 2 ** (self.failures - 1))
            self.retry_at = self.clock() + delay
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

    def run(self, stop: threading.Event | StopSignals) -> None:
        """Loop until ``stop`` is set; a load in progress always finishes first."""
        lc = self.settings.loader
        self.log.info("loader started: dialect=%s trigger: >= %d bytes or >= %d files or "
                      "oldest >= %gs; <= %d files per load; poll %gs", self.dialect.name,
                      lc.min_bytes, lc.min_files, lc.max_interval_s, lc.max_files_per_load,
                      lc.poll_s)
        try:
            while not stop.is_set():
                result = self.step()
                if result.wait_s > 0:
                    stop.wait(result.wait_s)
        finally:
            self.close()
            self.log.info("loader stopped")

    def close(self) -> None:
        self.control.close()

    # -- ledger reads --------------------------------------------------------------
    def pending_stats(self) -> PendingStats:
        with self.control.tx() as cur:
            cur.execute(PENDING_STATS_SQL, (self.table, PENDING))
            files, size, oldest = cur.fetchone()
        return PendingStats(int(files or 0), int(size or 0), oldest)

    def _pending_entries(self, cur: Any) -> list[StagedFile]:
        cur.execute(PENDING_FILES_SQL,
                    (self.table, PENDING, self.settings.loader.max_files_per_load))
        return [StagedFile.pending(self.table, row) for row in cur.fetchall()]

    # -- one load --------------------------------------------------------------------
    def load(self, reason: str = "requested") -> LoadResult | None:
        """One load transaction; None when, inside the lock, nothing is due any more
        (another loader took the files). Raises ``LoadFailed`` / ``ServiceUnavailable``."""
        import psycopg2

        t0 = time.monotonic()
        started = utc(self.clock())
        load_id = self.load_id_factory(started)
        self.last_load_id = load_id
        log = self.log.bind(load_id=load_id)
        stage_table = f"stage_{self.table[:24]}_{_IDENT.sub('_', load_id.lower())[:32]}"
        cap = self.settings.loader.max_files_per_load
        copy_failed = False
        try:
            with self.control.tx() as cur:
                try:
                    self.control.lock(cur, self.table)
                    entries = self._pending_entries(cur)
                    if not entries or (len(entries) < cap and
                                       not self.trigger.due(stats_of(entries), started)):
                        log.info("nothing due any more inside the lock (%d pending); "
                                 "another loader got there first", len(entries))
                        return None
                    manifest = Manifest(
                        self.settings.s3.bucket,
                        manifest_key(self.settings.s3.prefix, self.table, load_id),
                        tuple(e for e in entries if e.row_count > 0))
                    log.info("loading %d files (%d bytes) because %s", len(entries),
                             sum(e.byte_count for e in entries), reason)
                    if manifest.entries:
                        self._put_manifest(manifest)
                    plan = build_plan(self.spec, load_id=load_id, stage_table=stage_table,
                                      manifest=manifest, entries=entries, started_at=started,
                                      finished_at=lambda: utc(self.clock()))
                    outcome = self.dialect.run(cur, plan)
                except LoadFailed as exc:
                    copy_failed = getattr(exc, "step", None) == "copy"
                    raise
                except (psycopg2.OperationalError, psycopg2.InterfaceError):
                    raise
                except psycopg2.Error as exc:
                    raise LoadFailed(self.dialect.redact(
                        f"{type(exc).__name__}: {first_line(exc)}")) from None
        except LoadFailed:
            if copy_failed:
                self._log_copy_errors(log)
            raise
        seconds = time.monotonic() - t0
        result = LoadResult(load_id, self.table, manifest.key, len(entries),
                            sum(e.byte_count for e in entries), outcome.rows_copied,
                            outcome.rows_inserted, seconds, len(entries) >= cap,
                            outcome.watermarks, outcome.timings)
        log.info("loaded %d files, %d rows copied, %d inserted, %d duplicates skipped, "
                 "in %.2fs (%.0f rows/s; %s); watermarks moved: %s", result.files,
                 result.rows_copied, result.rows_inserted,
                 result.rows_copied - result.rows_inserted, seconds,
                 result.rows_copied / seconds if seconds > 0 else 0.0,
                 " ".join(f"{k}={v:.2f}s" for k, v in outcome.timings.items() if v >= 0.01)
                 or "steps < 0.01s",
                 ", ".join(f"{shard}={seq}/{sub}" for (_, shard), (seq, sub)
                           in sorted(outcome.watermarks.items())) or "none")
        return result

    def _put_manifest(self, manifest: Manifest) -> None:
        try:
            self.s3.put_object(Bucket=manifest.bucket, Key=manifest.key, Body=manifest.to_json(),
                               ContentType="application/json")
        except Exception as exc:  # botocore errors: the load cannot go on
            raise LoadFailed(f"cannot write manifest s3://{manifest.bucket}/{manifest.key}: "
                             f"{first_line(exc)}") from None

    def _log_copy_errors(self, log: Any) -> None:
        """Redshift: after the rollback, STL_LOAD_ERRORS by pg_last_copy_id() (same session)."""
        try:
            with self.control.tx() as cur:
                details = self.dialect.copy_error_details(cur)
        except Exception as exc:  # diagnostics must never hide the load error itself
            log.warning("could not read the COPY error details: %s",
                        self.dialect.redact(first_line(exc)))
            return
        for line in details:
            log.error("COPY error: %s", line)
