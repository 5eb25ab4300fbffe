"""The control store interface: leases, fenced checkpoints, history, status, the staged-file
ledger, host heartbeats and shard assignments.

Why a store of its own: on Redshift every transaction is SERIALIZABLE, commits queue
cluster-wide (hundreds of ms each) and nothing is indexed, which is the wrong place for
small, frequent, conditional writes. The control plane therefore lives in a store made
for them (DynamoDB, or a PostgreSQL database such as RDS/Aurora), behind this one
interface; ``tests/contract/test_control_store.py`` runs the same contract against every
backend (``memory``, ``postgres``, ``dynamodb``).

Fencing stays as in ``shardline.records.control``: every acquisition bumps the shard's token, and a
checkpoint is one conditional write that renews the lease *only if* owner and token still
match and the lease has not expired; otherwise nothing is written and ``LeaseLost`` is raised.

History ids come from the store (a sequence, an atomic counter) and, per shard, the
checkpoint row only accepts a history id larger than the one it holds, so "newest first"
is a property the store enforces rather than an accident of IDENTITY allocation.

Times are naive UTC datetimes from the injected ``clock`` (epoch seconds), like
``shardline.records.control``; the records (leases, checkpoints, history, the staged-file
ledger entry and its states) are ``shardline.records``', imported and re-exported here for
the backends, not copied.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Callable, Iterable, Mapping

from shardline.errors import LeaseHeld, LeaseLost
from shardline.migrate import SchemaState
from shardline.records.control import SHARD_END, Checkpoint, HistoryEntry, Lease, utc
from shardline.records.ledger import FILE_STATES, LOADED, PENDING, QUARANTINED, StagedFile

__all__ = [
    "SHARD_END", "Checkpoint", "HistoryEntry", "Lease", "StagedFile", "PENDING", "LOADED",
    "QUARANTINED", "STATUS_FIELDS", "ShardStatus", "PendingStats", "Quarantined", "Host",
    "ControlStore",
]  # fmt: skip

# What a consumer reports (the columns of ``shard_status``; ``Control.STATUS_FIELDS``).
# A field's value: text (owner, sequences, state), a count or a rate, None for "unknown".
StatusValue = str | int | float | None
STATUS_FIELDS = ("owner", "last_read_sequence", "checkpoint_sequence", "millis_behind_latest",
                 "iterator_age_ms", "inflight_batches", "inflight_bytes", "records_per_s",
                 "state")


@dataclass(frozen=True)
class ShardStatus:
    """The last report of a shard's consumer; fields it never reported are None."""

    stream: str
    shard_id: str
    updated_at: datetime
    owner: str | None = None
    last_read_sequence: str | None = None
    checkpoint_sequence: str | None = None
    millis_behind_latest: int | None = None
    iterator_age_ms: int | None = None
    inflight_batches: int | None = None
    inflight_bytes: int | None = None
    records_per_s: float | None = None
    state: str | None = None


@dataclass(frozen=True)
class PendingStats:
    """What the loader's trigger looks at: pending files of one table."""

    files: int
    bytes: int
    oldest: datetime | None
    rows: int = 0  # good rows in the pending files (status shows it)


@dataclass(frozen=True)
class Quarantined:
    """A staged file taken out of the load path (its COPY kept failing), with the error."""

    file: StagedFile
    error: str
    quarantined_at: datetime


@dataclass(frozen=True)
class Host:
    """A fleet host's last heartbeat, written by its agent: how the others know it is alive."""

    host_id: str
    renewed_at: datetime
    expires_at: datetime
    info: dict[str, str] = field(default_factory=dict)


def check_status_fields(values: Mapping[str, StatusValue]) -> None:
    unknown = set(values) - set(STATUS_FIELDS)
    if unknown:
        raise TypeError(f"unknown status fields: {sorted(unknown)}")


