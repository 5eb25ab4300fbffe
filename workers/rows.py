"""Kinesis records -> CSV lines of the target table + dead letters: the stage job's per-record path.

Per record: UTF-8 -> JSON object -> transform -> the worker's own checks of every
column against the table spec (NOT NULL, type, UTF-8 byte length, no NUL) -> one CSV
line (``csvformat.format_row``). Any problem makes the record a dead letter with a
reason (``dead_letter``); a bad record never fails the batch. Nothing here does I/O.
"""
from __future__ import annotations

import base64
from collections import Counter
import hashlib
import json
import linecache
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from operator import itemgetter
from typing import Any, Callable, TypedDict

import orjson

from shardline import codec
from shardline.csvformat import NULL, format_row
from shardline.errors import ConfigError
from shardline.tables import STAGED_SYSTEM, Tables, TableSpec
from shardline.transforms import Event, Row, Transform

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_NAIVE = datetime(1970, 1, 1)
BIGINT_MIN, BIGINT_MAX = -(2 ** 63), 2 ** 63 - 1
INT_MIN, INT_MAX = -(2 ** 31), 2 ** 31 - 1
MAX_REASON = 500  # characters of an exception message kept in a dead-letter reason

# Columns the worker fills from the Kinesis record / batch; a transform gives the rest.
WORKER_COLUMNS = tuple(c.name for c in STAGED_SYSTEM)

_fast_loads, _FastJSONError = orjson.loads, orjson.JSONDecodeError
_SIMPLE_TYPES = frozenset((str, int, bool, type(None)))  # JSON values orjson reads exactly
_ONLY_STR = frozenset((str,))
_NUL = "\x00"  # stands for None in build()'s fast path: no accepted value contains one
_NULL_FIELD = '"\x00"'
_MILLIS_TEXT = [f".{m:03d}000" for m in range(1000)]  # arrival_time's fraction

class DeadLetter(TypedDict):
    """A dead letter as written to S3 (one JSON object a line; ``dead_letter()``) and read
    back by redrive and try-transform: the record, where it came from, and why."""

    data_b64: str
    shard_id: str
    sequence_number: str
    sub_sequence_number: int
    partition_key: str
    arrival_time: str
    reason: str


# A column as the checks take it: (name, kind, max_bytes, nullable)
ColumnCheck = tuple[str, str, "int | None", bool]
# The compiled accept tests (_length_test, _row_line_function)
Fits = Callable[[list[str]], bool]
RowLine = Callable[[Row, tuple[str, str, str, str, str]], "tuple[str, list[str]] | None"]


class _Reject(Exception):
    """Internal: this record is a dead letter with ``reason``."""

    def __init__(self, reason: str):
        self.reason = reason


def _type_name(value: object) -> str:
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
    if kind == "int4":
        if type(value) is not int:
            raise _Reject(f"column {name}: expected an integer, got {_type_name(value)}")
        if not INT_MIN <= value <= INT_MAX:
            raise _Reject(f"column {name}: {value} is out of the INTEGER range")
        return value
    if kind == "float":
        if type(value) not in (float, int):
            raise _Reject(f"column {name}: expected a number, got {_type_name(value)}")
        try:
            number = float(value)
        except OverflowError:
            raise _Reject(f"column {name}: {value} is out of the DOUBLE PRECISION range") \
                from None
        if not math.isfinite(number):
            raise _Reject(f"column {name}: {value} is not a finite number")
        return repr(number)
    if kind == "bool":
        if type(value) is not bool:
            raise _Reject(f"column {name}: expected true or false, got {_type_name(value)}")
        return "true" if value else "false"
    raise _Reject(f"column {name}: unknown column kind {kind!r}")  # pragma: no cover


@dataclass
class StagedBatch:
    """What one batch turned into for one table, before anything is written anywhere."""

    csv_text: str
    rows: int
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # rows per epoch hour of arrival (``ledger.format_hour_counts``): reconciliation's unit
    hour_counts: dict[int, int] = field(default_factory=dict)


