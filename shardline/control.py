"""The control tables: shard leases, fenced checkpoints, history, status, the staged-file ledger.

Every checkpoint write runs in one transaction that first renews our lease
*conditionally on our fencing token*; if that touches no row, someone else owns
the shard and nothing is written (``LeaseLost``). So two consumers on one shard
can never both checkpoint.

Times are UTC from an injectable clock (naive datetimes in TIMESTAMP columns).
SQL is the subset PostgreSQL and Redshift share (no RETURNING, no ON CONFLICT).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from shardline.errors import LeaseHeld, LeaseLost
from shardline.lifecycle import transaction

SHARD_END = "SHARD_END"

# The one table lock statement per dialect (``Control.lock``): lease changes and replays
# lock shard_leases, the loader its target table (one load per table at a time).
_LOCK = {
    "postgres": "LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE",
    "redshift": "LOCK {table}",
}


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class Lease:
    stream: str
    shard_id: str
    owner: str | None
    token: int
    renewed_at: datetime | None
    expires_at: datetime | None

    def live(self, now: datetime) -> bool:
        return self.owner is not None and self.expires_at is not None and self.expires_at > now


@dataclass(frozen=True)
class Checkpoint:
    sequence_number: str
    sub_sequence_number: int
    closes_sequence: bool
    updated_at: datetime | None = None

    @property
    def shard_end(self) -> bool:
        return self.sequence_number == SHARD_END


@dataclass(frozen=True)
class HistoryEntry:
    id: int
    stream: str
    shard_id: str
    sequence_number: str
    sub_sequence_number: int
    closes_sequence: bool
    source: str
    reason: str | None
    lease_token: int | None
    created_at: datetime


class Control:
    """Control-table access over one warehouse connection (rebuilt after errors)."""

    def __init__(self, connect: Callable[[], Any], dialect: str = "postgres",
                 clock: Callable[[], float] = time.time):
        self._connect = connect
        self._conn: Any = None
        self.dialect = dialect
        self.clock = clock

    # -- plumbing -------------------------------------------------------------
    def tx(self) -> contextlib.AbstractContextManager[Any]:
        """A cursor in a transaction; commit on success, rollback on error.

        A lost connection becomes ``ServiceUnavailable`` (retriable) and the
        connection is rebuilt on the next call.
        """
        return transaction(self, "control tables")

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None

    def now(self) -> datetime:
        return utc(self.clock())

    def lock(self, cur: Any, table: str) -> None:
        cur.execute(_LOCK[self.dialect].format(table=table))

    # -- leases ---------------------------------------------------------------
    def get_lease(self, stream: str, shard_id: str) -> Lease | None:
        with self.tx() as cur:
            return self._get_lease(cur, stream, shard_id)

    def leases(self, stream: str) -> list[Lease]:
        with self.tx() as cur:
            cur.execute("SELECT stream, shard_id, owner, token, renewed_at, expires_at "
                        "FROM shard_leases WHERE stream = %s ORDER BY shard_id", (stream,))
            return [Lease(*row) for row in cur.fetchall()]

    @staticmethod
    def _get_lease(cur: Any, stream: str, shard_id: str) -> Lease | None:
        cur.execute("SELECT stream, shard_id, owner, token, renewed_at, expires_at "
                    "FROM shard_leases WHERE stream = %s AND shard_id = %s", (stream, shard_id))
        row = cur.fetchone()
        return Lease(*row) if row else None

    def acquire_lease(self, stream: str, shard_id: str, owner: str, ttl_s: float) -> int:
        """Take the shard if free or expired; returns the new fencing token.

        Raises ``LeaseHeld`` naming the live owner otherwise.
        """
        now = self.now()
        expires = now + timedelta(seconds=ttl_s)
        with self.tx() as cur:
            self.lock(cur, "shard_leases")
            lease = self._get_lease(cur, stream, shard_id)
            if lease is None:
                token = 1
                cur.execute("INSERT INTO shard_leases (stream, shard_id, owner, token, "
                            "acquired_at, renewed_at, expires_at) VALUES (%s,%s,%s,%s,%s,%s,%s)",
                            (stream, shard_id, owner, token, now, now, expires))
                return token
            if lease.live(now) and lease.owner != owner:
                left = (lease.expires_at - now).total_seconds()
                raise LeaseHeld(f"shard {shard_id} of stream {stream} is held by {lease.owner} "
                                f"(lease renewed {lease.renewed_at:%H:%M:%S} UTC, expires in "
                                f"{left:.0f}s); is another consumer running? stop it first, or "
                                f"wait for its lease to expire", expires_in_s=left)
            token = lease.token + 1
            cur.execute("UPDATE shard_leases SET owner = %s, token = %s, acquired_at = %s, "
                        "renewed_at = %s, expires_at = %s WHERE stream = %s AND shard_id = %s",
                        (owner, token, now, now, expires, stream, shard_id))
            return token

    def _renew(self, cur: Any, stream: str, shard_id: str, owner: str, token: int,
               ttl_s: float) -> None:
        now = self.now()
        cur.execute("UPDATE shard_leases SET renewed_at = %s, expires_at = %s "
                    "WHERE stream = %s AND shard_id = %s AND owner = %s AND token = %s "
                    "AND expires_at > %s",
                    (now, now + timedelta(seconds=ttl_s), stream, shard_id, owner, token, now))
        if cur.rowcount != 1:
            raise LeaseLost(f"lease on shard {shard_id} of stream {stream} (token {token}) was "
                            f"lost: it expired or another consumer took it")

    def renew_lease(self, stream: str, shard_id: str, owner: str, token: int,
                    ttl_s: float) -> None:
        with self.tx() as cur:
            self._renew(cur, stream, shard_id, owner, token, ttl_s)

    def release_lease(self, stream: str, shard_id: str, owner: str, token: int) -> None:
        with self.tx() as cur:
            cur.execute("UPDATE shard_leases SET owner = NULL, expires_at = %s "
                        "WHERE stream = %s AND shard_id = %s AND owner = %s AND token = %s",
                        (self.now(), stream, shard_id, owner, token))

    # -- checkpoints ----------------------------------------------------------
    def get_checkpoint(self, stream: str, shard_id: str) -> Checkpoint | None:
        with self.tx() as cur:
            cur.execute("SELECT sequence_number, sub_sequence_number, closes_sequence, updated_at "
                        "FROM checkpoints WHERE stream = %s AND shard_id = %s", (stream, shard_id))
            row = cur.fetchone()
            return Checkpoint(*row) if row else None

    def checkpoints(self, stream: str) -> dict[str, Checkpoint]:
        """shard id -> checkpoint for every shard of the stream that has one (the same call
        as ``ControlStore.checkpoints``, so the agent reads either)."""
        with self.tx() as cur:
            cur.execute("SELECT shard_id, sequence_number, sub_sequence_number, closes_sequence, "
                        "updated_at FROM checkpoints WHERE stream = %s ORDER BY shard_id",
                        (stream,))
            return {row[0]: Checkpoint(*row[1:]) for row in cur.fetchall()}

    def checkpoint(self, stream: str, shard_id: str, owner: str, token: int, ttl_s: float,
                   cp: Checkpoint, source: str = "consumer") -> None:
        """Fenced write: renews our lease and moves the checkpoint, or raises ``LeaseLost``."""
        with self.tx() as cur:
            self._renew(cur, stream, shard_id, owner, token, ttl_s)
            self._write_checkpoint(cur, stream, shard_id, cp, source, None, token)

    def _write_checkpoint(self, cur: Any, stream: str, shard_id: str, cp: Checkpoint,
                          source: str, reason: str | None, token: int | None) -> None:
        now = self.now()
        cur.execute("INSERT INTO checkpoint_history (stream, shard_id, sequence_number, "
                    "sub_sequence_number, closes_sequence, source, reason, lease_token, "
                    "created_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    (stream, shard_id, cp.sequence_number, cp.sub_sequence_number,
                     cp.closes_sequence, source, reason, token, now))
        params = (cp.sequence_number, cp.sub_sequence_number, cp.closes_sequence, token or 0, now,
                  stream, shard_id)
        cur.execute("UPDATE checkpoints SET sequence_number = %s, sub_sequence_number = %s, "
                    "closes_sequence = %s, lease_token = %s, updated_at = %s "
                    "WHERE stream = %s AND shard_id = %s", params)
        if cur.rowcount == 0:
            cur.execute("INSERT INTO checkpoints (sequence_number, sub_sequence_number, "
                        "closes_sequence, lease_token, updated_at, stream, shard_id) "
                        "VALUES (%s,%s,%s,%s,%s,%s,%s)", params)

    def move_checkpoint(self, stream: str, shard_id: str, cp: Checkpoint | None,
                        reason: str) -> None:
        """Replay: set (or with ``cp`` None, clear) the checkpoint; refuses while a live
        consumer holds the shard. The lease table lock keeps a consumer from starting
        in between."""
        with self.tx() as cur:
            self.lock(cur, "shard_leases")
            lease = self._get_lease(cur, stream, shard_id)
            if lease is not None and lease.live(self.now()):
                raise LeaseHeld(f"shard {shard_id} of stream {stream} is held by live consumer "
                                f"{lease.owner}; stop it (supervisorctl stop ...) before a replay")
            if cp is None:
                cur.execute("DELETE FROM checkpoints WHERE stream = %s AND shard_id = %s",
                            (stream, shard_id))
                cur.execute("INSERT INTO checkpoint_history (stream, shard_id, sequence_number, "
                            "sub_sequence_number, closes_sequence, source, reason, created_at) "
                            "VALUES (%s,%s,'TRIM_HORIZON',0,false,'replay',%s,%s)",
                            (stream, shard_id, reason, self.now()))
            else:
                self._write_checkpoint(cur, stream, shard_id, cp, "replay", reason, None)

    def history(self, stream: str, shard_id: str | None = None,
                limit: int = 50) -> list[HistoryEntry]:
        sql = ("SELECT id, stream, shard_id, sequence_number, sub_sequence_number, "
               "closes_sequence, source, reason, lease_token, created_at "
               "FROM checkpoint_history WHERE stream = %s")
        params: list[Any] = [stream]
        if shard_id:
            sql += " AND shard_id = %s"
            params.append(shard_id)
        sql += " ORDER BY id DESC LIMIT %s"
        params.append(limit)
        with self.tx() as cur:
            cur.execute(sql, params)
            return [HistoryEntry(*row) for row in cur.fetchall()]

    def history_entry(self, entry_id: int) -> HistoryEntry | None:
        with self.tx() as cur:
            cur.execute("SELECT id, stream, shard_id, sequence_number, sub_sequence_number, "
                        "closes_sequence, source, reason, lease_token, created_at "
                        "FROM checkpoint_history WHERE id = %s", (entry_id,))
            row = cur.fetchone()
            return HistoryEntry(*row) if row else None

    # -- status ---------------------------------------------------------------
    STATUS_FIELDS = ("owner", "last_read_sequence", "checkpoint_sequence", "millis_behind_latest",
                     "iterator_age_ms", "inflight_batches", "inflight_bytes", "records_per_s",
                     "state")

    def report_status(self, stream: str, shard_id: str, **values: Any) -> None:
        """Upsert the shard's status row; unknown field names are a programming error."""
        unknown = set(values) - set(self.STATUS_FIELDS)
        if unknown:
            raise TypeError(f"unknown status fields: {sorted(unknown)}")
        cols = [c for c in self.STATUS_FIELDS if c in values] + ["updated_at"]
        vals = [values[c] for c in cols[:-1]] + [self.now()]
        with self.tx() as cur:
            cur.execute(f"UPDATE shard_status SET {', '.join(f'{c} = %s' for c in cols)} "
                        "WHERE stream = %s AND shard_id = %s", vals + [stream, shard_id])
            if cur.rowcount == 0:
                cur.execute(f"INSERT INTO shard_status (stream, shard_id, {', '.join(cols)}) "
                            f"VALUES (%s, %s, {', '.join(['%s'] * len(cols))})",
                            [stream, shard_id] + vals)
