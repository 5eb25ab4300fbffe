"""The producer's disk spool: segments of user records, sent oldest first, kept across restarts.

Layout: ``<dir>/slot-N/`` per live process (claimed with ``flock`` on ``slot-N/lock``,
so a pre-forking server's workers each get their own, and a SIGKILLed process's
slot, released by the kernel, is claimed by the next one to start), holding
segment files ``<ns>-<pid>-<n>.seg`` (names sort oldest first) and, per segment,
``.ack``: the byte offset up to which its records reached Kinesis.

A segment is a sequence of frames ``<u32 length><u32 crc32(payload)><payload>``,
payload ``<u64 seq><u16 key length><key utf-8><data>``. Recovery reads complete
frames only: a short or corrupt frame ends the segment (a torn tail from a kill
mid-write); it is counted (``torn``) and logged, never sent. Writes are one
``os.write`` per background cycle; ``fsync`` runs at most ``sync_interval_s`` after a
write (0: after every write), so a machine crash loses at most that much of what
was spooled; a killed process loses nothing that was written.

Everything here runs on the producer's background thread; nothing is shared.
"""
from __future__ import annotations

import fcntl
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from shardline.errors import ConfigError
from shardline.logs import get_logger
from shardline.producer.kpl import Record

log = get_logger("producer.spool")

_HEAD = struct.Struct("<II")
_META = struct.Struct("<QH")
MAX_SLOTS = 4096


@dataclass
class Chunk:
    """Records read from one segment, ``start``..``end`` bytes; acked as a whole."""

    segment: Path
    start: int
    end: int
    records: list[Record]
    outstanding: int = 0
    failed: bool = False
    batches: list[object] = field(default_factory=list)

    @property
    def first_seq(self) -> int:
        return self.records[0][0] if self.records else 0


