"""The in-flight window and the staged watermark.

Batches enter in read order and may finish in any order (several dispatcher
threads). Only the contiguous prefix of finished batches is safe to checkpoint:
a later batch finishing first must not move the checkpoint past an earlier one
that may still fail. The window's limits (batches, bytes) are the backpressure
that stops reading when the stage workers fall behind. Pure, no threads.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from shardline.codec import Batch
from shardline.records.control import Checkpoint

PENDING, STAGED, FAILED = "pending", "staged", "failed"


@dataclass
class Slot:
    ticket: int
    batch: Batch
    nbytes: int
    state: str = PENDING
    error: str | None = None
    # The consumer's clock when the batch was closed, admitted (dispatched) and staged:
    # the per-batch timeline (where a batch waits), logged at DEBUG.
    closed_at: float = 0.0
    dispatched_at: float = 0.0
    staged_at: float = 0.0


class Window:
    def __init__(self, max_batches: int, max_bytes: int):
        self.max_batches, self.max_bytes = max_batches, max_bytes
        self._slots: "OrderedDict[int, Slot]" = OrderedDict()
        self._next_ticket = 1
        self.inflight_bytes = 0
        self.popped: list[Slot] = []  # staged slots pop_staged_prefix removed; caller clears

    @property
    def inflight_batches(self) -> int:
        return len(self._slots)

    def empty(self) -> bool:
        return not self._slots

    def full(self) -> bool:
        return len(self._slots) >= self.max_batches or self.inflight_bytes >= self.max_bytes

    def can_admit(self, nbytes: int) -> bool:
        """Room for one more batch of ``nbytes``? An empty window always admits one."""
        if not self._slots:
            return True
        return (len(self._slots) < self.max_batches
                and self.inflight_bytes + nbytes <= self.max_bytes)

    def add(self, batch: Batch, nbytes: int, closed_at: float = 0.0, now: float = 0.0) -> int:
        ticket = self._next_ticket
        self._next_ticket += 1
        self._slots[ticket] = Slot(ticket, batch, nbytes, closed_at=closed_at, dispatched_at=now)
        self.inflight_bytes += nbytes
        return ticket

    def staged(self, ticket: int, now: float = 0.0) -> None:
        slot = self._slots.get(ticket)
        if slot is not None and slot.state == PENDING:
            slot.state, slot.staged_at = STAGED, now

    def failed(self, ticket: int, error: str) -> None:
        slot = self._slots.get(ticket)
        if slot is not None:
            slot.state, slot.error = FAILED, error

    def head(self) -> Slot | None:
        return next(iter(self._slots.values()), None)

    def first_failure(self) -> Slot | None:
        return next((s for s in self._slots.values() if s.state == FAILED), None)

    def pop_staged_prefix(self) -> tuple[Checkpoint | None, int]:
        """Remove the contiguous staged prefix; returns (checkpoint after it, records in it)."""
        last = None
        count = 0
        while self._slots:
            ticket, slot = next(iter(self._slots.items()))
            if slot.state != STAGED:
                break
            del self._slots[ticket]
            self.popped.append(slot)
            self.inflight_bytes -= slot.nbytes
            last = slot.batch.last
            count += len(slot.batch.records)
        if last is None:
            return None, 0
        return Checkpoint(last.sequence_number, last.sub_sequence_number,
                          last.closes_sequence), count
