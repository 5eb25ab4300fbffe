"""The stage job: a batch of Kinesis records in, a staged CSV object + ledger row per table out.

``StageJob.run(payload)`` is what the Gearman task calls:

1. ``codec.decode`` the batch (a payload that does not decode fails the job);
2. records -> each routed to its table (the tables file: ``route`` on a field of the
   event), that table's transform and column checks -> CSV rows + dead letters
   (``shardline.workers.rows``: a bad record, or one no route takes, is a dead letter with
   a reason and never fails the batch);
3. put the dead letters (gzip'd JSON lines) and each table's good rows (gzip'd CSV) to S3
   under deterministic keys (``shardline.layout``, the table in the key), so a retried
   batch overwrites its objects;
4. record each staged object in the control store's ledger (idempotent) with its table and
   its column list (the loader's COPY names those columns, so files staged before an
   ``ADD COLUMN`` still load), the first table's entry last, and only then return (an
   empty result: completing the job is the success signal).

A batch whose ledger entry is already there (a job retry, or a ``replay`` re-reading the
same boundaries) writes nothing: the entry and its object stay what the loader loads or
loaded, so a replay never changes stored rows, whatever transform runs now. The raw batch
(the job payload, gzip'd) is archived under ``layout.archive_key`` before the ledger entry
(``s3.archive``): a retry overwrites it with the same bytes. A reprocess job
(``codec.decode_job``: the run's generation) stages under keys of its own, is never
archived again, and its entry is pending even without good rows (see ``ledger``). Every
entry names the transform version that made it (``transform.transform_version``).

An S3 or control-store failure raises, the Gearman job fails (WORK_FAIL) and the
consumer retries it. A batch without good rows for the file's first table writes no staged
object for it; that table's ledger row has row_count 0 and state ``loaded`` (its ``s3_key``
is still the key the object would have had: the ledger's name for the batch) and carries
the batch's dead letters. Other tables get an entry only when they have rows.
"""
from __future__ import annotations

import gzip
import time
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, cast

from shardline import codec, csvformat, layout
from shardline.logs import ContextLogger, get_logger
from shardline.metrics.pipeline import StageMetrics
from shardline.settings import Settings
from shardline.tables import Tables, copy_row_check, load_tables
from shardline.controlstore import ControlStore, open_store
from shardline.lake.config import lake_tables
from shardline.records.ledger import PENDING, REPROCESS_PREFIX, StagedFile, arrival_sample, \
    format_hour_counts
from shardline.transforms import Event, Row
from shardline.workers.rows import RowBuilder, dead_letter_lines
from shardline.workers.transform import Transform, load_table_transforms, transform_version

UTC = timezone.utc
GZIP_LEVEL = 2


def gzip_bytes(text: str) -> bytes:
    """Deterministic gzip (mtime 0): the same text always gives the same object."""
    return gzip.compress(text.encode("utf-8"), compresslevel=GZIP_LEVEL, mtime=0)


def refuse_null_marker(transform: Transform) -> Transform:
    """Redshift's ``NULL AS`` matches the marker whether or not the field is quoted, so a text
    value equal to it (``\\N``) would load as NULL (and fail a NOT NULL column, stopping its
    file). On Redshift such a record is a dead letter with that reason instead; PostgreSQL
    keeps a quoted ``"\\N"`` as text, so the local stand-ins load it unchanged."""
    def guarded(event: Event) -> Row:
        row = transform(event)
        if isinstance(row, dict):
            for name, value in row.items():
                if value == csvformat.NULL:
                    raise ValueError(f"column {name}: the value equals the COPY NULL marker "
                                     f"{csvformat.NULL!r}, which Redshift would load as NULL")
        return row
    return guarded