def lease_held(lease: Lease, now: datetime) -> LeaseHeld:
    """The error ``acquire_lease`` raises when a live lease belongs to someone else."""
    left = ((lease.expires_at or now) - now).total_seconds()
    renewed = f"{lease.renewed_at:%H:%M:%S}" if lease.renewed_at else "?"
    return LeaseHeld(f"shard {lease.shard_id} of stream {lease.stream} is held by {lease.owner} "
                     f"(lease renewed {renewed} UTC, expires in {left:.0f}s); is another "
                     f"consumer running? stop it first, or wait for its lease to expire",
                     expires_in_s=left)


def replay_refused(lease: Lease) -> LeaseHeld:
    return LeaseHeld(f"shard {lease.shard_id} of stream {lease.stream} is held by live consumer "
                     f"{lease.owner}; stop it (supervisorctl stop ...) before a replay")


def lease_lost(stream: str, shard_id: str, token: int) -> LeaseLost:
    return LeaseLost(f"lease on shard {shard_id} of stream {stream} (token {token}) was lost: "
                     f"it expired or another consumer took it")


def replay_entry_checkpoint(cp: Checkpoint | None) -> Checkpoint:
    """What history records for a replay that clears the checkpoint (``cp`` None)."""
    return cp if cp is not None else Checkpoint("TRIM_HORIZON", 0, False)


