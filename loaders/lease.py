"""A loader's table lease in the control store: one loader per (target, table) at a time,
shared by the warehouse loader (``@loader``) and the lake loader (``@lake``).

``hold()`` takes the lease, or renews it once a quarter of its TTL has passed since the
last renewal (so a loader's ``step()`` can call it every time without a store call each
time); ``taken`` says the lease is new to this process (the caller then reconciles: the
previous holder may have died between its commit and its ledger update).
"""
from __future__ import annotations

import contextlib
from typing import Callable

from shardline.controlstore import ControlStore
from shardline.errors import LeaseHeld, LeaseLost
from shardline.logs import ContextLogger


class TableLease:
    def __init__(self, store: ControlStore, name: str, table: str, owner: str, ttl_s: float,
                 clock: Callable[[], float], log: ContextLogger):
        self.store, self.name, self.table, self.owner = store, name, table, owner
        self.ttl_s, self.clock, self.log = ttl_s, clock, log
        self.token: int | None = None
        self.renewed = 0.0
        self.taken = False  # set by hold() when it acquired the lease (not a renewal)

    def hold(self) -> bool:
        """Take or renew the lease; False while another loader holds it."""
        now = self.clock()
        self.taken = False
        if self.token is not None:
            if now - self.renewed < self.ttl_s / 4:
                return True
            try:
                self.store.renew_lease(self.name, self.table, self.owner, self.token,
                                       self.ttl_s)
                self.renewed = now
                return True
            except LeaseLost:
                self.log.warning("%s lease lost (token %d); standing by", self.name,
                                 self.token)
                self.token = None
        try:
            self.token = self.store.acquire_lease(self.name, self.table, self.owner, self.ttl_s)
        except LeaseHeld:
            return False
        self.renewed = now
        self.taken = True
        return True

    def release(self) -> None:
        if self.token is not None:
            with contextlib.suppress(Exception):
                self.store.release_lease(self.name, self.table, self.owner, self.token)
            self.token = None
