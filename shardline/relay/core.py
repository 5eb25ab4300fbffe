"""The relay's engine, apart from its sockets: validate a line, queue it, commit the queue to
the journal (one fsync per group), acknowledge, and feed the producer.

``Relay.offer`` never waits: it answers at once whether the line was taken (queued for
the next commit) or why not. ``Relay.step(now)`` is one cycle: the group commit, the
acknowledgements (``on_commit``), the events put into the producer while it has room, and
the journal segments deleted once the producer has made their events durable. It never
sleeps; the server calls it once lines are queued and on a short tick.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Generic, TypeVar

import orjson

from shardline.logs import get_logger
from shardline.producer import Producer
from shardline.relay.journal import Journal

log = get_logger("relay")

# What the producer drops after put() accepted an event: its sequence number then counts
# as durable although the event is neither in Kinesis nor in the spool.
LATE_DROPS = ("spool_full", "refused", "close")

T = TypeVar("T")


@dataclass(frozen=True)
class Refusal:
    reason: str   # invalid, too_large, full, stopping
    text: str


@dataclass(frozen=True)
class Accepted:
    event_id: str
    key: str
    line: bytes   # compact JSON and a newline, as journaled


@dataclass
class Counts:
    accepted: int = 0
    accepted_bytes: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    commits: int = 0
    shipped: int = 0


class ProducerDropped(Exception):
    """The producer dropped events it had accepted: the journal keeps them for the next
    start to ship again."""


def parse(line: bytes, max_bytes: int, assign_ids: bool) -> Accepted | Refusal:
    """One line of a client (without its newline) -> the event to journal, or why not."""
    if len(line) > max_bytes:
        return Refusal("too_large", f"the line has more than {max_bytes} bytes")
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        return Refusal("invalid", "not JSON")
    if not isinstance(event, dict):
        return Refusal("invalid", "not a JSON object")
    eid = event.get("event_id")
    if eid is None:
        if not assign_ids:
            return Refusal("invalid", "no event_id")
        # Random, but written to the journal: a re-send after a crash keeps it.
        eid = event["event_id"] = str(uuid.uuid4())
        data = orjson.dumps(event)
    elif not isinstance(eid, str) or not eid:
        return Refusal("invalid", "event_id must be a non-empty string")
    else:
        data = bytes(line).strip()   # as sent (a CR of a CRLF client stripped)
    key = event.get("session_id") or eid
    return Accepted(eid, key if isinstance(key, str) else str(key), data + b"\n")


class Relay(Generic[T]):
    """``T``: what the server passes along with an event to find its client again."""

    def __init__(self, journal: Journal, producer: Producer, *, max_pending_bytes: int,
                 on_commit: Callable[[list[T]], None],
                 clock: Callable[[], float] = time.monotonic):
        self.journal = journal
        self.producer = producer
        self.max_pending = max_pending_bytes
        self.on_commit = on_commit
        self.clock = clock
        self.counts = Counts()
        self._lock = threading.Lock()
        self._queue: list[tuple[Accepted, T]] = []
        self._queued_bytes = 0
        self._held = 0                     # journal bytes not yet released
        self._backlog: deque[tuple[int, str, bytes]] = deque()  # (segment, key, line)
        self._stopping = False
        self._room = producer.config.max_buffer_bytes

    # -- start --------------------------------------------------------------

    def recover(self) -> int:
        """Queue what a previous run journaled for shipping again; how many events."""
        got = self.journal.recover(self.clock())
        for n, line in got.events:
            event = orjson.loads(line)
            key = event.get("session_id") or event.get("event_id") or "relay"
            self._backlog.append((n, str(key), line + b"\n"))
        self._held = self.journal.held_bytes()
        return len(got.events)

    # -- the server's side: never waits ------------------------------------

    def offer(self, line: bytes, token: T, max_bytes: int, assign_ids: bool
              ) -> Accepted | Refusal:
        got = parse(line, max_bytes, assign_ids)
        with self._lock:
            if isinstance(got, Accepted):
                size = len(got.line)
                if self._stopping:
                    got = Refusal("stopping", "the relay is stopping")
                elif self._held + self._queued_bytes + size > self.max_pending:
                    got = Refusal("full", "the relay's journal is full (Kinesis is behind)")
                else:
                    self._queue.append((got, token))
                    self._queued_bytes += size
                    return got
            self.counts.refused[got.reason] = self.counts.refused.get(got.reason, 0) + 1
        return got

    def depth_bytes(self) -> int:
        """Bytes acknowledged or about to be that the producer has not made durable."""
        return self._held + self._queued_bytes

    # -- the committing thread ------------------------------------------------

    def step(self, now: float) -> bool:
        """Commit, acknowledge, ship, release; True if it did anything."""
        with self._lock:
            batch, self._queue = self._queue, []
            nbytes, self._queued_bytes = self._queued_bytes, 0
            self._held += nbytes
        busy = bool(batch)
        if batch:
            n = self.journal.append(now, [a.line for a, _ in batch])
            self.counts.commits += 1
            self.counts.accepted += len(batch)
            self.counts.accepted_bytes += nbytes
            self._backlog.extend((n, a.key, a.line) for a, _ in batch)
            self.on_commit([token for _, token in batch])
        busy |= self._ship()
        self._release(now)
        return busy

    def _ship(self) -> bool:
        """Put the backlog into the producer while it has room (never a counted drop)."""
        shipped = 0
        p = self.producer
        room = self._room - p.stats()["buffered_bytes"]
        while self._backlog:
            n, key, line = self._backlog[0]
            size = len(line) + len(key)
            if size > room:
                break
            if not p.put(line[:-1], partition_key=key):
                break
            self._backlog.popleft()
            self.journal.shipped(n, p.accepted_seq)
            room -= size
            shipped += 1
        self.counts.shipped += shipped
        return shipped > 0

    def _release(self, now: float) -> None:
        # The pump counts a drop before it publishes the sequence number covering it, so
        # reading durable_seq first and the drops second never misses one.
        durable = self.producer.durable_seq
        late = sum(self.producer.dropped[k] for k in LATE_DROPS)
        if late:
            raise ProducerDropped(f"the producer dropped {late} accepted event(s) "
                                  f"({dict(self.producer.dropped)}): stopping with them in "
                                  f"the journal, for the next start to ship again")
        freed = self.journal.release(now, durable)
        if freed:
            with self._lock:
                self._held -= freed

    def close(self) -> None:
        """Refuse what is offered from now on; ship what the producer takes in its close
        time, and delete what became durable; the rest stays journaled."""
        with self._lock:
            self._stopping = True
        self._ship()
        self.producer.close()
        try:
            self._release(self.clock() + self.journal.segment_age_s)
        except ProducerDropped as exc:
            log.info("%s", exc)
        self.journal.close()
