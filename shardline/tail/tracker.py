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

# Growth is remembered at this granularity: the oldest unsent line's age is exact to it,
# and a stalled file costs one sample a second at most.
GROWTH_SAMPLE_S = 1.0
MAX_SAMPLES = 4096  # past this, every other sample goes (ages then read younger, never older)


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
    # (size, when the file first had that size), sizes increasing, at most one per
    # GROWTH_SAMPLE_S: when the oldest byte past the checkpoint was first seen
    grown: list[tuple[int, float]] = field(default_factory=list)
    advanced_at: float = 0.0  # when durable_to last moved (or tracking began)
    reported_to: int = 0      # durable_to at the last step (to see it move)


@dataclass(frozen=True)
class FileState:
    """What status and metrics show of one followed file."""

    fingerprint: str
    path: str
    offset: int            # the checkpoint: every line before it is durable
    size: int              # the file's size at the last step
    unsent_age_s: float    # how long the oldest byte past the offset has been in the file
    advanced_age_s: float  # since the offset last moved


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
                _grew(t, now)
            if t.durable_to != t.reported_to:
                t.reported_to, t.advanced_at = t.durable_to, now
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
        t = Tracked(fp, s.path, offset, offset, offset, last_change=now, size=s.size,
                    advanced_at=now, reported_to=offset)
        _grew(t, now)
        self.files[fp] = t
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

    def states(self, now: float) -> list[FileState]:
        """Every followed file as status and metrics show it, by path."""
        out = []
        for t in self.files.values():
            while t.grown and t.grown[0][0] <= t.durable_to:
                t.grown.pop(0)
            unsent = now - t.grown[0][1] if t.grown and t.size > t.durable_to else 0.0
            out.append(FileState(t.fingerprint, t.path, t.durable_to, t.size,
                                 max(0.0, unsent), max(0.0, now - t.advanced_at)))
        return sorted(out, key=lambda f: (f.path, f.fingerprint))

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


def _grew(t: Tracked, now: float) -> None:
    """Remember when the file reached ``t.size`` (see ``Tracked.grown``)."""
    if t.grown and t.size <= t.grown[-1][0]:
        # shrank (a truncation the step handles): sizes must stay increasing
        t.grown = [g for g in t.grown if g[0] < t.size]
    if t.grown and now - t.grown[-1][1] < GROWTH_SAMPLE_S:
        # within the granularity: the newer bytes count from the earlier time
        t.grown[-1] = (t.size, t.grown[-1][1])
    else:
        t.grown.append((t.size, now))
    if len(t.grown) > MAX_SAMPLES:
        t.grown = t.grown[:1] + t.grown[2::2]
