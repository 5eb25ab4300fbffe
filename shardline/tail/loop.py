"""The tailer's I/O: scan the globs, open and read files, put one event per line, wait.

Every decision is ``Tracker.step``'s; this module only does what a ``Plan`` says and
reports back. Each cycle: scan (stat and first bytes of every matching path), step, read
(at most ``READ_BYTES`` per file), put the lines, tell the tracker how far the producer has
made events durable (``Producer.durable_seq``: spooled and fsynced, or acknowledged by
Kinesis), save the checkpoints it returns, and sleep only when nothing was read.
"""
from __future__ import annotations

import glob
import os
import stat
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone

from prometheus_client import Counter

from shardline.logs import get_logger
from shardline.producer import Producer
from shardline.tail.checkpoints import Checkpoints
from shardline.tail.identity import FINGERPRINT_BYTES, fingerprint, line_event
from shardline.tail.lines import split
from shardline.tail.tracker import Handle, Seen, Tracker

log = get_logger("tail")

READ_BYTES = 1024 * 1024  # per file and cycle: one busy file cannot starve the others
# What the producer drops after put() accepted an event: its sequence number then counts
# as durable although the line is not in Kinesis nor in the spool.
LATE_DROPS = ("spool_full", "refused", "close")


# Per-file numbers go through the report (shardline.tail.report), not labelled series.
LINES = Counter("shardline_tail_lines", "lines read and put, by --table (a line read again "
                "after a restart counts again)", ["table"])


class LinesDropped(Exception):
    """The producer dropped accepted lines: the offsets stay before them, for the next start
    to send them again."""


@dataclass(frozen=True)
class TailOptions:
    patterns: list[str]
    host: str
    event_type: str
    max_line_bytes: int
    poll_s: float
    rotate_wait_s: float
    from_beginning: bool
    report_interval_s: float = 5.0


def scan(patterns: list[str], warned: set[str]) -> list[Seen]:
    """Every regular file the patterns match, with its fingerprint; a file that cannot be
    read is logged once and left out (it may become readable)."""
    paths = sorted({p for pattern in patterns for p in glob.glob(pattern)})
    out: list[Seen] = []
    for path in paths:
        try:
            # Only regular files: opening a FIFO a glob happens to match would block.
            if not stat.S_ISREG(os.stat(path).st_mode):
                continue
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                head = os.pread(f.fileno(), FINGERPRINT_BYTES, 0)
        except OSError as exc:
            if path not in warned and not isinstance(exc, FileNotFoundError):
                warned.add(path)
                log.warning("cannot read %s (%s): skipped until it can be", path, exc.strerror)
            continue
        warned.discard(path)
        out.append(Seen(path, fingerprint(head), st.st_size, (st.st_dev, st.st_ino)))
    return out


