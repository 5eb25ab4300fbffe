"""The shard lease: who may read and checkpoint this shard.

The owner is ``host:pid:uuid``; the token returned at acquisition is the fencing
token every checkpoint carries. A renewal that finds the lease gone raises
``LeaseLost``; when the control tables are unreachable we keep trying, but once
the lease could have expired (ttl since the last good renewal) we must assume
another consumer took it and stop.
"""
from __future__ import annotations

import os
import socket
import uuid
from shardline.controlstore.base import ControlStore
from shardline.errors import LeaseLost, ServiceUnavailable
from shardline.logs import ContextLogger


def make_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class LeaseKeeper:
    def __init__(self, control: ControlStore, stream: str, shard_id: str, owner: str,
                 ttl_s: float, renew_s: float, log: ContextLogger | None = None):
        self.control, self.stream, self.shard_id = control, stream, shard_id
        self.owner, self.ttl_s, self.renew_s, self.log = owner, ttl_s, renew_s, log
        self.token: int | None = None
        self.renewed_at: float | None = None  # loop clock of the last good renewal
        self.renewals = 0

    def acquire(self, now: float) -> int:
        """Raises ``LeaseHeld`` (naming the owner) if another live consumer has the shard."""
        self.token = self.control.acquire_lease(self.stream, self.shard_id, self.owner,
                                                self.ttl_s)
        self.renewed_at = now
        return self.token

    def due(self, now: float) -> bool:
        return self.renewed_at is None or now - self.renewed_at >= self.renew_s

    def renewed(self, now: float) -> None:
        """A fenced checkpoint renews the lease too."""
        self.renewed_at = now

    def maybe_renew(self, now: float) -> None:
        if self.token is None or not self.due(now):
            return
        try:
            self.control.renew_lease(self.stream, self.shard_id, self.owner, self.token,
                                     self.ttl_s)
        except ServiceUnavailable as exc:
            # Keep a margin of one renew period for clock skew with the database.
            if self.renewed_at is not None and now - self.renewed_at >= self.ttl_s - self.renew_s:
                raise LeaseLost(f"lease on shard {self.shard_id} could not be renewed for "
                                f"{now - self.renewed_at:.0f}s ({exc}); assuming it is lost") \
                    from None
            if self.log is not None:
                self.log.warning("lease renewal failed, will retry: %s", exc)
            return
        self.renewed_at = now
        self.renewals += 1

    def release(self) -> None:
        if self.token is None:
            return
        try:
            self.control.release_lease(self.stream, self.shard_id, self.owner, self.token)
        except ServiceUnavailable as exc:
            if self.log is not None:
                self.log.warning("lease release failed (it will expire): %s", exc)
        self.token = None
