"""The row filters of a lake load (Iceberg expressions): the dedup window and a reprocess
file's position range, with the warehouse plan's semantics (``loaders/warehouse/plan.py``).

Sequence numbers compare as text here: Iceberg expressions have no ``LENGTH``, and one
stream's sequence numbers are all of one length (56 digits from Kinesis and kinesalite),
so text order is the position order within a shard.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from functools import reduce
from typing import Callable, Sequence, cast

from pyiceberg.expressions import (AlwaysFalse, And, BooleanExpression, EqualTo, GreaterThan,
                                   GreaterThanOrEqual, LessThan, LessThanOrEqual, Or)

from shardline.records.ledger import StagedFile, arrival_bound


def _pred(kind: type[BooleanExpression], column: str, value: object) -> BooleanExpression:
    """``kind(column, value)``: pyiceberg's predicates take (name, literal) at run time;
    their pydantic signature hides that from mypy."""
    return cast(Callable[[str, object], BooleanExpression], kind)(column, value)


def _ts(value: datetime) -> str:
    return value.isoformat(timespec="microseconds")


def between(column: str, low: datetime, high: datetime) -> BooleanExpression:
    return And(_pred(GreaterThanOrEqual, column, _ts(low)),
               _pred(LessThanOrEqual, column, _ts(high)))


def half_open(column: str, since: datetime, until: datetime) -> BooleanExpression:
    """``since <= column < until``."""
    return And(_pred(GreaterThanOrEqual, column, _ts(since)),
               _pred(LessThan, column, _ts(until)))


def window(column: str, low: datetime, high: datetime, window_s: float) -> BooleanExpression:
    """``column`` within ``window_s`` of [low, high]: where stored copies can be."""
    pad = timedelta(seconds=window_s)
    return between(column, low - pad, high + pad)


def position_range(entry: StagedFile) -> BooleanExpression:
    """The rows of the file's shard at positions first..last (both included)."""
    seq, sub = "sequence_number", "sub_sequence_number"
    after_first = Or(_pred(GreaterThan, seq, entry.first_sequence),
                     And(_pred(EqualTo, seq, entry.first_sequence),
                         _pred(GreaterThanOrEqual, sub, entry.first_sub_sequence)))
    before_last = Or(_pred(LessThan, seq, entry.last_sequence),
                     And(_pred(EqualTo, seq, entry.last_sequence),
                         _pred(LessThanOrEqual, sub, entry.last_sub_sequence)))
    return And(_pred(EqualTo, "shard_id", entry.shard_id), And(after_first, before_last))


def replace_filter(entries: Sequence[StagedFile], time_column: str,
                   time_range: tuple[datetime, datetime] | None,
                   window_s: float) -> BooleanExpression:
    """The stored rows a reprocess load replaces: each file's exact position range,
    bounded by ``arrival_time`` within the files' records' arrival range (set by Kinesis,
    the same whatever transform made the row), else by the sort key widened by the dedup
    window around ``time_range`` (the staged rows'); nothing without either."""
    ranges = reduce(Or, [position_range(e) for e in entries]) if entries else AlwaysFalse()
    if entries and all(e.arrival_min_ms is not None and e.arrival_max_ms is not None
                       for e in entries):
        low, high = arrival_bound(min(e.arrival_min_ms or 0 for e in entries),
                                  max(e.arrival_max_ms or 0 for e in entries))
        return And(between("arrival_time", low, high), ranges)
    if time_range is None:
        return AlwaysFalse()
    return And(window(time_column, *time_range, window_s), ranges)
