"""Kinesis position order: the one rule, in Python and as the SQL that must express it.

Sequence numbers are decimal strings (56 digits from Kinesis, up to 128 characters in
our columns), longer than NUMERIC(38) holds, so they compare by length, then text;
sub-records of one KPL aggregate share a sequence number and compare by sub-sequence
number. ``position`` is the Python form. The warehouse has to sort and compare by the
same rule (the loader's dedup merge, the watermark queries), so that SQL is built from
``order_by`` and ``before`` here instead of being written out where it is used.
"""
from __future__ import annotations


def position(sequence_number: str, sub_sequence_number: int = 0) -> tuple[int, str, int]:
    """A Kinesis position as a sortable tuple."""
    return (len(sequence_number), sequence_number, int(sub_sequence_number))


def order_by(seq_col: str, sub_col: str, *, descending: bool = False) -> str:
    """SQL ``ORDER BY`` terms sorting rows by position (earliest first unless descending)."""
    d = " DESC" if descending else ""
    return f"LENGTH({seq_col}){d}, {seq_col}{d}, {sub_col}{d}"


def before(seq_col: str, sub_col: str) -> str:
    """SQL predicate "the row's position is strictly before a given one", written without
    row-value comparison (Redshift lacks it); bind it with ``before_params``."""
    return (f"(LENGTH({seq_col}) < %s OR (LENGTH({seq_col}) = %s AND "
            f"({seq_col} < %s OR ({seq_col} = %s AND {sub_col} < %s))))")


def before_params(sequence_number: str, sub_sequence_number: int
                  ) -> tuple[int, int, str, str, int]:
    """The parameters of ``before`` for the position (sequence_number, sub_sequence_number)."""
    n = len(sequence_number)
    return (n, n, sequence_number, sequence_number, sub_sequence_number)


def within(seq_col: str, sub_col: str) -> str:
    """SQL predicate "the row's position is in [first, last]" (both ends included): not
    before first and last not before the row; bind it with ``within_params``."""
    after_last = (f"(LENGTH({seq_col}) > %s OR (LENGTH({seq_col}) = %s AND "
                  f"({seq_col} > %s OR ({seq_col} = %s AND {sub_col} > %s))))")
    return f"(NOT {before(seq_col, sub_col)} AND NOT {after_last})"


def within_params(first: tuple[str, int], last: tuple[str, int]
                  ) -> tuple[int, int, str, str, int, int, int, str, str, int]:
    """The parameters of ``within`` for the positions first = (seq, sub), last = (seq, sub)."""
    return before_params(*first) + before_params(*last)
