"""The relay's journal: what it acknowledged, on disk before the acknowledgement.

Append-only segment files ``<n>.jsonl`` in the state directory, one event per line
(compact JSON, the ``event_id`` the relay may have added included). ``append`` writes a
group of lines and ``fdatasync``s them once (the group commit); only then does the relay
answer OK. A segment is deleted once every event in it is durable in the producer
(acknowledged by Kinesis or in the producer's spool); what is left at a start was
acknowledged but perhaps not shipped, and is shipped again (the same event ids: the
loader's dedup keeps one row). A line torn by a crash was never acknowledged: recovery
drops an unterminated last line and any line that is not a JSON object.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import orjson

from shardline.logs import get_logger

log = get_logger("relay")

SUFFIX = ".jsonl"


@dataclass
class Segment:
    n: int
    path: str
    opened_at: float
    bytes: int = 0
    unshipped: int = 0   # events in it not yet accepted by the producer
    last_seq: int = 0    # the producer's sequence number of its last event put
    closed: bool = False


@dataclass
class Recovered:
    events: list[tuple[int, bytes]] = field(default_factory=list)   # (segment n, line)
    torn: int = 0


class Journal:
    def __init__(self, directory: str, segment_bytes: int, segment_age_s: float):
        self.dir = directory
        self.segment_bytes = segment_bytes
        self.segment_age_s = segment_age_s
        self.segments: dict[int, Segment] = {}
        self.current: Segment | None = None
        self._fd = -1

    # -- start --------------------------------------------------------------

    def recover(self, now: float) -> Recovered:
        """The events of the segments a previous run left, in order; they stay on disk
        (closed) until the producer has made them durable."""
        out = Recovered()
        names = sorted((int(name[:-len(SUFFIX)]), name) for name in os.listdir(self.dir)
                       if name.endswith(SUFFIX) and name[:-len(SUFFIX)].isdigit())
        for n, name in names:
            path = os.path.join(self.dir, name)
            with open(path, "rb") as f:
                data = f.read()
            lines = data.split(b"\n")
            if lines[-1]:
                out.torn += 1   # written, never fsynced whole, never acknowledged
            seg = Segment(n, path, now, bytes=len(data), closed=True)
            for line in lines[:-1]:
                try:
                    ok = isinstance(orjson.loads(line), dict)
                except orjson.JSONDecodeError:
                    ok = False
                if not ok:
                    out.torn += 1
                    continue
                out.events.append((n, line))
                seg.unshipped += 1
            self.segments[n] = seg
        if out.torn:
            log.warning("journal: %d torn line(s) dropped (written by a process killed before "
                        "it acknowledged them)", out.torn)
        return out

    # -- the group commit ---------------------------------------------------

    def append(self, now: float, lines: list[bytes]) -> int:
        """Write ``lines`` (each ends with a newline) and make them durable; the segment's
        number (every line of one call goes to one segment)."""
        seg = self._writable(now)
        data = b"".join(lines)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fdatasync(self._fd)
        seg.bytes += len(data)
        seg.unshipped += len(lines)
        return seg.n

    def _writable(self, now: float) -> Segment:
        seg = self.current
        if seg is not None and (seg.bytes >= self.segment_bytes or
                                (seg.bytes and now - seg.opened_at >= self.segment_age_s)):
            self._close_current()
            seg = None
        if seg is None:
            n = max(self.segments, default=0) + 1
            path = os.path.join(self.dir, f"{n:012d}{SUFFIX}")
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            _fsync_dir(self.dir)   # the new name survives a power loss too
            seg = self.current = self.segments[n] = Segment(n, path, now)
        return seg

    def _close_current(self) -> None:
        if self.current is not None:
            os.close(self._fd)
            self._fd = -1
            self.current.closed = True
            self.current = None

    # -- shipping -----------------------------------------------------------

    def shipped(self, n: int, seq: int) -> None:
        """One event of segment ``n`` was accepted by the producer as ``seq``."""
        seg = self.segments[n]
        seg.unshipped -= 1
        seg.last_seq = max(seg.last_seq, seq)

    def release(self, now: float, durable_seq: int) -> int:
        """Delete every segment whose events are all durable in the producer; bytes freed.
        The current segment is closed first once it is old enough."""
        cur = self.current
        if cur is not None and cur.bytes and now - cur.opened_at >= self.segment_age_s:
            self._close_current()
        freed = 0
        for n, seg in list(self.segments.items()):
            if seg.closed and seg.unshipped == 0 and seg.last_seq <= durable_seq:
                os.unlink(seg.path)
                del self.segments[n]
                freed += seg.bytes
        return freed

    def held_bytes(self) -> int:
        return sum(seg.bytes for seg in self.segments.values())

    def close(self) -> None:
        self._close_current()


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
