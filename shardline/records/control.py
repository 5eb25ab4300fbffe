"""The control records: leases (with their fencing token), checkpoints and their history.

The store that keeps them is ``shardline.controlstore`` (DynamoDB or a PostgreSQL database of
its own, never the warehouse); these are the records every backend and caller share.
Times are naive UTC datetimes (``utc``).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

SHARD_END = "SHARD_END"


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