@dataclass
class RoutedBatch:
    """What one batch turned into: each table's rows (tables without rows absent) and the
    batch's dead letters (whatever table a record was meant for, or none). ``csv_text`` and
    ``rows`` are the first table's (a single-table builder's whole output)."""

    tables: dict[str, StagedBatch]
    dead_letters: list[DeadLetter] = field(default_factory=list)
    first: str = ""

    @property
    def csv_text(self) -> str:
        one = self.tables.get(self.first)
        return one.csv_text if one is not None else ""

    @property
    def rows(self) -> int:
        one = self.tables.get(self.first)
        return one.rows if one is not None else 0


class TablePlan:
    """One table's per-record machinery: its transform, its columns and the fast accept
    test compiled for them (see ``RowBuilder``)."""

    def __init__(self, spec: TableSpec, transform: Transform):
        self.spec = spec
        self.transform = transform
        self.columns: list[ColumnCheck] = [(c.name, c.kind, c.max_bytes, c.nullable)
                                           for c in spec.columns]
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
        # build()'s fast accept test, compiled for this spec (see _row_line_function)
        self.fast_ok = bool(self.event_plan) and all(col[1] in ("text", "timestamp")
                                                     for col in self.event_plan)
        limits = [(i, col[2]) for i, col in enumerate(self.event_plan)
                  if col[1] == "text" and col[2] is not None]
        # A row no longer than the smallest limit >= 1024 (its largest value is not longer
        # than the row) only needs the smaller limits checked.
        short_max = min((lim for _i, lim in limits if lim >= 1024), default=0)
        self.row_line = _row_line_function(
            self.event_plan, _length_test(limits),
            _length_test([(i, lim) for i, lim in limits if lim < short_max]),
            short_max) if self.fast_ok else None

    def worker_value(self, name: str, value: Any) -> Any:
        n, kind, max_bytes, nullable = self._col[name]
        return check_value(n, kind, max_bytes, nullable, value)

    def exact_line(self, out: Row, rec: codec.Record, second: str, shard_value: str,
                   staged_value: str) -> str:
        """One row column by column, raising _Reject for the first bad value: the
        definition that build()'s fast accept test reproduces for common rows."""
        get = out.get
        values: list[Any] = []
        for name, is_text, limit, col in self._fast_plan:
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
        seq_col = self._col["sequence_number"]
        seq_no, seq_max = rec.sequence_number, seq_col[2]
        if (seq_max is not None and len(seq_no) > seq_max) or not seq_no.isascii():
            check_value(*seq_col, seq_no)
        sub = rec.sub_sequence_number
        if not 0 <= sub <= BIGINT_MAX:
            check_value(*self._col["sub_sequence_number"], sub)
        if not second:
            raise _Reject(f"arrival time {rec.arrival_ms} ms is out of range")
        values += (shard_value, seq_no, sub, f"{second}.{rec.arrival_ms % 1000:03d}000",
                   staged_value)
        line = format_row(values)
        if not line.isascii():
            self.check_utf8(values)
        return line

    def check_utf8(self, values: list[Any]) -> None:
        """Exact UTF-8 byte lengths and encodability of a non-ASCII row (raises _Reject)."""
        for (name, _kind, max_bytes, nullable), value in zip(self.columns, values, strict=False):
            if type(value) is str and not value.isascii():
                check_value(name, "text", max_bytes, nullable, value)