class ControlStore(abc.ABC):
    """One control store. Implementations are thread-safe; errors reaching the store are
    ``ServiceUnavailable`` (retriable), fencing failures ``LeaseLost`` / ``LeaseHeld``."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock

    def now(self) -> datetime:
        return utc(self.clock())

    def expiry(self, ttl_s: float) -> tuple[datetime, datetime]:
        now = self.now()
        return now, now + timedelta(seconds=ttl_s)

    # -- set-up -----------------------------------------------------------------
    @abc.abstractmethod
    def create_tables(self) -> list[str]:
        """Create what is missing (idempotent); returns the names created now."""

    def schema_state(self) -> SchemaState:
        """Where the store stands against ``create_tables`` (reads only): commands check it
        at start (``shardline.preflight``). A store that creates nothing is current."""
        return SchemaState(fresh=False)

    def describe(self) -> str:
        """Where the store is, for a person (no secrets): "postgres database x, schema y"."""
        return type(self).__name__

    # Deliberately not abstract: a no-op default, overridden only by backends that hold
    # connections (postgres); memory and dynamodb (a botocore client) have none to drop.
    def close(self) -> None:  # noqa: B027 - empty on purpose, see above
        """Drop connections; the next call opens new ones."""

    # -- leases -----------------------------------------------------------------
    @abc.abstractmethod
    def acquire_lease(self, stream: str, shard_id: str, owner: str, ttl_s: float) -> int:
        """Take the shard if free, expired or already ours; returns the new fencing token
        (+1 at every acquisition). ``LeaseHeld`` (with ``expires_in_s``) otherwise."""

    @abc.abstractmethod
    def renew_lease(self, stream: str, shard_id: str, owner: str, token: int,
                    ttl_s: float) -> None:
        """Extend our live lease; ``LeaseLost`` if owner/token differ or it expired."""

    @abc.abstractmethod
    def release_lease(self, stream: str, shard_id: str, owner: str, token: int) -> None:
        """Free the shard if it is still ours (a no-op otherwise); the token is kept."""

    @abc.abstractmethod
    def get_lease(self, stream: str, shard_id: str) -> Lease | None: ...

    @abc.abstractmethod
    def leases(self, stream: str) -> list[Lease]:
        """Every lease of the stream, by shard id."""

    # -- checkpoints ------------------------------------------------------------
    @abc.abstractmethod
    def get_checkpoint(self, stream: str, shard_id: str) -> Checkpoint | None: ...

    @abc.abstractmethod
    def checkpoints(self, stream: str) -> dict[str, Checkpoint]:
        """shard id -> checkpoint, for every shard of the stream that has one (status)."""

    @abc.abstractmethod
    def checkpoint(self, stream: str, shard_id: str, owner: str, token: int, ttl_s: float,
                   cp: Checkpoint, source: str = "consumer") -> int:
        """Fenced write: renew our lease, move the checkpoint and add a history entry, all in
        one conditional write; returns the history id. ``LeaseLost`` and nothing written
        when the lease is not ours any more."""

    @abc.abstractmethod
    def move_checkpoint(self, stream: str, shard_id: str, cp: Checkpoint | None,
                        reason: str) -> int:
        """Replay: set (``cp`` None: clear) the checkpoint; returns the history id.
        ``LeaseHeld`` while a live consumer holds the shard, checked in the same write."""

    @abc.abstractmethod
    def history(self, stream: str, shard_id: str | None = None,
                limit: int = 50) -> list[HistoryEntry]:
        """Checkpoint moves, newest first (by id)."""

    @abc.abstractmethod
    def history_entry(self, entry_id: int) -> HistoryEntry | None: ...

    # -- status -----------------------------------------------------------------
    @abc.abstractmethod
    def report_status(self, stream: str, shard_id: str, **values: StatusValue) -> None:
        """Upsert the shard's status; fields not given keep their value. Unknown names
        (not in ``STATUS_FIELDS``) are a programming error: ``TypeError``."""

    @abc.abstractmethod
    def statuses(self, stream: str) -> list[ShardStatus]:
        """Every status of the stream, by shard id."""

    # -- the staged-file ledger -------------------------------------------------
    @abc.abstractmethod
    def record_file(self, entry: StagedFile) -> bool:
        """Insert unless the key is there (never touching an existing entry); True if this
        call inserted it. Safe under concurrent calls with the same key."""

    @abc.abstractmethod
    def get_file(self, s3_key: str) -> StagedFile | None: ...

    @abc.abstractmethod
    def pending_files(self, target_table: str, limit: int) -> list[StagedFile]:
        """Pending files of the table, oldest first (staged_at, then key)."""

    @abc.abstractmethod
    def pending_stats(self, target_table: str) -> PendingStats: ...

    @abc.abstractmethod
    def mark_loaded(self, target_table: str, s3_keys: Iterable[str], load_id: str) -> int:
        """Flip the given *pending* files of the table to loaded with ``load_id``; files in
        any other state are left alone. Returns how many were flipped."""

    # -- the lake's state of the same files (``lake.tables``; docs/lake.md) -------
    @abc.abstractmethod
    def lake_pending_files(self, target_table: str, limit: int) -> list[StagedFile]:
        """Files of the table still to go to the lake, oldest first (staged_at, then key)."""

    @abc.abstractmethod
    def lake_pending_stats(self, target_table: str) -> PendingStats: ...

    @abc.abstractmethod
    def mark_lake_loaded(self, target_table: str, s3_keys: Iterable[str], load_id: str) -> int:
        """Flip the given lake-pending files of the table to lake-loaded with ``load_id``
        (their warehouse state untouched); returns how many were flipped."""

    @abc.abstractmethod
    def quarantine(self, s3_key: str, error: str) -> bool:
        """Take a pending file out of the load path with its error; True if it was pending."""

    @abc.abstractmethod
    def quarantined(self, target_table: str) -> list[Quarantined]:
        """Quarantined files of the table, oldest staged first."""

    # -- the fleet: heartbeats and the shard assignment the agents share -------------
    @abc.abstractmethod
    def heartbeat(self, host_id: str, ttl_s: float,
                  info: Mapping[str, str] | None = None) -> None:
        """Register or refresh a host; it counts as live for ``ttl_s`` from now."""

    @abc.abstractmethod
    def live_hosts(self) -> list[Host]:
        """Hosts whose heartbeat has not expired, by id."""

    @abc.abstractmethod
    def remove_host(self, host_id: str) -> None: ...

    @abc.abstractmethod
    def assign(self, stream: str, shard_id: str, host_id: str | None) -> None:
        """Set (None: clear) the host that should run the shard's consumer."""

    @abc.abstractmethod
    def assignment(self, stream: str, shard_id: str) -> str | None: ...

    @abc.abstractmethod
    def assignments(self, stream: str) -> dict[str, str]:
        """shard id -> host id for the stream's assigned shards."""

    # -- status's view of the fleet and the ledger (records at the module's end)
    # Read-only queries for ``shardline status``; each is bounded by something small (the
    # hosts, the shards, a recent time window), never by the size of the ledger.
    @abc.abstractmethod
    def hosts(self) -> list[Host]:
        """Every registered host, live or not (a host whose heartbeat stopped stays until
        ``remove_host``), by id; ``Host.expires_at`` tells which are live."""

    @abc.abstractmethod
    def streams(self) -> list[str]:
        """The streams this store knows (any lease or assignment), by name; the pipeline's
        own lease names (``INTERNAL_STREAM_PREFIX``) are left out."""

    @abc.abstractmethod
    def staged_totals(self, target_table: str, since: datetime) -> dict[str, StagedTotals]:
        """stream -> what was staged for the table at or after ``since`` (any state): the
        dead-letter rate of a recent window."""

    @abc.abstractmethod
    def staged_files_since(self, target_table: str, since: datetime) -> list[StagedFile]:
        """Every ledger entry of the table staged at or after ``since`` (any state), by
        staged time: reconciliation's per-hour counts of a window (a record arrives before
        it is staged, so entries staged before the window hold none of its hours)."""

    # -- COPY failures: quarantine that survives a loader restart ------------------
    @abc.abstractmethod
    def count_copy_failure(self, s3_key: str, error: str) -> int:
        """One more failed COPY of a *pending* file, with its (redacted) error, in one
        atomic write; returns the file's count so far, or 0 when the file is not pending
        (loaded, quarantined, unknown: nothing written). Kept in the store, not in the
        loader process, so a loader restarted after every failure still reaches
        ``loader.quarantine_after``."""

    @abc.abstractmethod
    def copy_failures(self, s3_key: str) -> tuple[int, str | None]:
        """(failed COPYs counted so far, the last error) of a file; ``(0, None)`` when
        none were counted or the file is unknown."""

    # -- the upgrade from a warehouse that held the control tables -----------------
    @abc.abstractmethod
    def import_shard_state(self, leases: Iterable[Lease], history: Iterable[HistoryEntry],
                           checkpoints: Iterable["LegacyCheckpoint"]) -> dict[str, int]:
        """Carry leases (with their tokens, released), history entries (with their ids)
        and checkpoints (pointing at those ids) into the store, each inserted only where
        the store has none yet: running it twice, or after the new fleet wrote newer
        state, changes nothing already there. Later history ids are larger than every
        imported one. Returns how many of each were inserted (``shardline migrate`` on a
        warehouse of the release before the control store; ``shardline/upgrade.py``)."""


# -- status's view of the fleet and the ledger ----------------------------------------
# Lease "streams" of the pipeline's own (the loader's lease is stream "@loader"), not Kinesis.
INTERNAL_STREAM_PREFIX = "@"


@dataclass(frozen=True)
class StagedTotals:
    """What was staged for one table and stream in a window (``staged_totals``): files,
    good rows and dead letters, from the ledger's per-file counts."""

    files: int
    rows: int
    dead_letters: int


__all__ += ["FILE_STATES", "INTERNAL_STREAM_PREFIX", "StagedTotals", "StatusValue"]


# -- the upgrade from a warehouse that held the control tables (import_shard_state) --

@dataclass(frozen=True)
class LegacyCheckpoint:
    """A checkpoint as the warehouse of the release before the control store held it."""

    stream: str
    shard_id: str
    checkpoint: Checkpoint  # its updated_at is the row's
    lease_token: int
    history_id: int
