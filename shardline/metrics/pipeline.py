"""The pipeline's metrics: what each process supervisord runs exports, and how it pushes them.

Plain prometheus_client objects in the default registry: in a process started with
``PROMETHEUS_MULTIPROC_DIR`` (the generated supervisord config sets it) every update goes to
that process's mmap files and the host's scrape target (``shardline.metrics.multiproc``)
merges them. Each update then costs a lock, a ``getpid()`` and an mmap write, so nothing
here runs per record: the consumer's loop counts in plain ints and ``ConsumerMetrics.push``
adds the deltas at its report interval; the stage worker updates once per job, the loader
once per step or load.

Gauges use ``livemax``: only live processes count (a dead pid's gauge file is removed by
``multiproc.sweep``), and a shard is read by one consumer per host at a time.
"""
from __future__ import annotations

import bisect
import re
from typing import Final, Iterable, Mapping, Sequence

from prometheus_client import Counter, Gauge, Histogram

from shardline.metrics.multiproc import ensure_dir

ensure_dir()  # prometheus_client opens its files in the directory at the first .labels()

SHARD = ["stream", "shard"]
TABLE = ["table"]
LIVE: Final = "livemax"  # Final: prometheus_client takes the mode as a Literal

# -- consumer (one per shard) -------------------------------------------------------------
RECORDS_READ = Counter("shardline_consumer_records_read",
                       "user records read from the shard (rate: records/s)", SHARD)
MILLIS_BEHIND = Gauge("shardline_consumer_millis_behind_latest",
                      "MillisBehindLatest of the last GetRecords", SHARD, multiprocess_mode=LIVE)
ITERATOR_AGE = Gauge("shardline_consumer_iterator_age_seconds",
                     "age of the shard iterator in use", SHARD, multiprocess_mode=LIVE)
INFLIGHT = Gauge("shardline_consumer_batches_in_flight",
                 "batches submitted to the stage workers and not yet staged", SHARD,
                 multiprocess_mode=LIVE)
CHECKPOINT_AGE = Gauge("shardline_consumer_checkpoint_age_seconds",
                       "seconds since the last checkpoint write while staged records wait "
                       "for one (0 when the checkpoint is current)", SHARD,
                       multiprocess_mode=LIVE)

# -- stage worker (per Gearman job) ---------------------------------------------------------
JOB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
JOB_SECONDS = Histogram("shardline_stage_job_seconds",
                        "stage job latency: decode, rows, S3 puts, ledger", TABLE,
                        buckets=JOB_BUCKETS)
JOBS = Counter("shardline_stage_jobs", "stage jobs by outcome (ok, failed)",
               ["table", "outcome"])
STAGED = Counter("shardline_stage_records_staged",
                 "rows written to staged objects (a retried batch is not counted again)", TABLE)
DEAD_LETTERS = Counter("shardline_stage_dead_letters", "records dead-lettered, by reason",
                       ["table", "reason"])

# -- loader (one per table; only the lease holder loads) -----------------------------------
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
LOAD_SECONDS = Histogram("shardline_loader_load_seconds",
                         "one load: manifest, COPY, merge, record, ledger update", TABLE,
                         buckets=LOAD_BUCKETS)
LOADS = Counter("shardline_loader_loads", "loads by outcome (loaded, failed)",
                ["table", "outcome"])
ROW_COUNT_MISMATCHES = Counter(
    "shardline_loader_row_count_mismatches",
    "loads refused because COPY staged another number of rows than the ledger counts", TABLE)
ROWS_LOADED = Counter("shardline_loader_rows_loaded",
                      "rows the loads inserted (queryable)", TABLE)
DUPLICATES = Counter("shardline_loader_duplicates_skipped",
                     "copied rows the merge skipped as already stored", TABLE)
PENDING_FILES = Gauge("shardline_loader_pending_files", "staged files waiting for a load",
                      TABLE, multiprocess_mode=LIVE)
PENDING_BYTES = Gauge("shardline_loader_pending_bytes", "bytes of staged files waiting",
                      TABLE, multiprocess_mode=LIVE)
OLDEST_PENDING = Gauge("shardline_loader_oldest_pending_age_seconds",
                       "age of the oldest staged file waiting", TABLE, multiprocess_mode=LIVE)
QUARANTINED = Gauge("shardline_loader_quarantined_files",
                    "files whose COPY kept failing, set aside", TABLE, multiprocess_mode=LIVE)
ACTIVE = Gauge("shardline_loader_active",
               "1 while this loader holds the table's loader lease (the pending gauges are "
               "its), 0 on standby", TABLE, multiprocess_mode=LIVE)

# -- lake loader (one per lake table; only the lease holder commits) -----------------------
LAKE_LOAD_SECONDS = Histogram("shardline_lake_loader_load_seconds",
                              "one lake load: read the files, dedup, one Iceberg commit, "
                              "ledger update", TABLE, buckets=LOAD_BUCKETS)
