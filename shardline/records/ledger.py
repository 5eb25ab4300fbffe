"""The staged-file ledger record: one ``StagedFile`` per staged batch, and its schema.

The ledger itself lives in the control store (``shardline.controlstore``: the stage worker's
``record_file``, the loader's ``pending_files`` / ``mark_loaded`` / ``quarantine``), not in
the warehouse: on Redshift a ledger row per batch would be a commit per batch in the
cluster's single commit queue, and a load reading it while workers insert is the
serializable read/write cycle (ERROR 1023). This module owns the record type the stage
worker writes and the loader reads, its states, and its columns with their limits.

``StagedFile`` is the one definition of a ledger row: each field carries its SQL type in
its metadata, and ``LEDGER_COLUMNS`` (hence every backend's column list, attribute map and
value limit) is derived from the fields. Adding a field means the field here plus one
``sql/control/NNN_*.sql`` migration (the migrations are history and stay literal SQL;
``tests/contract/test_ledger_schema.py`` fails when the migration is missing).

A stage worker records its object *before* its job reports success. A retried job (same
batch, same deterministic key) finds the entry and leaves it untouched, so the ledger never
holds a batch twice and never moves an entry the loader flipped to ``loaded`` back. A
reprocess run stages under keys of its own (the generation is in the key), so its files
are new entries, never "already present".
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Mapping

PENDING = "pending"
LOADED = "loaded"
QUARANTINED = "quarantined"
FILE_STATES = (PENDING, LOADED, QUARANTINED)  # every state a ledger entry can be in
# Generations: a reprocess run's ("g...", its files replace their ranges) or a redrive's
# ("r...", dead letters sent through the transform again: plain dedup, new events).
REPROCESS_PREFIX = "g"
REDRIVE_PREFIX = "r"

# Arrival times kept per staged file, for the end-to-end latency histogram at load time.
ARRIVAL_POINTS = 8

_SQL = "sql"  # field metadata key: the column's SQL type in the PostgreSQL control store
_LOADER = "loader"  # field metadata key: True when the loader writes it, not the stage worker
_VARCHAR = re.compile(r"VARCHAR\((\d+)\)")


def _col(sql: str, *, loader: bool = False) -> dict[str, object]:
    return {_SQL: sql, _LOADER: loader}


@dataclass(frozen=True)
class LedgerColumn:
    """One column of the ledger: its SQL type, whether it may be NULL (the field's type
    admits None), and whether the stage worker writes it."""

    name: str
    sql: str  # VARCHAR(n) | BIGINT | INTEGER | TEXT | TIMESTAMP
    nullable: bool
    staged: bool = True

    @property
    def max_bytes(self) -> int | None:
        """VARCHAR(n)'s n: a store column (and a DynamoDB key) is bounded in bytes."""
        match = _VARCHAR.fullmatch(self.sql)
        return int(match.group(1)) if match else None

    @property
    def ddl(self) -> str:
        """``name TYPE [NOT NULL]``, as in a CREATE TABLE."""
        return f"{self.name} {self.sql}" + ("" if self.nullable else " NOT NULL")


