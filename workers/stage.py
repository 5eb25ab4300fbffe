"""The stage job: a batch of Kinesis records in, one staged CSV object + ledger row out.

``StageJob.run(payload) -> result`` is what the Gearman task calls:

1. ``codec.decode`` the batch (a payload that does not decode fails the job);
2. per record: UTF-8 -> JSON object -> transform -> the worker's own checks of
   every column against the table spec (NOT NULL, type, UTF-8 byte length,
   no NUL) -> one CSV line (``csvformat.format_row``). Any problem makes the
   record a dead letter with a reason; a bad record never fails the batch;
3. put the dead letters (gzip'd JSON lines) and the good rows (gzip'd CSV) to
   S3 under deterministic keys, so a retried batch overwrites its objects;
4. record the staged object in ``staged_files`` (idempotent), and only then
   return ``{"s3_key", "rows", "dead_letters", "dead_letter_key"}``.

An S3 or warehouse failure raises, the Gearman job fails (WORK_FAIL) and the
consumer retries it. A batch without good rows writes no staged object; its
ledger row has row_count 0 and state ``loaded`` (``s3_key`` in the result is
still the key the object would have had: the ledger's name for the batch).
"""
from __future__ import annotations

import base64
import gzip
import importlib
import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from shardline import codec
from shardline.csvformat import format_row
from shardline.errors import ConfigError
from shardline.logs import ContextLogger, get_logger
from shardline.settings import Settings
from shardline.tables import TableSpec, table_spec
from shardline.workers.ledger import Ledger, StagedFile

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_NAIVE = datetime(1970, 1, 1)
GZIP_LEVEL = 2
BIGINT_MIN, BIGINT_MAX = -(2 ** 63), 2 ** 63 - 1
MAX_REASON = 500  # characters of an exception message kept in a dead-letter reason

# Columns the worker fills from the Kinesis record / batch; a transform gives the rest.
WORKER_COLUMNS = ("shard_id", "sequence_number", "sub_sequence_number", "arrival_time",
                  "staged_at")

Transform = Callable[[dict], dict]


# -- keys ---------------------------------------------------------------------
def _range(batch: codec.Batch) -> str:
    f, l = batch.first, batch.last
    return f"{f.sequence_number}-{f.sub_sequence_number}_{l.sequence_number}-{l.sub_sequence_number}"


def _join(prefix: str, *parts: str) -> str:
    prefix = prefix.strip("/")
    return "/".join(([prefix] if prefix else []) + list(parts))


def staged_key(prefix: str, table: str, batch: codec.Batch) -> str:
    """``{prefix}/staged/{table}/{stream}/{shard_id}/{first}_{last}.csv.gz`` (the contract)."""
    return _join(prefix, "staged", table, batch.stream, batch.shard_id, _range(batch) + ".csv.gz")


def dead_letter_key(prefix: str, batch: codec.Batch) -> str:
    """``{prefix}/dead-letter/{stream}/{shard_id}/{first}_{last}.jsonl.gz`` (the contract)."""
    return _join(prefix, "dead-letter", batch.stream, batch.shard_id,
                 _range(batch) + ".jsonl.gz")


# -- the pluggable transform ---------------------------------------------------
def load_transform(path: str) -> Transform:
    """``package.module:function`` -> the callable; ConfigError naming worker.transform if not."""
    module_name, sep, func_name = path.partition(":")
    if not sep or not module_name or not func_name:
        raise ConfigError(f"worker.transform {path!r} must look like package.module:function")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module raising at import
        raise ConfigError(f"worker.transform {path!r}: cannot import {module_name}: "
                          f"{type(exc).__name__}: {exc}") from None
    func = getattr(module, func_name, None)
    if func is None:
        raise ConfigError(f"worker.transform {path!r}: module {module_name} has no "
                          f"attribute {func_name}")
    if not callable(func):
        raise ConfigError(f"worker.transform {path!r}: {func_name} is a "
                          f"{type(func).__name__}, not a callable")
    return func