class Tail:
    def __init__(self, options: TailOptions, producer: Producer, checkpoints: Checkpoints):
        self.o = options
        self.producer = producer
        self.store = checkpoints
        offsets, first = checkpoints.load()
        self.tracker = Tracker(offsets, first_start=first, from_beginning=options.from_beginning,
                               rotate_wait_s=options.rotate_wait_s)
        self.started = not first
        self.files: dict[str, int] = {}   # fingerprint -> open file descriptor
        self.warned: set[str] = set()
        self.stop = threading.Event()
        self.lines = 0
        self.dropped_late = False
        self.reported_at: float | None = None   # monotonic
        self.reported_lines = 0

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                if not self.cycle():
                    self.stop.wait(self.o.poll_s)
        finally:
            self.shutdown()

    def cycle(self) -> bool:
        """One scan-step-read-save; True if it read a full chunk (more may be waiting)."""
        now = time.monotonic()
        seen = scan(self.o.patterns, self.warned)
        handles = self._handles()
        plan = self.tracker.step(now, seen, handles)
        for fp in plan.close:
            self._close(fp)
        for fp, path in plan.open:
            self._open(fp, path)
        busy = False
        for fp, final in plan.read:
            busy |= self._read(now, fp, final)
        self._durable()
        self._save(plan.checkpoint + self.tracker.take_checkpoints(), plan.forget)
        if self.reported_at is None or now - self.reported_at >= self.o.report_interval_s:
            self.report(now)
        return busy

    def report(self, now: float) -> None:
        """Each file's offset, size and ages, for status and /metrics."""
        self.reported_at = now
        self.store.report(self.tracker.states(now), time.time(), os.getpid())
        if self.lines > self.reported_lines:
            LINES.labels(self.o.event_type).inc(self.lines - self.reported_lines)
            self.reported_lines = self.lines

    def _durable(self) -> None:
        """Move the offsets up to what the producer made durable, unless it dropped lines.

        The pump counts a drop before it publishes the sequence number covering it, so
        reading ``durable_seq`` first and the drops second never misses one."""
        durable = self.producer.durable_seq
        late = sum(self.producer.dropped[k] for k in LATE_DROPS)
        if late:
            self.dropped_late = True
            raise LinesDropped(f"the producer dropped {late} accepted line(s) "
                               f"({dict(self.producer.dropped)}): stopping with the offsets "
                               f"before them, so that the next start sends them again")
        self.tracker.durable(durable)

    def _save(self, checkpoints: list[tuple[str, str, int]], forget: list[str]) -> None:
        if checkpoints or forget or not self.started:
            self.store.save(checkpoints, forget)
            self.started = True

    def _handles(self) -> dict[str, Handle]:
        out: dict[str, Handle] = {}
        for fp, fd in list(self.files.items()):
            try:
                st = os.fstat(fd)
            except OSError:
                self._close(fp)
                continue
            out[fp] = Handle(st.st_size, (st.st_dev, st.st_ino))
        return out

    def _open(self, fp: str, path: str) -> None:
        self._close(fp)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError as exc:
            log.warning("cannot open %s (%s)", path, exc.strerror)
            return
        # The path may have been rotated between the scan and the open.
        if fingerprint(os.pread(fd, FINGERPRINT_BYTES, 0)) != fp:
            os.close(fd)
            return
        self.files[fp] = fd

    def _close(self, fp: str) -> None:
        fd = self.files.pop(fp, None)
        if fd is not None:
            os.close(fd)

    def _read(self, now: float, fp: str, final: bool) -> bool:
        t = self.tracker.reading(fp)
        fd = self.files.get(fp)
        if t is None or fd is None:
            return False
        start = t.read_to
        want = max(READ_BYTES, self.o.max_line_bytes + 2)
        data = os.pread(fd, want, t.read_to)
        # copytruncate and a new first line between two scans: these bytes are not ours
        if fingerprint(os.pread(fd, FINGERPRINT_BYTES, 0)) != fp:
            self.tracker.truncated(fp)
            return False
        got = split(data, t.read_to, skipping=t.skipping, safe=t.safe,
                    max_line=self.o.max_line_bytes, final=final and len(data) < want)
        read_at = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        read_to, safe, skipping = got.read_to, got.safe, got.skipping
        key = f"{self.o.host}:{fp}"
        for offset, line, cut in got.lines:
            event = line_event(self.o.host, fp, t.path, offset, line, read_at,
                               self.o.max_line_bytes if cut else 0)
            event["type"] = self.o.event_type
            if not self.producer.put(dict(event), partition_key=key):
                # The producer is full (or closing): this line and what follows are read
                # again next cycle, from its start.
                read_to, safe, skipping = offset, offset, False
                break
            self.lines += 1
        self.tracker.advanced(now, fp, read_to, safe, skipping, self.producer.accepted_seq)
        return len(data) == want and read_to > start

    def shutdown(self) -> None:
        """Stop: the producer sends or spools what it holds, then the last checkpoints."""
        self.producer.close()
        if not self.dropped_late:
            try:
                self._durable()
            except LinesDropped as exc:
                log.error("%s", exc)
        self._save(self.tracker.take_checkpoints(), [])
        self.report(time.monotonic())
        for fp in list(self.files):
            self._close(fp)
        self.store.close()
