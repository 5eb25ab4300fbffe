"""Group records into batches by count, bytes and age: one Gearman job carries many records.

Batching is what makes Gearman cheap (~1 M records/s in 500-record jobs versus
~3,000 one-record jobs/s). A batch never exceeds ``max_bytes`` of data unless a
single record alone does. Pure: the caller passes ``now``.
"""
from __future__ import annotations

from typing import Iterable

from shardline.codec import Batch, Record


class Batcher:
    def __init__(self, stream: str, shard_id: str, max_records: int, max_bytes: int,
                 max_age_s: float):
        self.stream, self.shard_id = stream, shard_id
        self.max_records, self.max_bytes, self.max_age_s = max_records, max_bytes, max_age_s
        self._records: list[Record] = []
        self._bytes = 0
        self._opened_at: float | None = None
        self._closed: list[Batch] = []

    def __len__(self) -> int:
        return len(self._records)

    def add(self, records: Iterable[Record], now: float) -> None:
        for rec in records:
            size = len(rec.data)
            if self._records and self._bytes + size > self.max_bytes:
                self._close()
            if not self._records:
                self._opened_at = now
            self._records.append(rec)
            self._bytes += size
            if len(self._records) >= self.max_records or self._bytes >= self.max_bytes:
                self._close()

    def _close(self) -> None:
        if self._records:
            self._closed.append(Batch(self.stream, self.shard_id, self._records))
        self._records, self._bytes, self._opened_at = [], 0, None

    def age_s(self, now: float) -> float:
        return 0.0 if self._opened_at is None else now - self._opened_at

    def take(self, now: float, *, flush: bool = False) -> list[Batch]:
        """Closed batches, plus the open one when it is old enough (or ``flush``)."""
        if self._records and (flush or self.age_s(now) >= self.max_age_s):
            self._close()
        out, self._closed = self._closed, []
        return out
