"""The staged-file ledger record: one ``StagedFile`` per staged batch.

The ledger itself lives in the control store (``shardline.controlstore``: the stage worker's
``record_file``, the loader's ``pending_files`` / ``mark_loaded`` / ``quarantine``), not in
the warehouse: on Redshift a ledger row per batch would be a commit per batch in the
cluster's single commit queue, and a load reading it while workers insert is the
serializable read/write cycle (ERROR 1023). This module owns the record type the stage
worker writes and the loader reads, and its column limits.

A stage worker records its object *before* its job reports success. A retried job (same
batch, same deterministic key) finds the entry and leaves it untouched, so the ledger never
holds a batch twice and never moves an entry the loader flipped to ``loaded`` back. A
reprocess run stages under keys of its own (the generation is in the key), so its files
are new entries, never "already present".
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Sequence

PENDING = "pending"
LOADED = "loaded"
# Generations: a reprocess run's ("g...", its files replace their ranges) or a redrive's
# ("r...", dead letters sent through the transform again: plain dedup, new events).
REPROCESS_PREFIX = "g"
REDRIVE_PREFIX = "r"

# The columns the stage worker writes (``load_id`` is the loader's), with their limits.
_COLUMNS = [
    ("s3_key", "VARCHAR(1024)"),
    ("target_table", "VARCHAR(128)"),
    ("stream", "VARCHAR(128)"),
    ("shard_id", "VARCHAR(128)"),
    ("first_sequence", "VARCHAR(128)"),
    ("first_sub_sequence", "BIGINT"),
    ("last_sequence", "VARCHAR(128)"),
    ("last_sub_sequence", "BIGINT"),
    ("row_count", "INTEGER"),
    ("byte_count", "BIGINT"),
    ("dead_letter_key", "VARCHAR(1024)"),
    ("dead_letter_count", "INTEGER"),
    ("state", "VARCHAR(16)"),
    ("staged_at", "TIMESTAMP"),
    ("loaded_at", "TIMESTAMP"),
    ("transform_version", "VARCHAR(64)"),
    ("generation", "VARCHAR(64)"),
    ("arrival_min_ms", "BIGINT"),
    ("arrival_max_ms", "BIGINT"),
    ("arrival_sample", "VARCHAR(256)"),
    ("column_list", "TEXT"),
]

# What the loader needs of a pending file, in order (``StagedFile.pending``).
PENDING_COLUMNS = ("s3_key", "stream", "shard_id", "first_sequence", "first_sub_sequence",
                   "last_sequence", "last_sub_sequence", "row_count", "byte_count", "staged_at",
                   "arrival_sample", "column_list")

# Arrival times kept per staged file, for the end-to-end latency histogram at load time.
ARRIVAL_POINTS = 8


@dataclass(kw_only=True)
class StagedFile:
    """One ledger entry: written by the stage worker, read by the loader.

    ``state`` left empty is the born state: a batch without good rows has nothing
    to load, so it is born ``loaded`` (``loaded_at = staged_at``); any other is
    ``pending``. ``load_id``/``loaded_at`` are the loader's."""

    s3_key: str
    target_table: str
    stream: str
    shard_id: str
    first_sequence: str
    first_sub_sequence: int
    last_sequence: str
    last_sub_sequence: int
    row_count: int
    byte_count: int
    dead_letter_key: str | None = None
    dead_letter_count: int = 0
    staged_at: datetime  # naive UTC
    state: str = ""
    load_id: str | None = None
    loaded_at: datetime | None = None
    # Which transform made the rows (``transform.transform_version``); None: staged before
    # versions were recorded. The loader writes it into every row of the file.
    transform_version: str | None = None
    # The reprocess run that staged this file (``shardline reprocess``; ``replaces``), None
    # for a normal batch: the loader then replaces the rows of the file's position range
    # instead of skipping stored events. A reprocess file is pending even with no good rows
    # (its range's stored rows must still be removed). A redrive's generation ("r...")
    # only gives its batches keys of their own; they load like normal batches.
    generation: str | None = None
    # ApproximateArrivalTimestamp range of the batch's records (epoch ms): bounds the
    # reprocess replace by the sort key even when the file has no rows.
    arrival_min_ms: int | None = None
    arrival_max_ms: int | None = None
    arrival_sample: str | None = None  # ``arrival_sample()`` of the batch's records
    # The file's CSV columns, comma-separated, in order: the loader's COPY names them, so a
    # file staged before an ``ALTER TABLE ... ADD COLUMN`` still loads (the new column gets
    # its default or NULL). None: staged before files recorded it (``columns_of``).
    column_list: str | None = None

    def __post_init__(self) -> None:
        if not self.state:
            self.state = PENDING if self.row_count > 0 or self.replaces else LOADED
            if self.state == LOADED and self.loaded_at is None:
                self.loaded_at = self.staged_at

    @property
    def replaces(self) -> bool:
        """A reprocess run's file: the loader replaces the rows of its position range."""
        return bool(self.generation and self.generation.startswith(REPROCESS_PREFIX))

    @classmethod
    def pending(cls, target_table: str, row: Sequence[Any]) -> "StagedFile":
        """A row of ``PENDING_COLUMNS`` values for ``target_table``."""
        return cls(target_table=target_table, state=PENDING, **dict(zip(PENDING_COLUMNS, row)))

    @property
    def columns(self) -> tuple[str, ...] | None:
        return tuple(self.column_list.split(",")) if self.column_list else None

    def check(self) -> None:
        """A store column is VARCHAR(n) (and DynamoDB keys are bounded): refuse over-long
        values rather than truncate."""
        for (name, kind), value in zip(_COLUMNS, self.params()):
            if kind.startswith("VARCHAR(") and isinstance(value, str):
                limit = int(kind[8:-1])
                if len(value.encode("utf-8")) > limit:
                    raise ValueError(f"staged_files.{name} would be longer than {limit} bytes: "
                                     f"{value[:80]!r}...")

    def params(self) -> tuple:
        """The values of ``_COLUMNS``, in order."""
        return tuple(getattr(self, name) for name, _ in _COLUMNS)


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
