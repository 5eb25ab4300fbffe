"""``Tracker.step(now, seen, handles)``: the tailer's decisions, with no I/O and no sleep.

Input: what the scan found (every path the globs match: its fingerprint, size and inode)
and the size of every file the loop holds open. Output, a ``Plan``: files to open (at a
path) and close, files with bytes to read, offsets to checkpoint and files to forget.
The loop reports back what it read and put (``advanced``) and how far the producer has
made the events durable (``durable``); only then does an offset become a checkpoint.

Rotation. Rename-and-create: the renamed file keeps its fingerprint, and its open handle is
read to its end and kept ``rotate_wait_s`` after its last byte (a writer may still hold
it), whether or not the globs still match its new name; the new file at the old path has
a new fingerprint and is read from its beginning. Copytruncate: the handle's file shrinks
below the offset read, or its first line changes under the same inode; if a path the
globs match has the same fingerprint (the copy) and at least that many bytes, reading
goes on there; otherwise the bytes after the offset were lost before the tailer read them
(logged).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from shardline.logs import get_logger

log = get_logger("tail")


@dataclass(frozen=True)
class Seen:
    """One path the globs match, as the scan found it."""

    path: str
    fingerprint: str | None   # None: its first line is not complete yet
    size: int
    inode: tuple[int, int]    # (st_dev, st_ino)


@dataclass(frozen=True)
class Handle:
    """A file the loop holds open: what fstat says now."""

    size: int
    inode: tuple[int, int]


@dataclass
class Tracked:
    fingerprint: str
    path: str
    read_to: int             # the next byte to read
    safe: int                # a line boundary at or before read_to (restart point)
    durable_to: int          # the checkpoint: every line before it is durable
    skipping: bool = False   # inside an over-long line
    last_change: float = 0.0  # when it last grew or was read
    size: int = 0            # the handle's size at the last step
    matched: bool = True     # a path the globs match has this fingerprint
    truncated: bool = False  # the handle's content is gone (copytruncate)


@dataclass
class Plan:
    open: list[tuple[str, str]] = field(default_factory=list)   # (fingerprint, path)
    close: list[str] = field(default_factory=list)
    read: list[tuple[str, bool]] = field(default_factory=list)  # (fingerprint, final)
    checkpoint: list[tuple[str, str, int]] = field(default_factory=list)  # fp, path, offset
    forget: list[str] = field(default_factory=list)


class Tracker:
    """The state of every followed file; ``step`` decides, the loop acts."""

    def __init__(self, checkpoints: dict[str, int], *, first_start: bool,
                 from_beginning: bool, rotate_wait_s: float):
        self.known = dict(checkpoints)          # fingerprint -> durable offset (SQLite)
        self.files: dict[str, Tracked] = {}
        self.first_scan = first_start and not from_beginning
        self.rotate_wait_s = rotate_wait_s
        # (producer sequence number, fingerprint, safe offset), in put order
        self.pending: list[tuple[int, str, int]] = []
        self.dirty: set[str] = set()

    # -- decisions ----------------------------------------------------------------

    def step(self, now: float, seen: list[Seen], handles: dict[str, Handle]) -> Plan:
        plan = Plan()
        by_fp: dict[str, list[Seen]] = {}
        by_inode: dict[tuple[int, int], Seen] = {}
        for s in seen:
            by_inode[s.inode] = s
            if s.fingerprint is not None:
                by_fp.setdefault(s.fingerprint, []).append(s)
        new = [fp for fp in by_fp if fp not in self.files]
        for fp in new:
            self._start(now, fp, by_fp[fp][0], plan)
        self.first_scan = False
        for fp, t in list(self.files.items()):
            if fp in new:
                continue  # opened and read by this plan already
            paths = by_fp.get(fp, [])
            t.matched = bool(paths)
            h = handles.get(fp)
            if h is None:
                self._closed(now, t, paths, plan)
                continue
            here = by_inode.get(h.inode)
            if here is not None:
                t.path = here.path  # a rename the globs still match: report the new name
            rewritten = here is not None and here.fingerprint not in (None, fp)
            known = t.size  # the size before this step: what a truncation took away
            if h.size != t.size:
                t.size, t.last_change = h.size, now
            # Rotated away and quiet for rotate_wait_s: the file will not grow again.
            done = not t.matched and now - t.last_change >= self.rotate_wait_s
            if t.truncated or h.size < t.read_to or rewritten:
                self._lost_content(t, paths, h.inode, plan, known)
            elif h.size > t.read_to:
                plan.read.append((fp, done))  # done: a last line without a newline is one
            elif done and t.durable_to >= t.safe:
                plan.close.append(fp)          # read to its end, and all of it durable
                self._forget(fp, plan)
        plan.checkpoint = self.take_checkpoints()
        return plan

    def take_checkpoints(self) -> list[tuple[str, str, int]]:
        """(fingerprint, path, offset) of every file whose checkpoint moved since the last
        call; the loop stores them."""
        out = [(fp, t.path, t.durable_to) for fp in sorted(self.dirty)
               if (t := self.files.get(fp)) is not None]
        self.dirty.clear()
        return out

    def _start(self, now: float, fp: str, s: Seen, plan: Plan) -> None:
        if fp in self.known:
            offset = self.known[fp]
        elif self.first_scan:
            offset = s.size  # existed before the first start: only what is written from now
            self.dirty.add(fp)
        else:
            offset = 0       # appeared since: all of it
            self.dirty.add(fp)
        if offset > s.size:  # truncated while we were not running: nothing to resume
            log.warning("%s is shorter (%d bytes) than its checkpoint (%d): reading it from "
                        "its start", s.path, s.size, offset)
            offset = 0
        self.files[fp] = Tracked(fp, s.path, offset, offset, offset, last_change=now)
        plan.open.append((fp, s.path))
        plan.read.append((fp, False))  # opened first, so read in this same cycle

    def _closed(self, now: float, t: Tracked, paths: list[Seen], plan: Plan) -> None:
        """No handle (never opened, or it failed): open it again while a path matches."""
        if paths:
            plan.open.append((t.fingerprint, paths[0].path))
            plan.read.append((t.fingerprint, False))
        else:
            self._forget(t.fingerprint, plan)

    def _lost_content(self, t: Tracked, paths: list[Seen], inode: tuple[int, int],
                      plan: Plan, known: int) -> None:
        copies = [s for s in paths if s.inode != inode and s.size >= t.read_to]
        plan.close.append(t.fingerprint)
        t.truncated = False
        if copies:  # copytruncate: the copy holds what we had not read yet
            t.path = copies[0].path
            plan.open.append((t.fingerprint, t.path))
            plan.read.append((t.fingerprint, False))
            return
        if known > t.read_to:
            log.warning("%s was truncated at least %d bytes before it was read to its end "
                        "(offset %d): those lines were not sent (a copytruncate copy the globs "
                        "do not match has them)", t.path, known - t.read_to, t.read_to)
        else:
            log.info("%s was truncated after it was read to its end (copytruncate)", t.path)
        self._forget(t.fingerprint, plan)

    def _forget(self, fp: str, plan: Plan) -> None:
        self.files.pop(fp, None)
        self.known.pop(fp, None)
        self.dirty.discard(fp)
        self.pending = [p for p in self.pending if p[1] != fp]
        plan.forget.append(fp)

    # -- what the loop reports ------------------------------------------------------

    def reading(self, fp: str) -> Tracked | None:
        return self.files.get(fp)

    def advanced(self, now: float, fp: str, read_to: int, safe: int, skipping: bool,
                 seq: int) -> None:
        """Lines up to ``safe`` were put, the last with producer sequence ``seq``."""
        t = self.files.get(fp)
        if t is None:
            return
        if read_to != t.read_to:
            t.last_change = now
        t.read_to, t.skipping = read_to, skipping
        if safe > t.safe:
            t.safe = safe
            self.pending.append((seq, fp, safe))

    def truncated(self, fp: str) -> None:
        """The loop found the handle's first line changed while reading."""
        t = self.files.get(fp)
        if t is not None:
            t.truncated = True

    def durable(self, durable_seq: int) -> None:
        """Every event with a sequence number up to ``durable_seq`` is durable."""
        done = 0
        for seq, fp, safe in self.pending:
            if seq > durable_seq:
                break
            done += 1
            t = self.files.get(fp)
            if t is not None and safe > t.durable_to:
                t.durable_to = safe
                self.dirty.add(fp)
        del self.pending[:done]
