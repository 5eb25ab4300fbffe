"""The table lock statement of each warehouse dialect, written once.

The control tables (lease changes, replays) and the loader (one load per target table
at a time) lock a table for the rest of their transaction. PostgreSQL takes
``SHARE ROW EXCLUSIVE``: readers go on, a second writer of the same kind waits;
Redshift has a single ``LOCK`` mode.
"""
from __future__ import annotations

_LOCK = {
    "postgres": "LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE",
    "redshift": "LOCK {table}",
}


def lock_table_sql(dialect: str, table: str) -> str:
    """``LOCK ...`` for ``table`` in ``dialect`` (``warehouse.dialect``'s choices)."""
    return _LOCK[dialect].format(table=table)