LAKE_LOADS = Counter("shardline_lake_loader_loads", "lake loads by outcome (loaded, failed)",
                     ["table", "outcome"])
LAKE_ROWS = Counter("shardline_lake_loader_rows_loaded",
                    "rows the lake loads committed (queryable)", TABLE)
LAKE_DUPLICATES = Counter("shardline_lake_loader_duplicates_skipped",
                          "staged rows the lake loads skipped as already stored", TABLE)
LAKE_PENDING_FILES = Gauge("shardline_lake_loader_pending_files",
                           "staged files waiting for the lake", TABLE, multiprocess_mode=LIVE)
LAKE_PENDING_BYTES = Gauge("shardline_lake_loader_pending_bytes",
                           "bytes of staged files waiting for the lake", TABLE,
                           multiprocess_mode=LIVE)
LAKE_OLDEST_PENDING = Gauge("shardline_lake_loader_oldest_pending_age_seconds",
                            "age of the oldest staged file waiting for the lake (its lag)",
                            TABLE, multiprocess_mode=LIVE)
LAKE_ACTIVE = Gauge("shardline_lake_loader_active",
                    "1 while this lake loader holds the table's lake lease, 0 on standby",
                    TABLE, multiprocess_mode=LIVE)


class _PendingGauges:
    """What a table's loader (the warehouse's or the lake's) shows of the files it waits
    on: set each step while it holds the table, zeroed on standby (another loader holds the
    table: its numbers are the ones to look at)."""

    files: Gauge
    bytes: Gauge
    oldest: Gauge
    active: Gauge
    standby_zeroes: tuple[Gauge, ...] = ()  # more gauges zeroed on standby

    def pending(self, files: int, nbytes: int, oldest_age_s: float) -> None:
        self.active.set(1)
        self.files.set(files)
        self.bytes.set(nbytes)
        self.oldest.set(max(0.0, oldest_age_s))

    def standby(self) -> None:
        self.active.set(0)
        for gauge in (self.files, self.bytes, self.oldest, *self.standby_zeroes):
            gauge.set(0)


class LakeLoaderMetrics(_PendingGauges):
    """A lake table's loader: pending gauges per step, counters per load."""

    def __init__(self, table: str):
        self.seconds = LAKE_LOAD_SECONDS.labels(table)
        self.loaded = LAKE_LOADS.labels(table, "loaded")
        self.failed = LAKE_LOADS.labels(table, "failed")
        self.rows, self.duplicates = LAKE_ROWS.labels(table), LAKE_DUPLICATES.labels(table)
        self.files, self.bytes = LAKE_PENDING_FILES.labels(table), LAKE_PENDING_BYTES.labels(table)
        self.oldest, self.active = LAKE_OLDEST_PENDING.labels(table), LAKE_ACTIVE.labels(table)

    def load_done(self, seconds: float, rows: int, duplicates: int) -> None:
        self.seconds.observe(seconds)
        self.loaded.inc()
        if rows:
            self.rows.inc(rows)
        if duplicates:
            self.duplicates.inc(duplicates)

    def load_failed(self) -> None:
        self.failed.inc()


# -- end to end -----------------------------------------------------------------------------
E2E_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0,
               180.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
E2E_SECONDS = Histogram("shardline_e2e_latency_seconds",
                        "Kinesis arrival (ApproximateArrivalTimestamp) to queryable (the "
                        "load's commit), per row", TABLE, buckets=E2E_BUCKETS)

# The fleet target (``shardline status --serve``) exports these from the control store's
# shared state; named here so the dashboard test knows them (docs/metrics.md).
FLEET_METRICS = (
    "shardline_fleet_pending_files", "shardline_fleet_pending_bytes",
    "shardline_fleet_oldest_pending_age_seconds", "shardline_fleet_quarantined_files",
    "shardline_fleet_hosts_alive", "shardline_fleet_shard_millis_behind",
    "shardline_fleet_shard_checkpoint_age_seconds", "shardline_fleet_alerts",
    "shardline_fleet_reconcile_difference_rows", "shardline_fleet_reconcile_disagreeing_hours",
)

PIPELINE_METRICS = (RECORDS_READ, MILLIS_BEHIND, ITERATOR_AGE, INFLIGHT, CHECKPOINT_AGE,
                    JOB_SECONDS, JOBS, STAGED, DEAD_LETTERS, LOAD_SECONDS, LOADS, ROWS_LOADED,
                    DUPLICATES, PENDING_FILES, PENDING_BYTES, OLDEST_PENDING, QUARANTINED,
                    ACTIVE, E2E_SECONDS)


def exported_names() -> set[str]:
    """Every sample name a scrape of a host target can show (``_total``, ``_bucket`` ...)."""
    out: set[str] = set()
    for metric in PIPELINE_METRICS:
        for family in metric.describe():
            kind = family.type
            base = family.name
            if kind == "counter":
                out |= {base + "_total"}
            elif kind == "histogram":
                out |= {base + "_bucket", base + "_sum", base + "_count"}
            else:
                out.add(base)
    return out