# Fields in the order the stage worker's values are listed (``StagedFile.params``).
@dataclass(kw_only=True)
class StagedFile:
    """One ledger entry: written by the stage worker, read by the loader.

    ``state`` left empty is the born state: a batch without good rows has nothing
    to load, so it is born ``loaded`` (``loaded_at = staged_at``); any other is
    ``pending``. ``load_id``/``loaded_at`` are the loader's."""

    s3_key: str = dataclasses.field(metadata=_col("VARCHAR(1024)"))
    target_table: str = dataclasses.field(metadata=_col("VARCHAR(128)"))
    stream: str = dataclasses.field(metadata=_col("VARCHAR(128)"))
    shard_id: str = dataclasses.field(metadata=_col("VARCHAR(128)"))
    first_sequence: str = dataclasses.field(metadata=_col("VARCHAR(128)"))
    first_sub_sequence: int = dataclasses.field(metadata=_col("BIGINT"))
    last_sequence: str = dataclasses.field(metadata=_col("VARCHAR(128)"))
    last_sub_sequence: int = dataclasses.field(metadata=_col("BIGINT"))
    row_count: int = dataclasses.field(metadata=_col("INTEGER"))
    byte_count: int = dataclasses.field(metadata=_col("BIGINT"))
    dead_letter_key: str | None = dataclasses.field(default=None,
                                                    metadata=_col("VARCHAR(1024)"))
    dead_letter_count: int = dataclasses.field(default=0, metadata=_col("INTEGER"))
    state: str = dataclasses.field(default="", metadata=_col("VARCHAR(16)"))
    staged_at: datetime = dataclasses.field(metadata=_col("TIMESTAMP"))  # naive UTC
    loaded_at: datetime | None = dataclasses.field(default=None, metadata=_col("TIMESTAMP"))
    # Which transform made the rows (``transform.transform_version``); None: staged before
    # versions were recorded. The loader writes it into every row of the file.
    transform_version: str | None = dataclasses.field(default=None,
                                                      metadata=_col("VARCHAR(64)"))
    # The reprocess run that staged this file (``shardline reprocess``; ``replaces``), None
    # for a normal batch: the loader then replaces the rows of the file's position range
    # instead of skipping stored events. A reprocess file is pending even with no good rows
    # (its range's stored rows must still be removed). A redrive's generation ("r...")
    # only gives its batches keys of their own; they load like normal batches.
    generation: str | None = dataclasses.field(default=None, metadata=_col("VARCHAR(64)"))
    # ApproximateArrivalTimestamp range of the batch's records (epoch ms): bounds the
    # reprocess replace by the sort key even when the file has no rows.
    arrival_min_ms: int | None = dataclasses.field(default=None, metadata=_col("BIGINT"))
    arrival_max_ms: int | None = dataclasses.field(default=None, metadata=_col("BIGINT"))
    # ``arrival_sample()`` of the batch's records
    arrival_sample: str | None = dataclasses.field(default=None, metadata=_col("VARCHAR(256)"))
    # The file's CSV columns, comma-separated, in order: the loader's COPY names them, so a
    # file staged before an ``ALTER TABLE ... ADD COLUMN`` still loads (the new column gets
    # its default or NULL). None: staged before files recorded it (``columns_of``).
    column_list: str | None = dataclasses.field(default=None, metadata=_col("TEXT"))
    # The file's good rows per UTC hour of arrival (``format_hour_counts``): what
    # reconciliation compares each target's rows of an hour with (a file can span hours).
    # None: staged before files recorded it (``file_hours`` falls back to the arrival range).
    hour_counts: str | None = dataclasses.field(default=None, metadata=_col("TEXT"))
    load_id: str | None = dataclasses.field(default=None,
                                            metadata=_col("VARCHAR(64)", loader=True))
    # The lake (``lake.tables``): a state of its own, independent of the warehouse's. The
    # stage worker sets ``pending`` for a file of a lake table with something to load (rows,
    # or a reprocess range to clear); None: not for the lake, so nothing waits for it there.
    lake_state: str | None = dataclasses.field(default=None, metadata=_col("VARCHAR(16)"))
    lake_load_id: str | None = dataclasses.field(default=None,
                                                 metadata=_col("VARCHAR(64)", loader=True))
    lake_loaded_at: datetime | None = dataclasses.field(default=None,
                                                        metadata=_col("TIMESTAMP", loader=True))

    def __post_init__(self) -> None:
        if not self.state:
            self.state = PENDING if self.row_count > 0 or self.replaces else LOADED
            if self.state == LOADED and self.loaded_at is None:
                self.loaded_at = self.staged_at

    @property
    def replaces(self) -> bool:
        """A reprocess run's file: the loader replaces the rows of its position range."""
        return bool(self.generation and self.generation.startswith(REPROCESS_PREFIX))

    @property
    def lake_due(self) -> bool:
        """Something for the lake to load: rows, or a reprocess range to clear."""
        return self.row_count > 0 or self.replaces

    @property
    def columns(self) -> tuple[str, ...] | None:
        return tuple(self.column_list.split(",")) if self.column_list else None

    def check(self) -> None:
        """A store column is VARCHAR(n) (and DynamoDB keys are bounded): refuse over-long
        values rather than truncate."""
        for col in STAGED_COLUMNS:
            limit, value = col.max_bytes, getattr(self, col.name)
            if limit is not None and isinstance(value, str):
                if len(value.encode("utf-8")) > limit:
                    raise ValueError(f"staged_files.{col.name} would be longer than {limit} "
                                     f"bytes: {value[:80]!r}...")

    def params(self) -> tuple[object, ...]:
        """The values of ``STAGED_COLUMNS``, in order."""
        return tuple(getattr(self, col.name) for col in STAGED_COLUMNS)


def _nullable(hint: object) -> bool:
    return isinstance(hint, types.UnionType) and type(None) in typing.get_args(hint)


def _columns() -> tuple[LedgerColumn, ...]:
    hints = typing.get_type_hints(StagedFile)
    return tuple(LedgerColumn(f.name, str(f.metadata[_SQL]), _nullable(hints[f.name]),
                              staged=not f.metadata[_LOADER])
                 for f in dataclasses.fields(StagedFile))


# Every column of a ledger row, derived from ``StagedFile``: the backends' column lists.
LEDGER_COLUMNS: tuple[LedgerColumn, ...] = _columns()
# The columns the stage worker writes (``load_id`` is the loader's).
STAGED_COLUMNS: tuple[LedgerColumn, ...] = tuple(c for c in LEDGER_COLUMNS if c.staged)
# What a store keeps beside the record, never part of a ``StagedFile``: the quarantine's
# error and time, and the COPY failures counted toward it (``ControlStore.quarantine``,
# ``count_copy_failure``; the PostgreSQL store's names).
STORE_COLUMNS: tuple[LedgerColumn, ...] = (
    LedgerColumn("error", "TEXT", nullable=True, staged=False),
    LedgerColumn("quarantined_at", "TIMESTAMP", nullable=True, staged=False),
    LedgerColumn("copy_failures", "INTEGER", nullable=False, staged=False),
    LedgerColumn("last_copy_error", "TEXT", nullable=True, staged=False),
)