def refuse_copy_rejects(transform: Transform,
                        check: Callable[[Mapping[str, object]], str | None] | None) -> Transform:
    """A row Redshift's COPY would refuse (``tables.copy_row_check``) is a dead letter with
    the reason, on every warehouse: with MAXERROR 0 it would fail its whole file."""
    if check is None:
        return transform

    def guarded(event: Event) -> Row:
        row = transform(event)
        if isinstance(row, dict):
            reason = check(row)
            if reason is not None:
                raise ValueError(reason)
        return row
    return guarded


class StageJob:
    """The stage task: payload bytes -> staged objects + ledger row. One instance per worker
    process."""

    def __init__(self, settings: Settings, *, s3: Any = None, ledger: ControlStore | None = None,
                 transform: Transform | None = None, clock: Callable[[], float] = time.time,
                 log: ContextLogger | None = None, tables: Tables | None = None):
        from shardline import clients

        self.settings = settings
        # ConfigError (exit CONFIG) for a bad tables file or a transform that does not import
        self.tables = tables or load_tables(settings)
        transforms = load_table_transforms(self.tables, settings) if transform is None else \
            {**load_table_transforms(self.tables), self.tables.tables[0].name: transform}
        # which transform made each table's rows: recorded in its ledger entries and rows
        self.versions = {name: transform_version(t) for name, t in transforms.items()}
        self.archive = settings.s3.archive
        if settings.warehouse.dialect == "redshift":
            transforms = {name: refuse_null_marker(t) for name, t in transforms.items()}
        transforms = {name: refuse_copy_rejects(t, copy_row_check(self.tables[name]))
                      for name, t in transforms.items()}
        # The first table of the file is the batch's own: its ledger entry is always written
        # (0 rows: born loaded), last, and carries the batch's dead letters.
        self.spec = self.tables.tables[0]
        self.transform_version = self.versions[self.spec.name]
        self.builder = RowBuilder.routed(self.tables, transforms)
        self.bucket = settings.s3.bucket
        self.prefix = settings.s3.prefix
        self.s3 = s3 if s3 is not None else clients.s3_client(settings)
        # the ledger is the control store's (``record_file``), never the warehouse
        self.ledger = ledger if ledger is not None else open_store(settings)
        self.clock = clock
        self.log = log or get_logger("stage")
        self.metrics = {spec.name: StageMetrics(spec.name) for spec in self.tables.tables}
        self.job_metrics = self.metrics[self.spec.name]
        self.lake = frozenset(lake_tables(settings, self.tables))  # ConfigError: unknown
        self.column_lists = {spec.name: ",".join(spec.column_names)
                             for spec in self.tables.tables}

    def close(self) -> None:
        self.ledger.close()

    def run(self, payload: bytes, job_log: ContextLogger | None = None) -> bytes:
        """The Gearman task body; ``job_log`` carries the runner's context (worker, job).

        Returns ``b""``: the job completing is the whole answer (nobody reads a result);
        failing is raising (WORK_FAIL)."""
        started = time.perf_counter()
        try:
            generation, batch = codec.decode_job(payload)
            # a job's logger always carries a dict (the runner's bind), the task may add to it
            extra = cast("dict[str, object]", job_log.extra) if job_log is not None else {}
            if job_log is not None and batch.records:
                # the runner's own lines for this job (e.g. "job failed") name the batch too
                extra["batch"] = f"{batch.stream}/{batch.batch_id}"
                if generation:
                    extra["reprocess"] = generation
            log = self.log.bind(**extra) if job_log is not None else self.log
            self.stage(batch, log, generation=generation,
                       raw=payload if generation is None else None)
        except Exception:
            self.job_metrics.job(time.perf_counter() - started, ok=False)
            raise
        self.job_metrics.job(time.perf_counter() - started, ok=True)
        return b""

    def stage(self, batch: codec.Batch, log: ContextLogger | None = None, *,
              generation: str | None = None, raw: bytes | None = None) -> None:
        """Stage one batch; ``generation``: of a reprocess run; ``raw``: its payload, for
        the archive (None: encode it when archiving a normal batch)."""
        if not batch.records:
            raise codec.CodecError("empty batch: nothing to stage")
        log = log or self.log
        if "batch" not in (log.extra or ()):
            log = log.bind(batch=f"{batch.stream}/{batch.batch_id}")
        started = time.perf_counter()
        own = self.spec.name
        if self.ledger.get_file(layout.staged_key(self.prefix, own, batch, generation)) \
                is not None:
            # a retry, or a replay of the same records (the batch's own entry is written
            # last): the objects stay those its entries describe, whatever transform or
            # tables file runs now (`shardline reprocess` applies a new transform)
            log.info("ledger entry already present (a retry, or a replay of the same "
                     "records): nothing rewritten; `shardline reprocess` applies a new "
                     "transform")
            return
        now = datetime.fromtimestamp(self.clock(), UTC)
        routed = self.builder.build_tables(batch, now)
        if self.archive and generation is None:
            self._put(layout.archive_key(self.prefix, batch),
                      gzip.compress(raw if raw is not None else codec.encode(batch),
                                    compresslevel=GZIP_LEVEL, mtime=0),
                      "application/octet-stream")
        dead = routed.dead_letters
        dl_key = None
        if dead:
            dl_key = layout.dead_letter_key(self.prefix, batch, generation)
            self._put(dl_key, gzip_bytes(dead_letter_lines(dead)), "application/x-ndjson")
        # one staged file and ledger entry per table with rows; the batch's own table last,
        # always: its entry present means the batch's other entries are too. A reprocess
        # job writes an entry for every table (pending even without rows): each table's
        # stored rows of the range are replaced by what the current transforms make.
        order = [t for t in self.tables.names if t != own and
                 (generation or t in routed.tables)] + [own]
        first, last = batch.first, batch.last
        arrival_min = min(r.arrival_ms for r in batch.records)
        arrival_max = max(r.arrival_ms for r in batch.records)
        parts = []
        replaces = bool(generation and generation.startswith(REPROCESS_PREFIX))
        for table in order:
            staged = routed.tables.get(table)
            rows = staged.rows if staged is not None else 0
            key = layout.staged_key(self.prefix, table, batch, generation)
            size = 0
            mine = table == own
            if not mine and self.ledger.get_file(key) is not None:
                parts.append(f"{table}'s entry already present (retry)")
                continue  # an earlier try got this far: its file stands
            if staged is not None and rows:
                body = gzip_bytes(staged.csv_text)
                size = len(body)
                self._put(key, body, "text/csv")
            inserted = self.ledger.record_file(StagedFile(
                s3_key=key, target_table=table, stream=batch.stream,
                shard_id=batch.shard_id, first_sequence=first.sequence_number,
                first_sub_sequence=first.sub_sequence_number,
                last_sequence=last.sequence_number,
                last_sub_sequence=last.sub_sequence_number, row_count=rows, byte_count=size,
                dead_letter_key=dl_key if mine else None,
                dead_letter_count=len(dead) if mine else 0,
                staged_at=now.replace(tzinfo=None),
                arrival_sample=arrival_sample(r.arrival_ms for r in batch.records),
                column_list=self.column_lists[table],
                hour_counts=format_hour_counts(staged.hour_counts) if staged else None,
                transform_version=self.versions[table], generation=generation,
                arrival_min_ms=arrival_min, arrival_max_ms=arrival_max,
                lake_state=PENDING if table in self.lake and (rows or replaces) else None))
            if inserted:
                self.metrics[table].recorded(rows, dead if mine else ())
            again = "" if inserted else ", ledger row already present (concurrent retry)"
            parts.append(f"{rows} rows to {table} ({size} bytes gz, transform "
                         f"{self.versions[table]}{again})")
        log.info("staged %s, %d dead letters in %.1f ms%s", ", ".join(parts), len(dead),
                 (time.perf_counter() - started) * 1000,
                 f" (reprocess {generation})" if generation else "")

    def _put(self, key: str, body: bytes, content_type: str) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)
