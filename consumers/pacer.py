"""Per-shard GetRecords pacing: at most N calls/s and B bytes/s (AWS: 5 calls, 2 MB).

Two token buckets on an injected clock. Calls are spaced (capacity one call) so no
one-second window ever holds more than the limit; bytes are only known after a
call, so the byte bucket may go into debt and the next call waits until it is paid.
Pure: ``wait_s(now)`` says how long to wait, the caller decides how to wait.
"""
from __future__ import annotations


class Pacer:
    def __init__(self, calls_per_s: float, bytes_per_s: float):
        if calls_per_s <= 0 or bytes_per_s <= 0:
            raise ValueError("rates must be positive")
        self.call_interval = 1.0 / calls_per_s
        self.bytes_per_s = float(bytes_per_s)
        self._next_call_at: float | None = None
        self._byte_tokens = float(bytes_per_s)  # start with one second of budget
        self._bytes_at: float | None = None

    def _refill(self, now: float) -> None:
        if self._bytes_at is not None:
            self._byte_tokens = min(self.bytes_per_s,
                                    self._byte_tokens + (now - self._bytes_at) * self.bytes_per_s)
        self._bytes_at = now

    def wait_s(self, now: float) -> float:
        """Seconds until the next call is allowed (0.0: go)."""
        self._refill(now)
        call_wait = 0.0 if self._next_call_at is None else max(0.0, self._next_call_at - now)
        byte_wait = 0.0 if self._byte_tokens >= 0 else -self._byte_tokens / self.bytes_per_s
        return max(call_wait, byte_wait)

    def record(self, now: float, nbytes: int) -> None:
        """Account for one call made at ``now`` that returned ``nbytes``."""
        self._refill(now)
        self._next_call_at = now + self.call_interval
        self._byte_tokens -= nbytes