_EPOCH = datetime(1970, 1, 1)


def arrival_bound(min_ms: int, max_ms: int) -> tuple[datetime, datetime]:
    """The ``arrival_time`` range (naive UTC, both ends included) of records that arrived
    from ``min_ms`` to ``max_ms`` (epoch ms, exact as the stage worker wrote them), for the
    loaders' reprocess replace; + 1 ms takes the whole last millisecond (the positions, not
    this bound, are exact)."""
    return _EPOCH + timedelta(milliseconds=min_ms), _EPOCH + timedelta(milliseconds=max_ms + 1)


HOUR_MS = 3_600_000


def hour_start(epoch_hour: int) -> datetime:
    """Epoch hour number -> the hour's start (naive UTC, like ``arrival_time``)."""
    return _EPOCH + timedelta(hours=epoch_hour)


def epoch_hour(when: datetime) -> int:
    """The epoch hour number of a naive UTC time (the inverse of ``hour_start``)."""
    return int((when - _EPOCH).total_seconds() // 3600)


def format_hour_counts(counts: Mapping[int, int]) -> str | None:
    """{epoch hour: rows} -> ``"hour:rows,hour:rows"`` in hour order (None when empty): a
    batch spans one or two hours, so a few bytes."""
    if not counts:
        return None
    return ",".join(f"{h}:{n}" for h, n in sorted(counts.items()) if n)


def parse_hour_counts(text: str | None) -> dict[datetime, int]:
    """``format_hour_counts`` text -> {hour start (naive UTC): rows}; ValueError when
    unreadable."""
    out: dict[datetime, int] = {}
    for part in (text or "").split(","):
        if part:
            hour, rows = part.split(":")
            out[hour_start(int(hour))] = out.get(hour_start(int(hour)), 0) + int(rows)
    return out


def file_hours(entry: "StagedFile") -> tuple[dict[datetime, int], frozenset[datetime]]:
    """(rows per arrival hour, hours the file touches with unknown counts): a file staged
    before per-hour counts were kept knows only its arrival range, which spans hours whose
    share is unknown unless it is one hour."""
    if entry.hour_counts is not None or entry.row_count == 0:
        return parse_hour_counts(entry.hour_counts), frozenset()
    return {}, frozenset(span_hours(entry))


def span_hours(entry: "StagedFile") -> list[datetime]:
    """Every hour the file's arrival range touches (empty when it has none recorded)."""
    if entry.arrival_min_ms is None or entry.arrival_max_ms is None:
        return []
    first, last = entry.arrival_min_ms // HOUR_MS, entry.arrival_max_ms // HOUR_MS
    return [hour_start(h) for h in range(first, last + 1)]


def arrival_sample(arrivals_ms: Iterable[int], points: int = ARRIVAL_POINTS) -> str | None:
    """The batch's Kinesis arrival times (epoch ms) as ``points`` quantiles, each standing
    for an equal share of the rows: the midpoints of ``points`` equal-count slices, written
    ``first,delta,delta...`` (ms; ~60 bytes). The loader turns them into end-to-end latency
    observations at its commit (``arrival_points``) without reading the rows again."""
    ordered = sorted(arrivals_ms)  # already in order within a shard: timsort is linear
    n = len(ordered)
    if not n:
        return None
    k = min(points, n)
    picks = [ordered[min(n - 1, (2 * i + 1) * n // (2 * k))] for i in range(k)]
    return ",".join([str(picks[0])] + [str(p - picks[0]) for p in picks[1:]])


def arrival_points(sample: str | None) -> list[int]:
    """``arrival_sample`` text -> arrival times in epoch ms (empty when absent or unreadable:
    a metric must never stop a load)."""
    if not sample:
        return []
    try:
        first, *rest = (int(p) for p in sample.split(","))
    except ValueError:
        return []
    return [first] + [first + d for d in rest]


def e2e_observations(entries: Iterable["StagedFile"], queryable_ms: int,
                     inserted_share: float = 1.0) -> list[tuple[float, int]]:
    """(latency seconds, rows) pairs for the files of one load: each file's rows (times
    ``inserted_share``, the load's inserted / copied rows: duplicates the merge skipped, e.g.
    of a replay, were queryable long before and are not counted) split evenly over its
    arrival points."""
    out: list[tuple[float, int]] = []
    for e in entries:
        points = arrival_points(e.arrival_sample)
        count = round(e.row_count * min(1.0, max(0.0, inserted_share)))
        if not points or count <= 0:
            continue
        k = len(points)
        for i, arrived in enumerate(points):
            rows = count * (i + 1) // k - count * i // k
            if rows:
                out.append((max(0.0, (queryable_ms - arrived) / 1000.0), rows))
    return out