def observe_counts(child: Histogram, values: Iterable[tuple[float, int]]) -> None:
    """Observe each ``value`` ``count`` times with one write per touched bucket.

    Histogram has no bulk observe, and a load can stand for thousands of rows. Adds to the
    child's bucket counters directly (prometheus_client's ``_upper_bounds``/``_buckets``/
    ``_sum``, the same internals the producer's exporter uses); if those ever change, falls
    back to ``observe`` per row (tests/unit/test_metrics.py reads the export either way)."""
    bounds: Sequence[float] | None = getattr(child, "_upper_bounds", None)
    buckets = getattr(child, "_buckets", None)
    if bounds is None or buckets is None or len(bounds) != len(buckets) \
            or not hasattr(child, "_sum"):
        for value, count in values:
            for _ in range(count):
                child.observe(value)
        return
    adds = [0] * len(bounds)
    total = 0.0
    for value, count in values:
        if count > 0:
            adds[bisect.bisect_left(bounds, value)] += count
            total += value * count
    for i, n in enumerate(adds):
        if n:
            buckets[i].inc(n)
    if any(adds):
        child._sum.inc(total)


_DIGITS = re.compile(r"\d+")


def reason_label(reason: str) -> str:
    """A dead-letter reason as a label of bounded cardinality: the part before the first
    ':' (``not JSON``, ``column occurred_at``, ``transform``), numbers masked."""
    head = reason.split(":", 1)[0].strip() or "unknown"
    return _DIGITS.sub("N", head)[:60]


class ConsumerMetrics:
    """One shard's consumer: ``push`` at the report interval adds what the loop counted."""

    def __init__(self, stream: str, shard: str):
        self.read = RECORDS_READ.labels(stream, shard)
        self.behind = MILLIS_BEHIND.labels(stream, shard)
        self.iterator_age = ITERATOR_AGE.labels(stream, shard)
        self.inflight = INFLIGHT.labels(stream, shard)
        self.checkpoint_age = CHECKPOINT_AGE.labels(stream, shard)
        self.pushed_read = 0

    def push(self, *, records_read: int, millis_behind: int | None, iterator_age_s: float,
             inflight_batches: int, checkpoint_age_s: float) -> None:
        delta = records_read - self.pushed_read
        if delta > 0:
            self.read.inc(delta)
            self.pushed_read = records_read
        if millis_behind is not None:
            self.behind.set(millis_behind)
        self.iterator_age.set(iterator_age_s)
        self.inflight.set(inflight_batches)
        self.checkpoint_age.set(checkpoint_age_s)


class StageMetrics:
    """A stage worker's metrics for one target table (updated once per job)."""

    def __init__(self, table: str):
        self.table = table
        self.seconds = JOB_SECONDS.labels(table)
        self.ok, self.failed = JOBS.labels(table, "ok"), JOBS.labels(table, "failed")
        self.staged = STAGED.labels(table)

    def job(self, seconds: float, ok: bool) -> None:
        self.seconds.observe(seconds)
        (self.ok if ok else self.failed).inc()

    def recorded(self, rows: int, dead_letters: Sequence[Mapping[str, object]]) -> None:
        """A batch's first recording in the ledger (a retry is not counted again)."""
        if rows:
            self.staged.inc(rows)
        by_reason: dict[str, int] = {}
        for dl in dead_letters:
            label = reason_label(str(dl.get("reason", "")))
            by_reason[label] = by_reason.get(label, 0) + 1
        for label, n in by_reason.items():
            DEAD_LETTERS.labels(self.table, label).inc(n)


class LoaderMetrics(_PendingGauges):
    """A table's loader: pending gauges per step, counters and histograms per load."""

    def __init__(self, table: str):
        self.seconds = LOAD_SECONDS.labels(table)
        self.loaded, self.failed = LOADS.labels(table, "loaded"), LOADS.labels(table, "failed")
        self.rows, self.duplicates = ROWS_LOADED.labels(table), DUPLICATES.labels(table)
        self.files, self.bytes = PENDING_FILES.labels(table), PENDING_BYTES.labels(table)
        self.oldest, self.quarantined = OLDEST_PENDING.labels(table), QUARANTINED.labels(table)
        self.active, self.e2e = ACTIVE.labels(table), E2E_SECONDS.labels(table)
        self.mismatches = ROW_COUNT_MISMATCHES.labels(table)
        self.standby_zeroes = (self.quarantined,)

    def load_done(self, seconds: float, rows_inserted: int, rows_copied: int,
                  e2e: Iterable[tuple[float, int]]) -> None:
        self.seconds.observe(seconds)
        self.loaded.inc()
        if rows_inserted:
            self.rows.inc(rows_inserted)
        if rows_copied > rows_inserted:
            self.duplicates.inc(rows_copied - rows_inserted)
        observe_counts(self.e2e, e2e)

    def load_failed(self) -> None:
        self.failed.inc()
