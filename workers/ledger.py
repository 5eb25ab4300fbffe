"""The staged-file ledger (``staged_files``): one row per staged batch, written idempotently.

This module owns the table: its columns, the one record type (``StagedFile``) that
the stage worker writes and the loader reads, and the SQL both use on it.

A stage worker records its object here *before* its job reports success. A
retried job (same batch, same deterministic key) finds the row and leaves it
untouched, so the ledger never holds a batch twice and never moves a row that
the loader already flipped to ``loaded`` back to ``pending``.

Portable SQL (PostgreSQL and Redshift): ``INSERT ... SELECT ... WHERE NOT
EXISTS`` with explicit casts (no ON CONFLICT, no RETURNING). Two workers racing
on the same key: on PostgreSQL the primary key rejects the loser, which is
treated as "already recorded"; on Redshift (primary keys not enforced) the
serializable isolation aborts one transaction, its job fails and the consumer's
retry then finds the row.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Sequence

from shardline.errors import ServiceUnavailable
from shardline.lifecycle import transaction

PENDING = "pending"
LOADED = "loaded"

# The columns the stage worker writes, in INSERT order (``load_id`` is the loader's).
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
]

INSERT_SQL = (
    f"INSERT INTO staged_files ({', '.join(name for name, _ in _COLUMNS)}) "
    f"SELECT {', '.join(f'CAST(%s AS {kind})' for _, kind in _COLUMNS)} "
    "WHERE NOT EXISTS (SELECT 1 FROM staged_files WHERE s3_key = %s)"
)

# -- the loader's reads and its one write -------------------------------------------

# What the loader needs of a pending file (``StagedFile.pending``), in SELECT order.
PENDING_COLUMNS = ("s3_key", "stream", "shard_id", "first_sequence", "first_sub_sequence",
                   "last_sequence", "last_sub_sequence", "row_count", "byte_count", "staged_at")

PENDING_STATS_SQL = ("SELECT COUNT(*), COALESCE(SUM(byte_count), 0), MIN(staged_at) "
                     "FROM staged_files WHERE target_table = %s AND state = %s")
PENDING_FILES_SQL = (f"SELECT {', '.join(PENDING_COLUMNS)} FROM staged_files "
                     "WHERE target_table = %s AND state = %s "
                     "ORDER BY staged_at, s3_key LIMIT %s")
MARK_LOADED_SQL = ("UPDATE staged_files SET state = %s, load_id = %s, loaded_at = %s "
                   "WHERE target_table = %s AND state = %s AND s3_key IN %s")


@dataclass(kw_only=True)
class StagedFile:
    """One ``staged_files`` row: written by the stage worker, read by the loader.

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

    def __post_init__(self) -> None:
        if not self.state:
            self.state = PENDING if self.row_count > 0 else LOADED
            if self.state == LOADED and self.loaded_at is None:
                self.loaded_at = self.staged_at

    @classmethod
    def pending(cls, target_table: str, row: Sequence[Any]) -> "StagedFile":
        """A row of ``PENDING_FILES_SQL`` (``PENDING_COLUMNS``) for ``target_table``."""
        return cls(target_table=target_table, state=PENDING, **dict(zip(PENDING_COLUMNS, row)))

    def check(self) -> None:
        """An explicit CAST to VARCHAR(n) truncates silently: refuse over-long values instead."""
        for (name, kind), value in zip(_COLUMNS, self.params()):
            if kind.startswith("VARCHAR(") and isinstance(value, str):
                limit = int(kind[8:-1])
                if len(value.encode("utf-8")) > limit:
                    raise ValueError(f"staged_files.{name} would be longer than {limit} bytes: "
                                     f"{value[:80]!r}...")

    def params(self) -> tuple:
        """``INSERT_SQL``'s parameters: ``_COLUMNS``, then the key for NOT EXISTS."""
        return tuple(getattr(self, name) for name, _ in _COLUMNS) + (self.s3_key,)


class Ledger:
    """Idempotent ledger writes over one lazily opened, rebuilt-after-error connection."""

    def __init__(self, connect: Callable[[], Any]):
        self._connect = connect
        self._conn: Any = None

    def record(self, entry: StagedFile) -> bool:
        """Insert the row unless its key is there; True when this call inserted it.

        A connection that went stale while idle (warehouse restart) is rebuilt and
        the insert tried once more (it is idempotent). Any other failure raises:
        ``ServiceUnavailable`` for connection trouble, the driver error otherwise.
        """
        entry.check()
        for attempt in (1, 2):
            reused = self._conn is not None and not self._conn.closed
            try:
                return self._insert(entry)
            except ServiceUnavailable:
                if reused and attempt == 1:
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _insert(self, entry: StagedFile) -> bool:
        import psycopg2

        try:
            with transaction(self, "ledger") as cur:
                cur.execute(INSERT_SQL, entry.params())
                return cur.rowcount == 1
        except psycopg2.IntegrityError:
            # A concurrent worker inserted the same key between our check and insert
            # (the transaction was rolled back).
            return False

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None
