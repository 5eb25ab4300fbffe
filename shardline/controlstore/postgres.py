"""The control store on PostgreSQL: a database of its own (RDS/Aurora, or the local cluster's
``shardline_control``), never the warehouse.

Since this is real PostgreSQL, every conditional write is one statement or one short
transaction of row-level statements: ``INSERT ... ON CONFLICT``, ``UPDATE ... WHERE
token = ...`` with ``RETURNING``; no table locks, and READ COMMITTED suffices because each
decision is made by the row a statement touches. One connection per thread, rebuilt after
a connection error (which surfaces as ``ServiceUnavailable``, retriable). The tables are the
migrations in ``sql/control`` (shipped as ``shardline.sql`` package data).
"""
from __future__ import annotations

import contextlib
import json
import threading
import time
from datetime import datetime
from importlib import resources
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from shardline.errors import ServiceUnavailable
from shardline.lifecycle import first_line, transaction
from shardline.records.ledger import LEDGER_COLUMNS
from shardline.settings import redact_dsn

from .base import LegacyCheckpoint, SchemaState
from .base import (
    LOADED, PENDING, QUARANTINED, STATUS_FIELDS, Checkpoint, ControlStore, HistoryEntry, Host,
    Lease, PendingStats, Quarantined, ShardStatus, StagedFile, check_status_fields, lease_held,
    lease_lost, replay_entry_checkpoint, replay_refused,
)  # fmt: skip
from .base import FILE_STATES, INTERNAL_STREAM_PREFIX, StagedTotals, StatusValue

if TYPE_CHECKING:  # psycopg2 is untyped (types-psycopg2 is not a dependency): these are Any
    from psycopg2.extensions import connection, cursor

SQL_DIR = resources.files("shardline.sql") / "control"

_LEASE_COLS = "stream, shard_id, owner, token, renewed_at, expires_at"
_HISTORY_COLS = ("id, stream, shard_id, sequence_number, sub_sequence_number, closes_sequence, "
                 "source, reason, lease_token, created_at")
_FILE_COLS = tuple(c.name for c in LEDGER_COLUMNS)  # a ``StagedFile``'s fields
_SELECT_FILES = f"SELECT {', '.join(_FILE_COLS)} FROM staged_files"


def _file(row: tuple[Any, ...]) -> StagedFile:
    return StagedFile(**dict(zip(_FILE_COLS, row, strict=True)))