# -- the per-record path ---------------------------------------------------------
class _Reject(Exception):
    """Internal: this record is a dead letter with ``reason``."""

    def __init__(self, reason: str):
        self.reason = reason


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def check_value(name: str, kind: str, max_bytes: int | None, nullable: bool, value: Any) -> Any:
    """One column value against the spec -> the value to write (timestamps as UTC text).

    Raises ``_Reject`` with a reason naming the column.
    """
    if value is None:
        if nullable:
            return None
        raise _Reject(f"column {name}: missing (NOT NULL)")
    if kind == "text":
        if type(value) is not str:
            raise _Reject(f"column {name}: expected text, got {_type_name(value)}")
        if value.isascii():
            size = len(value)
        else:
            try:
                size = len(value.encode("utf-8"))
            except UnicodeEncodeError:
                raise _Reject(f"column {name}: not encodable as UTF-8 "
                              "(lone surrogate escape)") from None
        if max_bytes is not None and size > max_bytes:
            raise _Reject(f"column {name}: {size} UTF-8 bytes, over the limit of {max_bytes}")
        if "\x00" in value:
            raise _Reject(f"column {name}: contains a NUL character")
        return value
    if kind == "timestamp":
        if not isinstance(value, datetime):
            raise _Reject(f"column {name}: expected a datetime, got {_type_name(value)}")
        if value.tzinfo is UTC:  # the common case: isoformat ends "+00:00"
            return value.isoformat(" ", "microseconds")[:-6]
        offset = value.utcoffset()
        if offset is None:
            raise _Reject(f"column {name}: naive datetime (a time zone is required)")
        try:
            naive = value.replace(tzinfo=None) - offset if offset else value.replace(tzinfo=None)
        except OverflowError:
            raise _Reject(f"column {name}: out of range in UTC") from None
        return naive.isoformat(" ", "microseconds")
    if kind == "int":
        if type(value) is not int:
            raise _Reject(f"column {name}: expected an integer, got {_type_name(value)}")
        if not BIGINT_MIN <= value <= BIGINT_MAX:
            raise _Reject(f"column {name}: {value} is out of the BIGINT range")
        return value
    raise _Reject(f"column {name}: unknown column kind {kind!r}")  # pragma: no cover


@dataclass
class StagedBatch:
    """What one batch turned into, before anything is written anywhere."""

    csv_text: str
    rows: int
    dead_letters: list[dict] = field(default_factory=list)


