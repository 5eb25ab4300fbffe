"""An in-memory control store for unit tests of its callers (like dramatiq's StubBroker).

Same contract as the real backends (the contract suite runs against it too), one lock
around plain dicts, nothing persisted. Entries are copied in and out, so a caller
mutating a returned object cannot change the store.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping

from .base import LegacyCheckpoint
from .base import (
    LOADED, PENDING, QUARANTINED, STATUS_FIELDS, Checkpoint, ControlStore, HistoryEntry, Host,
    Lease, PendingStats, Quarantined, ShardStatus, StagedFile, check_status_fields, lease_held,
    lease_lost, replay_entry_checkpoint, replay_refused,
)  # fmt: skip
from .base import INTERNAL_STREAM_PREFIX, StagedTotals, StatusValue  # status's views


class MemoryStore(ControlStore):
    def __init__(self, clock: Callable[[], float] = time.time):
        super().__init__(clock)
        self._lock = threading.Lock()
        self._leases: dict[tuple[str, str], Lease] = {}
        self._checkpoints: dict[tuple[str, str], tuple[Checkpoint, int]] = {}
        self._history: dict[int, HistoryEntry] = {}
        self._next_id = 1
        self._status: dict[tuple[str, str], dict[str, Any]] = {}
        self._files: dict[str, StagedFile] = {}
        self._errors: dict[str, tuple[str, datetime]] = {}
        self._hosts: dict[str, Host] = {}
        self._assignments: dict[tuple[str, str], str] = {}
        self._copy_failures: dict[str, tuple[int, str]] = {}

    def create_tables(self) -> list[str]:
        return []

    # -- leases -----------------------------------------------------------------
    def acquire_lease(self, stream: str, shard_id: str, owner: str, ttl_s: float) -> int:
        now, expires = self.expiry(ttl_s)
        with self._lock:
            lease = self._leases.get((stream, shard_id))
            if lease is not None and lease.live(now) and lease.owner != owner:
                raise lease_held(lease, now)
            token = (lease.token if lease else 0) + 1
            self._leases[(stream, shard_id)] = Lease(stream, shard_id, owner, token, now, expires)
            return token

    def _renew(self, stream: str, shard_id: str, owner: str, token: int, ttl_s: float) -> None:
        now, expires = self.expiry(ttl_s)
        lease = self._leases.get((stream, shard_id))
        if lease is None or lease.owner != owner or lease.token != token or not lease.live(now):
            raise lease_lost(stream, shard_id, token)
        self._leases[(stream, shard_id)] = dataclasses.replace(lease, renewed_at=now,
                                                               expires_at=expires)

    def renew_lease(self, stream: str, shard_id: str, owner: str, token: int,
                    ttl_s: float) -> None:
        with self._lock:
            self._renew(stream, shard_id, owner, token, ttl_s)

    def release_lease(self, stream: str, shard_id: str, owner: str, token: int) -> None:
        with self._lock:
            lease = self._leases.get((stream, shard_id))
            if lease is not None and lease.owner == owner and lease.token == token:
                self._leases[(stream, shard_id)] = dataclasses.replace(
                    lease, owner=None, expires_at=self.now())

    def get_lease(self, stream: str, shard_id: str) -> Lease | None:
        with self._lock:
            return self._leases.get((stream, shard_id))

    def leases(self, stream: str) -> list[Lease]:
        with self._lock:
            return [lease for (s, _), lease in sorted(self._leases.items()) if s == stream]

    # -- checkpoints ------------------------------------------------------------
    def get_checkpoint(self, stream: str, shard_id: str) -> Checkpoint | None:
        with self._lock:
            found = self._checkpoints.get((stream, shard_id))
            return found[0] if found else None

    def checkpoints(self, stream: str) -> dict[str, Checkpoint]:
        with self._lock:
            return {shard: cp for (s, shard), (cp, _) in sorted(self._checkpoints.items())
                    if s == stream}

    def _write(self, stream: str, shard_id: str, cp: Checkpoint | None, source: str,
               reason: str | None, token: int | None) -> int:
        now = self.now()
        entry_id, self._next_id = self._next_id, self._next_id + 1
        shown = replay_entry_checkpoint(cp)
        self._history[entry_id] = HistoryEntry(
            entry_id, stream, shard_id, shown.sequence_number, shown.sub_sequence_number,
            shown.closes_sequence, source, reason, token, now)
        if cp is None:
            self._checkpoints.pop((stream, shard_id), None)
        else:
            self._checkpoints[(stream, shard_id)] = (dataclasses.replace(cp, updated_at=now),
                                                     entry_id)
        return entry_id

    def checkpoint(self, stream: str, shard_id: str, owner: str, token: int, ttl_s: float,
                   cp: Checkpoint, source: str = "consumer") -> int:
        with self._lock:
            self._renew(stream, shard_id, owner, token, ttl_s)
            return self._write(stream, shard_id, cp, source, None, token)

    def move_checkpoint(self, stream: str, shard_id: str, cp: Checkpoint | None,
                        reason: str) -> int:
        with self._lock:
            lease = self._leases.get((stream, shard_id))
            if lease is not None and lease.live(self.now()):
                raise replay_refused(lease)
            return self._write(stream, shard_id, cp, "replay", reason, None)

    def history(self, stream: str, shard_id: str | None = None,
                limit: int = 50) -> list[HistoryEntry]:
        with self._lock:
            found = [e for _, e in sorted(self._history.items(), reverse=True)
                     if e.stream == stream and (shard_id is None or e.shard_id == shard_id)]
            return found[:limit]

    def history_entry(self, entry_id: int) -> HistoryEntry | None:
        with self._lock:
            return self._history.get(entry_id)

    # -- status -----------------------------------------------------------------
    def report_status(self, stream: str, shard_id: str, **values: StatusValue) -> None:
        check_status_fields(values)
        with self._lock:
            row = self._status.setdefault((stream, shard_id), {})
            row.update(values, updated_at=self.now())

    def statuses(self, stream: str) -> list[ShardStatus]:
        with self._lock:
            return [ShardStatus(s, shard, row["updated_at"],
                                **{k: row.get(k) for k in STATUS_FIELDS})
                    for (s, shard), row in sorted(self._status.items()) if s == stream]

    # -- the staged-file ledger -------------------------------------------------
    def record_file(self, entry: StagedFile) -> bool:
        entry.check()
        with self._lock:
            if entry.s3_key in self._files:
                return False
            self._files[entry.s3_key] = dataclasses.replace(entry)
            return True

    def get_file(self, s3_key: str) -> StagedFile | None:
        with self._lock:
            found = self._files.get(s3_key)
            return dataclasses.replace(found) if found else None

    def _in_state(self, target_table: str, state: str) -> list[StagedFile]:
        return sorted((f for f in self._files.values()
                       if f.target_table == target_table and f.state == state),
                      key=lambda f: (f.staged_at, f.s3_key))

    def pending_files(self, target_table: str, limit: int) -> list[StagedFile]:
        with self._lock:
            return [dataclasses.replace(f) for f in self._in_state(target_table, PENDING)[:limit]]

    def pending_stats(self, target_table: str) -> PendingStats:
        with self._lock:
            files = self._in_state(target_table, PENDING)
            return PendingStats(len(files), sum(f.byte_count for f in files),
                                files[0].staged_at if files else None,
                                sum(f.row_count for f in files))

    def mark_loaded(self, target_table: str, s3_keys: Iterable[str], load_id: str) -> int:
        with self._lock:
            now, flipped = self.now(), 0
            for key in set(s3_keys):
                f = self._files.get(key)
                if f is not None and f.target_table == target_table and f.state == PENDING:
                    self._files[key] = dataclasses.replace(f, state=LOADED, load_id=load_id,
                                                           loaded_at=now)
                    flipped += 1
            return flipped

    def _lake_pending(self, target_table: str) -> list[StagedFile]:
        return sorted((f for f in self._files.values()
                       if f.target_table == target_table and f.lake_state == PENDING),
                      key=lambda f: (f.staged_at, f.s3_key))

    def lake_pending_files(self, target_table: str, limit: int) -> list[StagedFile]:
        with self._lock:
            return [dataclasses.replace(f) for f in self._lake_pending(target_table)[:limit]]

    def lake_pending_stats(self, target_table: str) -> PendingStats:
        with self._lock:
            files = self._lake_pending(target_table)
            return PendingStats(len(files), sum(f.byte_count for f in files),
                                files[0].staged_at if files else None,
                                sum(f.row_count for f in files))

    def mark_lake_loaded(self, target_table: str, s3_keys: Iterable[str], load_id: str) -> int:
        with self._lock:
            now, flipped = self.now(), 0
            for key in set(s3_keys):
                f = self._files.get(key)
                if f is not None and f.target_table == target_table and \
                        f.lake_state == PENDING:
                    self._files[key] = dataclasses.replace(
                        f, lake_state=LOADED, lake_load_id=load_id, lake_loaded_at=now)
                    flipped += 1
            return flipped

    def quarantine(self, s3_key: str, error: str) -> bool:
        with self._lock:
            f = self._files.get(s3_key)
            if f is None or f.state != PENDING:
                return False
            self._files[s3_key] = dataclasses.replace(f, state=QUARANTINED)
            self._errors[s3_key] = (error, self.now())
            return True

    def quarantined(self, target_table: str) -> list[Quarantined]:
        with self._lock:
            return [Quarantined(dataclasses.replace(f), *self._errors[f.s3_key])
                    for f in self._in_state(target_table, QUARANTINED)]

    # -- the fleet --------------------------------------------------------------
    def heartbeat(self, host_id: str, ttl_s: float,
                  info: Mapping[str, str] | None = None) -> None:
        now, expires = self.expiry(ttl_s)
        with self._lock:
            self._hosts[host_id] = Host(host_id, now, expires, dict(info or {}))

    def live_hosts(self) -> list[Host]:
        with self._lock:
            now = self.now()
            return [h for _, h in sorted(self._hosts.items()) if h.expires_at > now]

    def remove_host(self, host_id: str) -> None:
        with self._lock:
            self._hosts.pop(host_id, None)

    def assign(self, stream: str, shard_id: str, host_id: str | None) -> None:
        with self._lock:
            if host_id is None:
                self._assignments.pop((stream, shard_id), None)
            else:
                self._assignments[(stream, shard_id)] = host_id

    def assignment(self, stream: str, shard_id: str) -> str | None:
        with self._lock:
            return self._assignments.get((stream, shard_id))

    def assignments(self, stream: str) -> dict[str, str]:
        with self._lock:
            return {shard: h for (s, shard), h in sorted(self._assignments.items())
                    if s == stream}

    # -- status's view of the fleet and the ledger --------------------------------
    def hosts(self) -> list[Host]:
        with self._lock:
            return [h for _, h in sorted(self._hosts.items())]

    def streams(self) -> list[str]:
        with self._lock:
            names = {s for s, _ in self._leases} | {s for s, _ in self._assignments}
        return sorted(n for n in names if not n.startswith(INTERNAL_STREAM_PREFIX))

    def staged_totals(self, target_table: str, since: datetime) -> dict[str, StagedTotals]:
        files: Counter[str] = Counter()
        rows: Counter[str] = Counter()
        dead: Counter[str] = Counter()
        with self._lock:
            for f in self._files.values():
                if f.target_table == target_table and f.staged_at >= since:
                    files[f.stream] += 1
                    rows[f.stream] += f.row_count
                    dead[f.stream] += f.dead_letter_count or 0
        return {s: StagedTotals(files[s], rows[s], dead[s]) for s in sorted(files)}

    def staged_files_since(self, target_table: str, since: datetime) -> list[StagedFile]:
        with self._lock:
            return [dataclasses.replace(f) for f in sorted(
                self._files.values(), key=lambda f: (f.staged_at, f.s3_key))
                if f.target_table == target_table and f.staged_at >= since]

    # -- COPY failures -----------------------------------------------------------
    def count_copy_failure(self, s3_key: str, error: str) -> int:
        with self._lock:
            f = self._files.get(s3_key)
            if f is None or f.state != PENDING:
                return 0
            n = self._copy_failures.get(s3_key, (0, ""))[0] + 1
            self._copy_failures[s3_key] = (n, error)
            return n

    def copy_failures(self, s3_key: str) -> tuple[int, str | None]:
        with self._lock:
            return self._copy_failures.get(s3_key, (0, None))

    # -- the upgrade from a warehouse that held the control tables -----------------
    def import_shard_state(self, leases: Iterable[Lease], history: Iterable[HistoryEntry],
                           checkpoints: Iterable[LegacyCheckpoint]) -> dict[str, int]:
        done = {"leases": 0, "history": 0, "checkpoints": 0}
        with self._lock:
            for lease in leases:
                if (lease.stream, lease.shard_id) not in self._leases:
                    self._leases[(lease.stream, lease.shard_id)] = dataclasses.replace(
                        lease, owner=None)
                    done["leases"] += 1
            for entry in history:
                if entry.id not in self._history:
                    self._history[entry.id] = entry
                    done["history"] += 1
                self._next_id = max(self._next_id, entry.id + 1)
            for c in checkpoints:
                if (c.stream, c.shard_id) not in self._checkpoints:
                    self._checkpoints[(c.stream, c.shard_id)] = (c.checkpoint, c.history_id)
                    done["checkpoints"] += 1
        return done