class PostgresStore(ControlStore):
    def __init__(self, dsn: str, schema: str = "public", connect_timeout_s: int = 10,
                 clock: Callable[[], float] = time.time):
        super().__init__(clock)
        self.dsn, self.schema, self.connect_timeout_s = dsn, schema, connect_timeout_s
        self._local = threading.local()
        self._all: set[connection] = set()
        self._all_lock = threading.Lock()

    # -- plumbing ---------------------------------------------------------------
    def _connect(self) -> connection:
        import psycopg2

        try:
            conn = psycopg2.connect(self.dsn, connect_timeout=self.connect_timeout_s,
                                    options=f"-c search_path={self.schema} "
                                            "-c default_transaction_isolation=read\\ committed")
        except psycopg2.OperationalError as exc:
            raise ServiceUnavailable(f"control store {redact_dsn(self.dsn)}: "
                                     f"{first_line(exc)}") from None
        conn.autocommit = False
        with self._all_lock:
            self._all.add(conn)
        return conn

    def tx(self) -> contextlib.AbstractContextManager[cursor]:
        """A cursor in a transaction on this thread's connection (``lifecycle.transaction``:
        commit on success, rollback on error, a lost connection is ``ServiceUnavailable``
        and the next call opens a new one)."""
        holder: _ThreadConnection | None = getattr(self._local, "holder", None)
        if holder is None:
            holder = self._local.holder = _ThreadConnection(self)
        return transaction(holder, "control store")

    def _drop(self, conn: connection | None) -> None:
        if conn is not None:
            with self._all_lock:
                self._all.discard(conn)
            with contextlib.suppress(Exception):
                conn.close()

    def close(self) -> None:
        with self._all_lock:
            conns, self._all = list(self._all), set()
        for conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
        self._local = threading.local()

    def create_tables(self) -> list[str]:
        from shardline import migrate

        conn = self._connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            return migrate.migrate(conn, "postgres", SQL_DIR)
        finally:
            self._drop(conn)

    def schema_state(self) -> SchemaState:
        from shardline import migrate

        conn = self._connect()  # search_path: the store's schema (none yet: fresh)
        try:
            return migrate.schema_state(conn, SQL_DIR)
        finally:
            self._drop(conn)

    def describe(self) -> str:
        from shardline.migrate import describe_postgres

        return describe_postgres("postgres", self.dsn, self.schema)

    # -- leases -----------------------------------------------------------------
    def acquire_lease(self, stream: str, shard_id: str, owner: str, ttl_s: float) -> int:
        now, expires = self.expiry(ttl_s)
        with self.tx() as cur:
            cur.execute("INSERT INTO shard_leases AS l (stream, shard_id, owner, token, "
                        "acquired_at, renewed_at, expires_at) VALUES (%s,%s,%s,1,%s,%s,%s) "
                        "ON CONFLICT (stream, shard_id) DO UPDATE SET owner = EXCLUDED.owner, "
                        "token = l.token + 1, acquired_at = EXCLUDED.acquired_at, "
                        "renewed_at = EXCLUDED.renewed_at, expires_at = EXCLUDED.expires_at "
                        "WHERE l.owner IS NULL OR l.owner = EXCLUDED.owner "
                        "OR l.expires_at IS NULL OR l.expires_at <= EXCLUDED.acquired_at "
                        "RETURNING token", (stream, shard_id, owner, now, now, expires))
            row = cur.fetchone()
            if row is not None:
                return int(row[0])
            lease = self._get_lease(cur, stream, shard_id)
        assert lease is not None  # the row the insert conflicted with (leases are never deleted)
        raise lease_held(lease, now)

    @staticmethod
    def _get_lease(cur: cursor, stream: str, shard_id: str, lock: bool = False) -> Lease | None:
        cur.execute(f"SELECT {_LEASE_COLS} FROM shard_leases WHERE stream = %s AND shard_id = %s"
                    + (" FOR UPDATE" if lock else ""), (stream, shard_id))
        row = cur.fetchone()
        return Lease(*row) if row else None

    def _renew(self, cur: cursor, stream: str, shard_id: str, owner: str, token: int,
               ttl_s: float) -> None:
        now, expires = self.expiry(ttl_s)
        cur.execute("UPDATE shard_leases SET renewed_at = %s, expires_at = %s "
                    "WHERE stream = %s AND shard_id = %s AND owner = %s AND token = %s "
                    "AND expires_at > %s", (now, expires, stream, shard_id, owner, token, now))
        if cur.rowcount != 1:
            raise lease_lost(stream, shard_id, token)

    def renew_lease(self, stream: str, shard_id: str, owner: str, token: int,
                    ttl_s: float) -> None:
        with self.tx() as cur:
            self._renew(cur, stream, shard_id, owner, token, ttl_s)

    def release_lease(self, stream: str, shard_id: str, owner: str, token: int) -> None:
        with self.tx() as cur:
            cur.execute("UPDATE shard_leases SET owner = NULL, expires_at = %s WHERE stream = %s "
                        "AND shard_id = %s AND owner = %s AND token = %s",
                        (self.now(), stream, shard_id, owner, token))

    def get_lease(self, stream: str, shard_id: str) -> Lease | None:
        with self.tx() as cur:
            return self._get_lease(cur, stream, shard_id)

    def leases(self, stream: str) -> list[Lease]:
        with self.tx() as cur:
            cur.execute(f"SELECT {_LEASE_COLS} FROM shard_leases WHERE stream = %s "
                        "ORDER BY shard_id", (stream,))
            return [Lease(*row) for row in cur.fetchall()]

    # -- checkpoints ------------------------------------------------------------
    def get_checkpoint(self, stream: str, shard_id: str) -> Checkpoint | None:
        with self.tx() as cur:
            cur.execute("SELECT sequence_number, sub_sequence_number, closes_sequence, updated_at "
                        "FROM checkpoints WHERE stream = %s AND shard_id = %s", (stream, shard_id))
            row = cur.fetchone()
            return Checkpoint(*row) if row else None

    def checkpoints(self, stream: str) -> dict[str, Checkpoint]:
        with self.tx() as cur:
            cur.execute("SELECT shard_id, sequence_number, sub_sequence_number, closes_sequence, "
                        "updated_at FROM checkpoints WHERE stream = %s ORDER BY shard_id",
                        (stream,))
            return {row[0]: Checkpoint(*row[1:]) for row in cur.fetchall()}

    def _write(self, cur: cursor, stream: str, shard_id: str, cp: Checkpoint | None, source: str,
               reason: str | None, token: int | None) -> int:
        now, shown = self.now(), replay_entry_checkpoint(cp)
        cur.execute("INSERT INTO checkpoint_history (stream, shard_id, sequence_number, "
                    "sub_sequence_number, closes_sequence, source, reason, lease_token, "
                    "created_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
                    (stream, shard_id, shown.sequence_number, shown.sub_sequence_number,
                     shown.closes_sequence, source, reason, token, now))
        entry_id = int(cur.fetchone()[0])
        if cp is None:
            cur.execute("DELETE FROM checkpoints WHERE stream = %s AND shard_id = %s",
                        (stream, shard_id))
            return entry_id
        cur.execute("INSERT INTO checkpoints AS c (stream, shard_id, sequence_number, "
                    "sub_sequence_number, closes_sequence, lease_token, history_id, updated_at) "
                    "VALUES (%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (stream, shard_id) DO UPDATE "
                    "SET sequence_number = EXCLUDED.sequence_number, "
                    "sub_sequence_number = EXCLUDED.sub_sequence_number, "
                    "closes_sequence = EXCLUDED.closes_sequence, "
                    "lease_token = EXCLUDED.lease_token, history_id = EXCLUDED.history_id, "
                    "updated_at = EXCLUDED.updated_at WHERE c.history_id < EXCLUDED.history_id",
                    (stream, shard_id, cp.sequence_number, cp.sub_sequence_number,
                     cp.closes_sequence, token or 0, entry_id, now))
        if cur.rowcount != 1:
            raise lease_lost(stream, shard_id, token or 0)  # a newer write got there first
        return entry_id

    def checkpoint(self, stream: str, shard_id: str, owner: str, token: int, ttl_s: float,
                   cp: Checkpoint, source: str = "consumer") -> int:
        with self.tx() as cur:
            self._renew(cur, stream, shard_id, owner, token, ttl_s)  # row-locks the lease
            return self._write(cur, stream, shard_id, cp, source, None, token)

    def move_checkpoint(self, stream: str, shard_id: str, cp: Checkpoint | None,
                        reason: str) -> int:
        with self.tx() as cur:
            # A lease row to lock even for a shard never taken, so no consumer starts between
            # the check and the write (its acquire waits on this row lock).
            cur.execute("INSERT INTO shard_leases (stream, shard_id, owner, token) "
                        "VALUES (%s, %s, NULL, 0) ON CONFLICT DO NOTHING", (stream, shard_id))
            lease = self._get_lease(cur, stream, shard_id, lock=True)
            if lease is not None and lease.live(self.now()):
                raise replay_refused(lease)
            return self._write(cur, stream, shard_id, cp, "replay", reason, None)

    def history(self, stream: str, shard_id: str | None = None,
                limit: int = 50) -> list[HistoryEntry]:
        sql, params = f"SELECT {_HISTORY_COLS} FROM checkpoint_history WHERE stream = %s", [stream]
        if shard_id is not None:
            sql += " AND shard_id = %s"
            params.append(shard_id)
        with self.tx() as cur:
            cur.execute(sql + " ORDER BY id DESC LIMIT %s", params + [limit])
            return [HistoryEntry(*row) for row in cur.fetchall()]

    def history_entry(self, entry_id: int) -> HistoryEntry | None:
        with self.tx() as cur:
            cur.execute(f"SELECT {_HISTORY_COLS} FROM checkpoint_history WHERE id = %s",
                        (entry_id,))
            row = cur.fetchone()
            return HistoryEntry(*row) if row else None

    # -- status -----------------------------------------------------------------
    def report_status(self, stream: str, shard_id: str, **values: StatusValue) -> None:
        check_status_fields(values)
        cols = [c for c in STATUS_FIELDS if c in values] + ["updated_at"]
        vals = [values[c] for c in cols[:-1]] + [self.now()]
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in cols)
        with self.tx() as cur:
            cur.execute(f"INSERT INTO shard_status (stream, shard_id, {', '.join(cols)}) "
                        f"VALUES (%s, %s, {', '.join(['%s'] * len(cols))}) "
                        f"ON CONFLICT (stream, shard_id) DO UPDATE SET {updates}",
                        [stream, shard_id] + vals)

    def statuses(self, stream: str) -> list[ShardStatus]:
        with self.tx() as cur:
            cur.execute(f"SELECT stream, shard_id, updated_at, {', '.join(STATUS_FIELDS)} "
                        "FROM shard_status WHERE stream = %s ORDER BY shard_id", (stream,))
            return [ShardStatus(*row) for row in cur.fetchall()]

    # -- the staged-file ledger -------------------------------------------------
    def record_file(self, entry: StagedFile) -> bool:
        entry.check()
        with self.tx() as cur:
            cur.execute(f"INSERT INTO staged_files ({', '.join(_FILE_COLS)}) "
                        f"VALUES ({', '.join(['%s'] * len(_FILE_COLS))}) "
                        "ON CONFLICT (s3_key) DO NOTHING RETURNING s3_key",
                        [getattr(entry, c) for c in _FILE_COLS])
            return cur.fetchone() is not None

    def get_file(self, s3_key: str) -> StagedFile | None:
        with self.tx() as cur:
            cur.execute(f"{_SELECT_FILES} WHERE s3_key = %s", (s3_key,))
            row = cur.fetchone()
            return _file(row) if row else None

    def pending_files(self, target_table: str, limit: int) -> list[StagedFile]:
        with self.tx() as cur:
            cur.execute(f"{_SELECT_FILES} WHERE target_table = %s AND state = %s "
                        "ORDER BY staged_at, s3_key LIMIT %s", (target_table, PENDING, limit))
            return [_file(row) for row in cur.fetchall()]

    def pending_stats(self, target_table: str) -> PendingStats:
        with self.tx() as cur:
            cur.execute("SELECT COUNT(*), COALESCE(SUM(byte_count), 0), MIN(staged_at), "
                        "COALESCE(SUM(row_count), 0) FROM staged_files "
                        "WHERE target_table = %s AND state = %s", (target_table, PENDING))
            files, size, oldest, rows = cur.fetchone()
            return PendingStats(int(files), int(size), oldest, int(rows))

    def mark_loaded(self, target_table: str, s3_keys: Iterable[str], load_id: str) -> int:
        keys = sorted(set(s3_keys))
        if not keys:
            return 0
        with self.tx() as cur:
            cur.execute("UPDATE staged_files SET state = %s, load_id = %s, loaded_at = %s "
                        "WHERE target_table = %s AND state = %s AND s3_key = ANY(%s)",
                        (LOADED, load_id, self.now(), target_table, PENDING, keys))
            return int(cur.rowcount)

    def lake_pending_files(self, target_table: str, limit: int) -> list[StagedFile]:
        with self.tx() as cur:
            cur.execute(f"{_SELECT_FILES} WHERE target_table = %s AND lake_state = %s "
                        "ORDER BY staged_at, s3_key LIMIT %s", (target_table, PENDING, limit))
            return [_file(row) for row in cur.fetchall()]

    def lake_pending_stats(self, target_table: str) -> PendingStats:
        with self.tx() as cur:
            cur.execute("SELECT COUNT(*), COALESCE(SUM(byte_count), 0), MIN(staged_at), "
                        "COALESCE(SUM(row_count), 0) FROM staged_files "
                        "WHERE target_table = %s AND lake_state = %s", (target_table, PENDING))
            files, size, oldest, rows = cur.fetchone()
            return PendingStats(int(files), int(size), oldest, int(rows))

    def mark_lake_loaded(self, target_table: str, s3_keys: Iterable[str], load_id: str) -> int:
        keys = sorted(set(s3_keys))
        if not keys:
            return 0
        with self.tx() as cur:
            cur.execute("UPDATE staged_files SET lake_state = %s, lake_load_id = %s, "
                        "lake_loaded_at = %s WHERE target_table = %s AND lake_state = %s "
                        "AND s3_key = ANY(%s)",
                        (LOADED, load_id, self.now(), target_table, PENDING, keys))
            return int(cur.rowcount)

    def quarantine(self, s3_key: str, error: str) -> bool:
        with self.tx() as cur:
            cur.execute("UPDATE staged_files SET state = %s, error = %s, quarantined_at = %s "
                        "WHERE s3_key = %s AND state = %s",
                        (QUARANTINED, error, self.now(), s3_key, PENDING))
            return int(cur.rowcount) == 1

    def quarantined(self, target_table: str) -> list[Quarantined]:
        with self.tx() as cur:
            cur.execute(f"SELECT {', '.join(_FILE_COLS)}, error, quarantined_at FROM staged_files "
                        "WHERE target_table = %s AND state = %s ORDER BY staged_at, s3_key",
                        (target_table, QUARANTINED))
            return [Quarantined(_file(row[:-2]), row[-2], row[-1]) for row in cur.fetchall()]

    # -- the fleet --------------------------------------------------------------
    def heartbeat(self, host_id: str, ttl_s: float,
                  info: Mapping[str, str] | None = None) -> None:
        now, expires = self.expiry(ttl_s)
        with self.tx() as cur:
            cur.execute("INSERT INTO hosts (host_id, info, renewed_at, expires_at) "
                        "VALUES (%s, %s, %s, %s) ON CONFLICT (host_id) DO UPDATE SET "
                        "info = EXCLUDED.info, renewed_at = EXCLUDED.renewed_at, "
                        "expires_at = EXCLUDED.expires_at",
                        (host_id, json.dumps(dict(info or {})), now, expires))

    def live_hosts(self) -> list[Host]:
        with self.tx() as cur:
            cur.execute("SELECT host_id, renewed_at, expires_at, info FROM hosts "
                        "WHERE expires_at > %s ORDER BY host_id", (self.now(),))
            return [Host(*row) for row in cur.fetchall()]

    def remove_host(self, host_id: str) -> None:
        with self.tx() as cur:
            cur.execute("DELETE FROM hosts WHERE host_id = %s", (host_id,))

    def assign(self, stream: str, shard_id: str, host_id: str | None) -> None:
        with self.tx() as cur:
            if host_id is None:
                cur.execute("DELETE FROM shard_assignments WHERE stream = %s AND shard_id = %s",
                            (stream, shard_id))
                return
            cur.execute("INSERT INTO shard_assignments (stream, shard_id, host_id, updated_at) "
                        "VALUES (%s, %s, %s, %s) ON CONFLICT (stream, shard_id) DO UPDATE SET "
                        "host_id = EXCLUDED.host_id, updated_at = EXCLUDED.updated_at",
                        (stream, shard_id, host_id, self.now()))

    def assignment(self, stream: str, shard_id: str) -> str | None:
        with self.tx() as cur:
            cur.execute("SELECT host_id FROM shard_assignments WHERE stream = %s "
                        "AND shard_id = %s", (stream, shard_id))
            row = cur.fetchone()
            return row[0] if row else None

    def assignments(self, stream: str) -> dict[str, str]:
        with self.tx() as cur:
            cur.execute("SELECT shard_id, host_id FROM shard_assignments WHERE stream = %s "
                        "ORDER BY shard_id", (stream,))
            return dict(cur.fetchall())

    # -- status's view of the fleet and the ledger --------------------------------
    def hosts(self) -> list[Host]:
        with self.tx() as cur:
            cur.execute("SELECT host_id, renewed_at, expires_at, info FROM hosts "
                        "ORDER BY host_id")
            return [Host(*row) for row in cur.fetchall()]

    def streams(self) -> list[str]:
        # Both tables hold a row per shard (not per record): small, whatever the traffic.
        with self.tx() as cur:
            cur.execute("SELECT stream FROM shard_leases UNION SELECT stream "
                        "FROM shard_assignments ORDER BY 1")
            return [s for (s,) in cur.fetchall() if not s.startswith(INTERNAL_STREAM_PREFIX)]

    def staged_totals(self, target_table: str, since: datetime) -> dict[str, StagedTotals]:
        # state = ANY(every state) lets the (target_table, state, staged_at) index serve the
        # time range (one index range per state), so this reads the window, not the ledger.
        with self.tx() as cur:
            cur.execute("SELECT stream, COUNT(*), COALESCE(SUM(row_count), 0), "
                        "COALESCE(SUM(dead_letter_count), 0) FROM staged_files "
                        "WHERE target_table = %s AND state = ANY(%s) AND staged_at >= %s "
                        "GROUP BY stream ORDER BY stream",
                        (target_table, list(FILE_STATES), since))
            return {s: StagedTotals(int(f), int(r), int(d)) for s, f, r, d in cur.fetchall()}


    def staged_files_since(self, target_table: str, since: datetime) -> list[StagedFile]:
        # the (target_table, state, staged_at) index serves the range, as in staged_totals
        with self.tx() as cur:
            cur.execute(f"{_SELECT_FILES} WHERE target_table = %s AND state = ANY(%s) "
                        "AND staged_at >= %s ORDER BY staged_at, s3_key",
                        (target_table, list(FILE_STATES), since))
            return [_file(row) for row in cur.fetchall()]

    # -- COPY failures -----------------------------------------------------------
    def count_copy_failure(self, s3_key: str, error: str) -> int:
        with self.tx() as cur:
            cur.execute("UPDATE staged_files SET copy_failures = copy_failures + 1, "
                        "last_copy_error = %s WHERE s3_key = %s AND state = %s "
                        "RETURNING copy_failures", (error, s3_key, PENDING))
            row = cur.fetchone()
            return int(row[0]) if row else 0

    def copy_failures(self, s3_key: str) -> tuple[int, str | None]:
        with self.tx() as cur:
            cur.execute("SELECT copy_failures, last_copy_error FROM staged_files "
                        "WHERE s3_key = %s", (s3_key,))
            row = cur.fetchone()
            return (int(row[0]), row[1]) if row else (0, None)

    # -- the upgrade from a warehouse that held the control tables -----------------
    def import_shard_state(self, leases: Iterable[Lease], history: Iterable[HistoryEntry],
                           checkpoints: Iterable[LegacyCheckpoint]) -> dict[str, int]:
        done = {"leases": 0, "history": 0, "checkpoints": 0}
        with self.tx() as cur:  # one transaction: all of it or none
            for lease in leases:
                cur.execute("INSERT INTO shard_leases (stream, shard_id, owner, token, "
                            "renewed_at, expires_at) VALUES (%s, %s, NULL, %s, %s, %s) "
                            "ON CONFLICT DO NOTHING", (lease.stream, lease.shard_id,
                                                       lease.token, lease.renewed_at,
                                                       lease.expires_at))
                done["leases"] += cur.rowcount
            for e in history:
                cur.execute(f"INSERT INTO checkpoint_history ({_HISTORY_COLS}) VALUES "
                            "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                            (e.id, e.stream, e.shard_id, e.sequence_number,
                             e.sub_sequence_number, e.closes_sequence, e.source, e.reason,
                             e.lease_token, e.created_at))
                done["history"] += cur.rowcount
            # ids given explicitly do not move the sequence: the next one must be larger
            cur.execute("SELECT setval(pg_get_serial_sequence('checkpoint_history', 'id'), "
                        "GREATEST((SELECT COALESCE(MAX(id), 0) FROM checkpoint_history), "
                        "(SELECT last_value FROM checkpoint_history_id_seq)), true)")
            for c in checkpoints:
                cp = c.checkpoint
                cur.execute("INSERT INTO checkpoints (stream, shard_id, sequence_number, "
                            "sub_sequence_number, closes_sequence, lease_token, history_id, "
                            "updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                            "ON CONFLICT DO NOTHING",
                            (c.stream, c.shard_id, cp.sequence_number, cp.sub_sequence_number,
                             cp.closes_sequence, c.lease_token, c.history_id,
                             cp.updated_at or self.now()))
                done["checkpoints"] += cur.rowcount
        return done


class _ThreadConnection:
    """One thread's connection, in the shape ``lifecycle.transaction`` works on."""

    def __init__(self, store: PostgresStore):
        self._store = store
        self._conn: connection | None = None
        self._connect: Callable[[], connection] = store._connect

    def close(self) -> None:
        conn, self._conn = self._conn, None
        self._store._drop(conn)