class RowBuilder:
    """Records -> CSV lines + dead letters, for one table or for the routed tables of a
    tables file (``RowBuilder.routed``).

    The per-record path is kept lean (reprocessing a month is CPU-bound here, see
    docs/benchmarks.md "Stage worker"): orjson for the common flat record (json.loads
    for the rest), the transform, then one fast accept test for the whole row (the
    line built by one join, whole-row quote/NUL counts, spec-compiled length tests).
    A row it does not accept is done column by column by ``TablePlan.exact_line``, the
    code that defines every reason; tests/unit/test_stage_differential.py holds the fast
    path to it, and the goldens (tests/golden/) hold both to the committed outputs. The
    generated code is compiled under a name of its own with its source in ``linecache``
    (``_compiled``), so a traceback through it shows the generated line. The exact UTF-8
    work (byte lengths of non-ASCII text, lone surrogates) runs only for the rare row
    whose CSV line is not pure ASCII.
    Worker columns are built valid by construction (timestamps from integers) and
    checked once per batch where they do not change (shard_id, staged_at): every table
    has the same system columns (``shardline.tables.STAGED_SYSTEM``).

    Routing (several tables): one dict lookup of the event's routing field per record,
    then that table's plan; with a single table there is no lookup at all.
    """

    def __init__(self, spec: TableSpec, transform: Transform, *,
                 plans: list[TablePlan] | None = None, route_field: str | None = None,
                 by_value: dict[str, str] | None = None, default: str | None = None):
        self.plans = plans or [TablePlan(spec, transform)]
        self.spec = self.plans[0].spec
        self.transform = self.plans[0].transform
        self.route_field = route_field
        self.by_value = dict(by_value or {})
        self.default = default
        first = self.plans[0]
        self.columns, self.event_plan = first.columns, first.event_plan
        self.event_columns = first.event_columns

    @classmethod
    def routed(cls, tables: Tables, transforms: dict[str, Transform],
               first: str | None = None) -> "RowBuilder":
        """The builder for a tables file (``shardline.tables.Tables``); ``first``: the table
        its single-table view (``spec``, ``csv_text``, ``rows``) is of (default: the file's
        first), routing unchanged."""
        specs = sorted(tables.tables, key=lambda spec: spec.name != first) if first \
            else tables.tables
        plans = [TablePlan(spec, transforms[spec.name]) for spec in specs]
        default = tables.default.name if tables.default is not None else None
        return cls(plans[0].spec, plans[0].transform, plans=plans,
                   route_field=tables.route_field, by_value=tables.by_value, default=default)

    def build_tables(self, batch: codec.Batch, staged_at: datetime) -> RoutedBatch:
        millis_text = _MILLIS_TEXT
        first = self.plans[0]
        seq_limit = first._col["sequence_number"][2] or 1 << 62
        fast_loads, fast_error, simple = _fast_loads, _FastJSONError, _SIMPLE_TYPES
        loads = json.loads
        out_lines: dict[str, list[str]] = {p.spec.name: [] for p in self.plans}
        # per plan, for the loop: (transform, event columns, row_line, lines, plan); the
        # plan's row_line is None when not fast_ok
        # the arrival second of each accepted row, per table: counted per hour at the end
        # (one append per row here; Counter does the rest in C)
        out_secs: dict[str, list[int]] = {p.spec.name: [] for p in self.plans}
        hot = {p.spec.name: (p.transform, p.event_columns, p.row_line,
                             out_lines[p.spec.name], p, out_secs[p.spec.name])
               for p in self.plans}
        route_field = self.route_field
        by_value = {v: hot[t] for v, t in self.by_value.items()}
        default_hot = hot[self.default] if self.default is not None else None
        transform, event_columns, row_line, lines, plan, secs_of = hot[first.spec.name]
        dead: list[DeadLetter] = []
        seconds: dict[int, str] = {}
        shard_id = batch.shard_id
        batch_problem = None
        try:  # once per batch: the same for every record
            shard_value = first.worker_value("shard_id", shard_id)
            staged_value = first.worker_value("staged_at", staged_at)
        except _Reject as rej:
            batch_problem = rej.reason
        for rec in batch.records:
            arrival_ms = rec.arrival_ms
            try:
                if batch_problem:
                    raise _Reject(batch_problem)
                # orjson reads the common record (flat object of strings, ints, bools,
                # nulls) exactly as json.loads does; anything else (an error, a float,
                # which may be a big integer json.loads keeps exact, a nested value) is
                # read again by json.loads, which defines what parses and the reasons.
                # Inline, not a helper: how deep a RecursionError's message says it was
                # depends on the caller's stack depth.
                try:
                    event = fast_loads(rec.data)
                    if type(event) is not dict or not simple.issuperset(map(type, event.values())):
                        event = None
                except fast_error:
                    event = None
                if event is None:
                    try:
                        text = rec.data.decode("utf-8")
                    except UnicodeDecodeError as exc:
                        raise _Reject(f"invalid UTF-8: {exc.reason} at byte {exc.start}") \
                            from None
                    try:
                        event = loads(text)
                    except (ValueError, RecursionError) as exc:
                        raise _Reject(f"not JSON: {str(exc)[:MAX_REASON]}") from None
                    if type(event) is not dict:
                        raise _Reject(f"not a JSON object: got {_json_type(event)}")
                if route_field is not None:
                    value = event.get(route_field)
                    chosen = by_value.get(value, default_hot) if type(value) is str \
                        else default_hot
                    if chosen is None:
                        raise _Reject(_no_route(route_field, value, event))
                    transform, event_columns, row_line, lines, plan, secs_of = chosen
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
                # Fast accept test: the row as format_row would write it when the worker
                # values are plainly valid, every event value is a str (or None where
                # nullable) within its character limit, the timestamps are UTC datetimes
                # and no value holds a NUL or a '"'. Any other row is written by
                # exact_line, the column-by-column checks that define the reasons.
                # None travels as a lone NUL, which no accepted value contains.
                seq_no = rec.sequence_number
                sub = rec.sub_sequence_number
                secs, millis = divmod(arrival_ms, 1000)
                second = seconds.get(secs)
                if second is None:  # records of a batch arrive within a few seconds
                    second = seconds[secs] = _second_text(secs)
                if row_line is not None and second and len(seq_no) <= seq_limit \
                        and seq_no.isascii() and 0 <= sub <= BIGINT_MAX:
                    got = row_line(out, (shard_value, seq_no, str(sub),
                                         second + millis_text[millis], staged_value))
                    if got is not None:
                        line, values = got
                        if not line.isascii():
                            plan.check_utf8([None if v is _NUL else v for v in values])
                        lines.append(line)
                        secs_of.append(secs)
                        continue
                lines.append(plan.exact_line(out, rec, second, shard_value, staged_value))
                secs_of.append(secs)
            except _Reject as rej:
                dead.append(dead_letter(rec, shard_id, rej.reason))
        return RoutedBatch({name: StagedBatch("".join(ls), len(ls), [],
                                              _hour_counts(out_secs[name]))
                            for name, ls in out_lines.items() if ls}, dead, first.spec.name)

    # One function, not a wrapper: how deep a RecursionError's reason says a record was
    # depends on the caller's stack depth, which must not change with the entry point.
    build = build_tables


