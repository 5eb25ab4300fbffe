"""Pure "every N seconds (or N records)" objects: the loop asks, they never sleep.

Keeping time decisions out of the loop body lets tests drive them with a fake clock.
"""
from __future__ import annotations


class Every:
    """Due once ``interval_s`` has passed since the last ``mark``; due at once if never marked."""

    def __init__(self, interval_s: float, *, start_due: bool = True):
        self.interval_s = interval_s
        self.last: float | None = None
        self._start_due = start_due

    def due(self, now: float) -> bool:
        if self.last is None:
            return self._start_due
        return now - self.last >= self.interval_s

    def mark(self, now: float) -> None:
        self.last = now

    def remaining(self, now: float) -> float:
        """Seconds until due (0 when due)."""
        if self.last is None:
            return 0.0 if self._start_due else self.interval_s
        return max(0.0, self.interval_s - (now - self.last))


class CheckpointCadence:
    """Checkpoint when ``interval_s`` passed or ``every_records`` were staged since the last one.

    ``start`` marks the clock at startup so the first checkpoint is not immediate.
    """

    def __init__(self, interval_s: float, every_records: int):
        self.interval_s = interval_s
        self.every_records = every_records
        self.last: float | None = None
        self.pending_records = 0

    def start(self, now: float) -> None:
        self.last = now

    def staged(self, records: int) -> None:
        self.pending_records += records

    def due(self, now: float) -> bool:
        if self.pending_records <= 0:
            return False
        if self.pending_records >= self.every_records:
            return True
        return self.last is None or now - self.last >= self.interval_s

    def mark(self, now: float) -> None:
        self.last = now
        self.pending_records = 0