class RowBuilder:
    """Records -> CSV lines + dead letters for one table spec and transform.

    The per-record path is kept lean: one ``json.loads``, the transform, then
    per column a type test, a length test and a NUL test. The exact UTF-8 work
    (byte lengths of non-ASCII text, lone surrogates) runs only for the rare row
    whose CSV line is not pure ASCII. Worker columns are built valid by
    construction (timestamps from integers) and checked once per batch where
    they do not change (shard_id, staged_at).
    """

    def __init__(self, spec: TableSpec, transform: Transform):
        self.spec = spec
        self.transform = transform
        self.columns = [(c.name, c.kind, c.max_bytes, c.nullable) for c in spec.columns]
        self.event_plan = [col for col in self.columns if col[0] not in WORKER_COLUMNS]
        self.event_columns = frozenset(col[0] for col in self.event_plan)
        # hot-loop form: (name, is_text, char limit that needs a closer look, column)
        self._fast_plan = [(name, kind == "text", max_bytes if max_bytes is not None else 1 << 62,
                            (name, kind, max_bytes, nullable))
                           for name, kind, max_bytes, nullable in self.event_plan]
        missing = [n for n in WORKER_COLUMNS if n not in spec.column_names]
        if missing:
            raise ConfigError(f"table {spec.name} lacks the worker columns {', '.join(missing)}")
        # Row = event values (spec order) + worker values (WORKER_COLUMNS order), then
        # permuted into spec order when the spec does not already put them so.
        layout = [col[0] for col in self.event_plan] + list(WORKER_COLUMNS)
        order = [layout.index(name) for name in spec.column_names]
        self.permutation = None if order == list(range(len(order))) else order
        self._col = {col[0]: col for col in self.columns}

    def _worker_value(self, name: str, value: Any) -> Any:
        n, kind, max_bytes, nullable = self._col[name]
        return check_value(n, kind, max_bytes, nullable, value)

    def build(self, batch: codec.Batch, staged_at: datetime) -> StagedBatch:
        transform = self.transform
        fast_plan = self._fast_plan
        event_columns = self.event_columns
        permutation = self.permutation
        seq_col = self._col["sequence_number"]
        sub_col = self._col["sub_sequence_number"]
        loads = json.loads
        lines: list[str] = []
        dead: list[dict] = []
        seconds: dict[int, str] = {}
        shard_id = batch.shard_id
        batch_problem = None
        try:  # once per batch: the same for every record
            shard_value = self._worker_value("shard_id", shard_id)
            staged_value = self._worker_value("staged_at", staged_at)
        except _Reject as rej:
            batch_problem = rej.reason
        for rec in batch.records:
            arrival_ms = rec.arrival_ms
            try:
                if batch_problem:
                    raise _Reject(batch_problem)
                try:
                    text = rec.data.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise _Reject(f"invalid UTF-8: {exc.reason} at byte {exc.start}") from None
                try:
                    event = loads(text)
                except (ValueError, RecursionError) as exc:
                    raise _Reject(f"not JSON: {str(exc)[:MAX_REASON]}") from None
                if type(event) is not dict:
                    raise _Reject(f"not a JSON object: got {_json_type(event)}")
                try:
                    out = transform(event)
                except Exception as exc:
                    raise _Reject(f"transform: {type(exc).__name__}: {str(exc)[:MAX_REASON]}") \
                        from None
                if type(out) is not dict:
                    raise _Reject(f"transform: returned {_type_name(out)}, not a dict")
                if not event_columns.issuperset(out):
                    extra = sorted(set(out) - event_columns)
                    raise _Reject(f"transform: returned unknown column(s) {', '.join(extra)}")
                get = out.get
                values = []
                for name, is_text, limit, col in fast_plan:
                    value = get(name)
                    if is_text and type(value) is str:
                        # chars > limit implies bytes > limit; the exact byte count of
                        # non-ASCII text is checked below, only for non-ASCII rows
                        if len(value) > limit:
                            check_value(*col, value)  # raises
                        if "\x00" in value:
                            raise _Reject(f"column {name}: contains a NUL character")
                        values.append(value)
                    else:
                        values.append(check_value(*col, value))
                seq_no = rec.sequence_number
                if len(seq_no) > seq_col[2] or not seq_no.isascii():
                    check_value(*seq_col, seq_no)
                sub = rec.sub_sequence_number
                if not 0 <= sub <= BIGINT_MAX:
                    check_value(*sub_col, sub)
                secs, millis = divmod(arrival_ms, 1000)
                second = seconds.get(secs)
                if second is None:  # records of a batch arrive within a few seconds
                    try:
                        second = (EPOCH_NAIVE + timedelta(seconds=secs)).isoformat(" ")
                    except OverflowError:
                        raise _Reject(f"arrival time {arrival_ms} ms is out of range") from None
                    seconds[secs] = second
                values += (shard_value, seq_no, sub, f"{second}.{millis:03d}000", staged_value)
                if permutation is not None:
                    values = [values[i] for i in permutation]
                line = format_row(values)
                if not line.isascii():
                    self._check_utf8(values)
                lines.append(line)
            except _Reject as rej:
                dead.append(dead_letter(rec, shard_id, rej.reason))
        return StagedBatch("".join(lines), len(lines), dead)

    def _check_utf8(self, values: list) -> None:
        """Exact UTF-8 byte lengths and encodability of a non-ASCII row (raises _Reject)."""
        for (name, kind, max_bytes, nullable), value in zip(self.columns, values):
            if type(value) is str and not value.isascii():
                check_value(name, "text", max_bytes, nullable, value)


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {list: "array", str: "string", type(None): "null"}.get(type(value), type(value).__name__)