class Spool:
    """One process's spool slot under ``root``; see the module docstring."""

    def __init__(self, root: str | os.PathLike[str], *, segment_bytes: int = 16 * 1024 * 1024,
                 max_bytes: int = 1024 ** 3, sync_interval_s: float = 0.2,
                 clock: Callable[[], float] = time.monotonic):
        self.root = Path(root)
        self.segment_bytes, self.max_bytes = segment_bytes, max_bytes
        self.sync_interval_s, self.clock = sync_interval_s, clock
        self.slot: Path | None = None
        self._lock_fd: int | None = None
        self._fd: int | None = None          # active segment, being appended to
        self._active: Path | None = None
        self._active_size = 0
        self._segments: list[Path] = []      # oldest first, the active one last
        self._acked: dict[Path, int] = {}
        self._read: dict[Path, int] = {}     # read cursor (chunks handed out, maybe not acked)
        self._sizes: dict[Path, int] = {}
        self._unsynced_since: float | None = None
        self._made = 0
        self.torn = 0
        self.adopted = 0

    # -- slots ----------------------------------------------------------------

    def open(self) -> None:
        """Claim a free slot, adopt the segments of slots nobody holds, list what is there."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"producer.spool_dir {self.root}: cannot create it: "
                              f"{exc.strerror}") from None
        for i in range(MAX_SLOTS):
            fd = self._try_lock(self.root / f"slot-{i}")
            if fd is not None:
                self.slot, self._lock_fd = self.root / f"slot-{i}", fd
                break
        else:
            raise ConfigError(f"producer.spool_dir {self.root}: all {MAX_SLOTS} slots are held")
        for other in sorted(self.root.glob("slot-*")):
            if other == self.slot or not any(other.glob("*.seg")):
                continue
            fd = self._try_lock(other)
            if fd is None:
                continue  # a live process owns it
            try:
                for path in sorted(other.iterdir()):
                    if path.suffix in (".seg", ".ack"):
                        os.rename(path, self.slot / path.name)
                        self.adopted += path.suffix == ".seg"
            finally:
                os.close(fd)  # closing the only descriptor releases the lock
        self._fsync_dir()
        for path in sorted(self.slot.glob("*.seg")):
            self._segments.append(path)
            self._sizes[path] = path.stat().st_size
            ack = path.with_suffix(".ack")
            try:
                self._acked[path] = int(ack.read_text() or 0)
            except (OSError, ValueError):
                self._acked[path] = 0
        for stale in self.slot.glob("*.ack"):
            if stale.with_suffix(".seg") not in self._sizes:
                stale.unlink(missing_ok=True)
        if self._segments:
            log.info("spool %s: %d segments (%d bytes) to send from an earlier run%s",
                     self.slot, len(self._segments), self.bytes,
                     f", {self.adopted} adopted from idle slots" if self.adopted else "")

    @staticmethod
    def _try_lock(slot: Path) -> int | None:
        slot.mkdir(exist_ok=True)
        fd = os.open(slot / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            os.close(fd)
            return None

    def _fsync_dir(self) -> None:
        if self.slot is None:
            return
        fd = os.open(self.slot, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's descriptors without touching its lock."""
        for fd in (self._fd, self._lock_fd):
            if fd is not None:
                try:
                    os.close(fd)  # the parent's descriptor keeps the flock
                except OSError:
                    pass
        self._fd = self._lock_fd = None

    def close(self) -> None:
        """fsync, close and release the slot (the segments stay for the next start)."""
        self.sync(force=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._active is not None and self._sizes.get(self._active, 0) <= \
                self._acked.get(self._active, 0):
            self._delete(self._active)
        self._active = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- writing --------------------------------------------------------------

    @property
    def bytes(self) -> int:
        """Bytes on disk not yet acknowledged (approximately: whole segments count)."""
        return sum(self._sizes[p] - self._acked.get(p, 0) for p in self._segments)

    def empty(self) -> bool:
        return all(self._sizes[p] <= self._acked.get(p, 0) for p in self._segments)

    def rewind(self) -> None:
        """Forget chunks handed out but not acked (they are read again)."""
        self._read.clear()

    def has_room(self, n: int) -> bool:
        return self.bytes + n <= self.max_bytes

    def append(self, records: list[Record]) -> int:
        """Write the records (one ``os.write``); returns the bytes written."""
        if not records:
            return 0
        frames = []
        for seq, _t, key, data in records:
            kb = key.encode("utf-8")
            payload = _META.pack(seq, len(kb)) + kb + data
            frames.append(_HEAD.pack(len(payload), zlib.crc32(payload)))
            frames.append(payload)
        blob = b"".join(frames)
        if self._fd is None or self._active_size >= self.segment_bytes:
            self._rotate()
        view = memoryview(blob)
        while view:
            view = view[os.write(self._fd, view):]  # type: ignore[arg-type]
        self._active_size += len(blob)
        self._sizes[self._active] = self._active_size  # type: ignore[index]
        if self._unsynced_since is None:
            self._unsynced_since = self.clock()
        if self.sync_interval_s <= 0:
            self.sync(force=True)
        return len(blob)

    def _rotate(self) -> None:
        if self._fd is not None:
            self.sync(force=True)
            os.close(self._fd)
        assert self.slot is not None, "spool not open"
        self._made += 1
        self._active = self.slot / f"{time.time_ns():020d}-{os.getpid()}-{self._made:06d}.seg"
        self._fd = os.open(self._active, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                           0o600)
        self._active_size = 0
        self._segments.append(self._active)
        self._sizes[self._active] = 0
        self._acked[self._active] = 0
        self._fsync_dir()

    def sync_due(self) -> bool:
        return self._unsynced_since is not None and \
            self.clock() - self._unsynced_since >= self.sync_interval_s

    def sync(self, force: bool = False) -> bool:
        """fsync the active segment if anything is unsynced (and due, unless ``force``)."""
        if self._unsynced_since is None or self._fd is None:
            return False
        if not force and not self.sync_due():
            return False
        os.fsync(self._fd)
        self._unsynced_since = None
        return True

    @property
    def unsynced(self) -> bool:
        return self._unsynced_since is not None

    # -- reading --------------------------------------------------------------

    def read_chunk(self, max_records: int, max_bytes: int) -> Chunk | None:
        """The next records after the read cursor (oldest segment first), or None.

        Several chunks may be out at once; ``ack`` them in the order they were read."""
        for seg in list(self._segments):
            acked = self._acked.get(seg, 0)
            start, size = max(self._read.get(seg, 0), acked), self._sizes[seg]
            if start >= size:
                if seg == self._active:
                    return None  # caught up with the writer
                if acked >= size:
                    self._delete(seg)
                continue
            records, end, torn = self._parse(seg, start, max_records, max_bytes)
            if records:
                self._read[seg] = end
                return Chunk(seg, start, end, records)
            if torn or seg != self._active:
                if acked >= self._sizes[seg]:
                    self._delete(seg)
                continue
            return None
        return None

    def _parse(self, seg: Path, start: int, max_records: int,
               max_bytes: int) -> tuple[list[Record], int, int]:
        """(records, end offset, 1 if the segment ends in a torn/corrupt frame)."""
        size = self._sizes[seg]
        with open(seg, "rb") as fh:
            fh.seek(start)
            buf = fh.read(min(size - start, max(max_bytes, 1) + _HEAD.size))
            pos = 0
            records: list[Record] = []
            while len(records) < max_records:
                if pos + _HEAD.size > len(buf):
                    if start + pos + _HEAD.size > size and start + pos < size:
                        return self._torn(seg, start + pos, records)
                    break
                length, crc = _HEAD.unpack_from(buf, pos)
                end = pos + _HEAD.size + length
                if end > len(buf):
                    if start + end > size:
                        return self._torn(seg, start + pos, records)
                    if records:
                        break
                    buf += fh.read(end - len(buf))  # one record bigger than max_bytes
                payload = buf[pos + _HEAD.size:end]
                if zlib.crc32(payload) != crc or length < _META.size:
                    return self._torn(seg, start + pos, records, corrupt=True)
                seq, klen = _META.unpack_from(payload)
                key = payload[_META.size:_META.size + klen].decode("utf-8")
                records.append((seq, 0, key, payload[_META.size + klen:]))
                pos = end
        return records, start + pos, 0

    def _torn(self, seg: Path, at: int, records: list[Record], corrupt: bool = False
              ) -> tuple[list[Record], int, int]:
        what = "a corrupt frame" if corrupt else "a torn (incomplete) frame"
        if seg == self._active and not corrupt:
            return records, at, 0  # our own writer: never torn while we run
        log.error("spool segment %s: %s at byte %d of %d; the rest of it is skipped",
                  seg.name, what, at, self._sizes[seg])
        self._sizes[seg] = at  # what follows is not sent
        self.torn += 1
        return records, at, 1

    def ack(self, chunk: Chunk) -> None:
        """The chunk's records reached Kinesis: move the segment's acked offset past it."""
        seg = chunk.segment
        if seg not in self._sizes:
            return
        self._acked[seg] = chunk.end
        for older in self._segments[:self._segments.index(seg)]:
            if self._acked.get(older, 0) >= self._sizes[older]:
                self._delete(older)  # a torn or fully read segment before this one
        if chunk.end >= self._sizes[seg] and seg != self._active:
            self._delete(seg)
            return
        tmp = seg.with_suffix(".ack.tmp")
        tmp.write_text(str(chunk.end))
        os.replace(tmp, seg.with_suffix(".ack"))

    def _delete(self, seg: Path) -> None:
        if seg == self._active:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._active = None
            self._unsynced_since = None
        seg.unlink(missing_ok=True)
        seg.with_suffix(".ack").unlink(missing_ok=True)
        if seg in self._segments:
            self._segments.remove(seg)
        self._sizes.pop(seg, None)
        self._acked.pop(seg, None)
        self._read.pop(seg, None)

    def reset_if_drained(self) -> bool:
        """Delete the active segment once everything in it reached Kinesis."""
        if not self.empty():
            return False
        for seg in list(self._segments):
            self._delete(seg)
        return True
