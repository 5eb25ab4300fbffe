"""``reprocess --dry-run``: what the current transform would do to the warehouse.

Per source batch: the current transform's rows (the stage worker's ``RowBuilder``, the
same checks, nothing written) against the stored rows of the batch's exact position
range (the query bounded by the sort key like the loader's replace, so it stays cheap on
Redshift). By position: a row only the transform makes is *added*, a stored row it no
longer makes (it now rejects the record) is *removed*, a row in both is *changed* when an
event column differs, else *unchanged* (``retagged`` of those: only the transform version
differs). The comparison itself (``compare``) is pure.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable

from shardline import codec, positions
from shardline.csvformat import NULL
from shardline.tables import TableSpec
from shardline.workers.rows import WORKER_COLUMNS, RowBuilder

if TYPE_CHECKING:  # psycopg2 is untyped (types-psycopg2 is not a dependency)
    from psycopg2.extensions import cursor

UTC = timezone.utc


@dataclass
class Diff:
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    retagged: int = 0  # unchanged values, another transform version
    rejected: int = 0  # records the transform rejects (dead letters)
    records: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, other: "Diff") -> None:
        for name in ("added", "changed", "removed", "unchanged", "retagged", "rejected",
                     "records"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.examples += other.examples[:max(0, 5 - len(self.examples))]

    def summary(self) -> str:
        return (f"{self.records} source records: would add {self.added} rows, change "
                f"{self.changed}, remove {self.removed}; {self.unchanged} unchanged "
                f"({self.retagged} of them only get the new transform version); "
                f"{self.rejected} records rejected (dead letters)")


# A row's event column values as text (None for NULL), and a position (``positions.position``).
Values = tuple[str | None, ...]
Position = tuple[int, str, int]


def event_columns(spec: TableSpec) -> list[str]:
    return [c for c in spec.column_names if c not in WORKER_COLUMNS]


def staged_rows(builder: RowBuilder, batch: codec.Batch, now: datetime
                ) -> tuple[dict[Position, Values], int]:
    """position -> event column values (text, None for NULL) of the rows the transform
    makes of the batch, and how many records it rejects."""
    staged = builder.build(batch, now)
    names = builder.spec.column_names
    at = {n: i for i, n in enumerate(names)}
    keep = [at[c] for c in event_columns(builder.spec)]
    seq_i, sub_i = at["sequence_number"], at["sub_sequence_number"]
    rows: dict[Position, Values] = {}
    for raw in csv.reader(io.StringIO(staged.csv_text, newline="")):
        values = [None if v == NULL else v for v in raw]
        rows[positions.position(raw[seq_i], int(raw[sub_i]))] = \
            tuple(values[i] for i in keep)
    return rows, len(staged.dead_letters)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat(" ", "microseconds")
    return str(value)


def stored_rows(cur: cursor, spec: TableSpec, batch: codec.Batch
                ) -> dict[Position, tuple[Values, str | None]]:
    """position -> (event column values as text, transform_version) of the stored rows in
    the batch's position range."""
    cols = event_columns(spec)
    # Bounded by the records' exact arrival range, as the reprocess load's delete is:
    # whatever occurred_at the stored row was given, Kinesis gave it this arrival time.
    from shardline.records.ledger import arrival_bound

    arrivals = [r.arrival_ms for r in batch.records]
    first, last = batch.first, batch.last
    cur.execute(f"SELECT sequence_number, sub_sequence_number, transform_version, "
                f"{', '.join(cols)} FROM {spec.name} WHERE arrival_time BETWEEN %s AND %s "
                f"AND shard_id = %s AND "
                + positions.within("sequence_number", "sub_sequence_number"),
                (*arrival_bound(min(arrivals), max(arrivals)), batch.shard_id)
                + positions.within_params(
                    (first.sequence_number, first.sub_sequence_number),
                    (last.sequence_number, last.sub_sequence_number)))
    return {positions.position(seq, sub): (tuple(_text(v) for v in rest), version)
            for seq, sub, version, *rest in cur.fetchall()}


def compare(new: dict[Position, Values], stored: dict[Position, tuple[Values, str | None]],
            version: str) -> Diff:
    """Pure: the counts for one position range."""
    d = Diff()
    for pos, values in new.items():
        old = stored.get(pos)
        if old is None:
            d.added += 1
        elif old[0] != values:
            d.changed += 1
            if len(d.examples) < 5:
                d.examples.append(f"position {pos[1]}/{pos[2]}: {_first_change(old[0], values)}")
        else:
            d.unchanged += 1
            d.retagged += old[1] != version
    d.removed = sum(1 for pos in stored if pos not in new)
    return d


def _first_change(old: Values, new: Values) -> str:
    for i, (a, b) in enumerate(zip(old, new, strict=True)):  # the same event columns
        if a != b:
            return f"column {i}: {a!r} -> {b!r}"
    return "?"


def diff_batches(cur: cursor, builder: RowBuilder, version: str, batches: Iterable[codec.Batch],
                 now: datetime) -> Diff:
    total = Diff()
    for batch in batches:
        new, rejected = staged_rows(builder, batch, now)
        stored = stored_rows(cur, builder.spec, batch)
        d = compare(new, stored, version)
        d.rejected, d.records = rejected, len(batch.records)
        total.add(d)
    return total