def _hour_counts(seconds: list[int]) -> dict[int, int]:
    """Epoch seconds of arrival -> {epoch hour: rows}."""
    return dict(Counter(s // 3600 for s in seconds))


def _no_route(route_field: str, value: object, event: Event) -> str:
    if route_field not in event:
        return f"no route: the event has no {route_field!r} field and no table takes the " \
               f"default route"
    return f"no route: {route_field} {json.dumps(value)[:100]} matches no table's route " \
           f"and no table takes the default route"


def _row_line_function(plan: list[ColumnCheck], fits: Fits, short_fits: Fits,
                       short_max: int) -> RowLine:
    """-> row_line(out, tail): (the CSV line, its values) of a transform output plus the
    worker values, or None when the row needs the exact path: a column missing, a
    timestamp that is not a UTC datetime, a value that is not a str (or None where
    nullable), a '"' or NUL in a value, a value over its character limit. Compiled for
    the spec: straight-line code, no per-column loop; the quote/NUL tests are two scans
    of the values joined, and None travels as a lone NUL in the values returned."""
    names = [col[0] for col in plan]
    var = [f"v{i}" for i in range(len(plan))]
    nullable = [i for i, col in enumerate(plan) if col[1] == "text" and col[3]]
    lines = ["def row_line(out, tail):",
             "    try:",
             f"        {', '.join(var)}, = getter(out)",
             "    except KeyError:",
             "        return None"]
    for i, (_name, kind, _max_bytes, _nullable) in enumerate(plan):
        if kind == "timestamp":
            lines += [f"    if type(v{i}) is not datetime or v{i}.tzinfo is not UTC:",
                      "        return None",
                      f"    v{i} = v{i}.isoformat(' ', 'microseconds')[:-6]"]
    for i in nullable:
        lines += [f"    n{i} = v{i} is None", f"    if n{i}:", f"        v{i} = ''"]
    lines += [f"    values = [{', '.join(var)}, *tail]",
              "    if not only_str.issuperset(map(type, values)):",
              "        return None",
              "    cat = ''.join(values)",
              "    if '\"' in cat or NUL in cat:",
              "        return None",
              "    if not (short_fits(values) if len(cat) <= short_max else fits(values)):",
              "        return None"]
    if nullable:
        lines.append(f"    if {' or '.join(f'n{i}' for i in nullable)}:")
        for i in nullable:
            lines += [f"        if n{i}:", f"            values[{i}] = NUL"]
        lines.append("        return ('\"' + '\",\"'.join(values) + '\"\\n')"
                     ".replace(NULL_FIELD, NULL), values")
    lines.append("    return '\"' + '\",\"'.join(values) + '\"\\n', values")
    namespace: dict[str, Any] = {
        "getter": itemgetter(*names) if len(names) > 1 else (lambda out, name=names[0]:
                                                             (out[name],)),
        "datetime": datetime, "UTC": UTC, "NUL": _NUL, "NULL_FIELD": _NULL_FIELD, "NULL": NULL,
        "only_str": _ONLY_STR, "fits": fits, "short_fits": short_fits, "short_max": short_max}
    # column names only through the getter
    return _compiled("\n".join(lines) + "\n", "row_line", namespace)


def _length_test(limits: list[tuple[int, int]]) -> Fits:
    """-> fits(values): True when len(values[i]) <= limit for every (i, limit), as one
    expression compiled for the spec (a generic loop over 13 columns costs ~2 µs a row)."""
    body = " and ".join(f"len(v[{int(i)}]) <= {int(lim)}" for i, lim in limits) or "True"
    # ints only, from the spec
    return _compiled(f"def fits(v, len=len):\n    return {body}\n", "fits", {})


def _compiled(source: str, name: str, namespace: dict[str, Any]) -> Callable[..., Any]:
    """Run generated ``source`` in ``namespace`` and return the function ``name`` it defines.

    Compiled under a filename naming the function and a digest of its source, with the
    source registered in ``linecache``: a traceback through generated code then shows the
    line that raised instead of ``File "<string>"`` and no text. The digest makes specs that
    generate the same code share one entry, so the cache holds one per distinct source."""
    digest = hashlib.sha1(source.encode("utf-8")).hexdigest()[:12]
    filename = f"<shardline.workers.rows generated {name} {digest}>"
    # mtime None: linecache.checkcache keeps the entry (there is no file to compare with)
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)
    function: Callable[..., Any] = namespace[name]
    return function


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {list: "array", str: "string", type(None): "null"}.get(type(value), type(value).__name__)


def _second_text(secs: int) -> str:
    """Whole seconds since the epoch -> "YYYY-MM-DD HH:MM:SS" UTC, "" when out of range."""
    try:
        return (EPOCH_NAIVE + timedelta(seconds=secs)).isoformat(" ")
    except OverflowError:
        return ""


def _arrival_text(arrival_ms: int) -> str:
    try:
        return (EPOCH + timedelta(milliseconds=arrival_ms)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except OverflowError:
        return str(arrival_ms)


def dead_letter(rec: codec.Record, shard_id: str, reason: str) -> DeadLetter:
    return {
        "data_b64": base64.b64encode(rec.data).decode("ascii"),
        "shard_id": shard_id,
        "sequence_number": rec.sequence_number,
        "sub_sequence_number": rec.sub_sequence_number,
        "partition_key": rec.partition_key,
        "arrival_time": _arrival_text(rec.arrival_ms),
        "reason": reason,
    }


def dead_letter_lines(dead: list[DeadLetter]) -> str:
    return "".join(json.dumps(d, separators=(",", ":")) + "\n" for d in dead)
