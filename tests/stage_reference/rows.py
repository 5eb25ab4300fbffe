# Reference copy of workers/rows.py at d89c0d2 (see __init__.py); do not edit.
"""Kinesis records -> CSV lines of the target table + dead letters: the stage job's per-record path.

Per record: UTF-8 -> JSON object -> transform -> the worker's own checks of every
column against the table spec (NOT NULL, type, UTF-8 byte length, no NUL) -> one CSV
line (``csvformat.format_row``). Any problem makes the record a dead letter with a
reason (``dead_letter``); a bad record never fails the batch. Nothing here does I/O.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from tests.stage_reference import codec
from tests.stage_reference.csvformat import format_row
from shardline.errors import ConfigError
from shardline.tables import TableSpec
from tests.stage_reference.transform import Transform

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_NAIVE = datetime(1970, 1, 1)
BIGINT_MIN, BIGINT_MAX = -(2 ** 63), 2 ** 63 - 1
MAX_REASON = 500  # characters of an exception message kept in a dead-letter reason

# Columns the worker fills from the Kinesis record / batch; a transform gives the rest.
WORKER_COLUMNS = ("shard_id", "sequence_number", "sub_sequence_number", "arrival_time",
                  "staged_at")


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
        # A row is the event values (spec order) + the worker values (WORKER_COLUMNS
        # order): every table ends with the worker columns, so no per-row reordering.
        if tuple(spec.column_names[-len(WORKER_COLUMNS):]) != WORKER_COLUMNS:
            raise ConfigError(f"table {spec.name} must end with the worker columns "
                              f"{', '.join(WORKER_COLUMNS)}")
        self._col = {col[0]: col for col in self.columns}

    def _worker_value(self, name: str, value: Any) -> Any:
        n, kind, max_bytes, nullable = self._col[name]
        return check_value(n, kind, max_bytes, nullable, value)

    def build(self, batch: codec.Batch, staged_at: datetime) -> StagedBatch:
        transform = self.transform
        fast_plan = self._fast_plan
        event_columns = self.event_columns
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