def _arrival_text(arrival_ms: int) -> str:
    try:
        return (EPOCH + timedelta(milliseconds=arrival_ms)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except OverflowError:
        return str(arrival_ms)


def dead_letter(rec: codec.Record, shard_id: str, reason: str) -> dict:
    return {
        "data_b64": base64.b64encode(rec.data).decode("ascii"),
        "shard_id": shard_id,
        "sequence_number": rec.sequence_number,
        "sub_sequence_number": rec.sub_sequence_number,
        "partition_key": rec.partition_key,
        "arrival_time": _arrival_text(rec.arrival_ms),
        "reason": reason,
    }


def dead_letter_lines(dead: list[dict]) -> str:
    return "".join(json.dumps(d, separators=(",", ":")) + "\n" for d in dead)


def gzip_bytes(text: str) -> bytes:
    """Deterministic gzip (mtime 0): the same text always gives the same object."""
    return gzip.compress(text.encode("utf-8"), compresslevel=GZIP_LEVEL, mtime=0)


# -- the job ------------------------------------------------------------------------
class StageJob:
    """The stage task: payload bytes -> JSON result bytes. One instance per worker process."""

    def __init__(self, settings: Settings, *, s3: Any = None, ledger: Ledger | None = None,
                 transform: Transform | None = None, clock: Callable[[], float] = time.time,
                 log: ContextLogger | None = None):
        from shardline import clients

        self.settings = settings
        self.spec = table_spec(settings.worker.target_table)
        self.builder = RowBuilder(self.spec, transform or load_transform(settings.worker.transform))
        self.bucket = settings.s3.bucket
        self.prefix = settings.s3.prefix
        self.s3 = s3 if s3 is not None else clients.s3_client(settings)
        self.ledger = ledger if ledger is not None else Ledger(
            lambda: clients.warehouse_connect(settings))
        self.clock = clock
        self.log = log or get_logger("stage")

    def close(self) -> None:
        self.ledger.close()

    def run(self, payload: bytes, job_log: ContextLogger | None = None) -> bytes:
        """The Gearman task body; ``job_log`` carries the runner's context (worker, job)."""
        batch = codec.decode(payload)
        if job_log is not None and batch.records:
            # the runner's own lines for this job (e.g. "job failed") then name the batch too
            job_log.extra["batch"] = f"{batch.stream}/{batch.batch_id}"
        log = self.log.bind(**job_log.extra) if job_log is not None else self.log
        result = self.stage(batch, log)
        return json.dumps(result).encode("utf-8")

    def stage(self, batch: codec.Batch, log: ContextLogger | None = None) -> dict:
        if not batch.records:
            raise codec.CodecError("empty batch: nothing to stage")
        log = log or self.log
        if "batch" not in log.extra:
            log = log.bind(batch=f"{batch.stream}/{batch.batch_id}")
        started = time.perf_counter()
        now = datetime.fromtimestamp(self.clock(), UTC)
        staged = self.builder.build(batch, now)
        key = staged_key(self.prefix, self.spec.name, batch)
        dl_key = None
        if staged.dead_letters:
            dl_key = dead_letter_key(self.prefix, batch)
            self._put(dl_key, gzip_bytes(dead_letter_lines(staged.dead_letters)),
                      "application/x-ndjson")
        size = 0
        if staged.rows:
            body = gzip_bytes(staged.csv_text)
            size = len(body)
            self._put(key, body, "text/csv")
        f, l = batch.first, batch.last
        inserted = self.ledger.record(StagedFile(
            s3_key=key, target_table=self.spec.name, stream=batch.stream,
            shard_id=batch.shard_id, first_sequence=f.sequence_number,
            first_sub_sequence=f.sub_sequence_number, last_sequence=l.sequence_number,
            last_sub_sequence=l.sub_sequence_number, row_count=staged.rows, byte_count=size,
            dead_letter_key=dl_key, dead_letter_count=len(staged.dead_letters),
            staged_at=now.replace(tzinfo=None)))
        log.info("staged %d rows (%d bytes gz), %d dead letters in %.1f ms%s",
                 staged.rows, size, len(staged.dead_letters),
                 (time.perf_counter() - started) * 1000,
                 "" if inserted else "; ledger row already present (retry)")
        return {"s3_key": key, "rows": staged.rows, "dead_letters": len(staged.dead_letters),
                "dead_letter_key": dl_key}

    def _put(self, key: str, body: bytes, content_type: str) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)
