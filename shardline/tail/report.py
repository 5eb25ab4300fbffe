"""What a tailer reports of each file it follows, read back: for ``shardline status --tail``
and the per-file metrics (docs/tail.md, "Status and metrics").

The tailer writes its report into its own SQLite state (``Checkpoints.report``, every
``tail.report_interval_s``); this module reads it from another process on the same host,
adds what the file looks like now (its size, when its first line is still the one the
tailer follows) and decides, with no other I/O, which files alert:

- **stalled**: the file has bytes past its offset, the oldest of them waiting for at least
  ``tail.stall_alert_s``, and the offset has not moved for as long. A tailer that is slow
  but moving is behind, not stalled; a file with nothing new is idle, not stalled. A
  tailer that is stopped, hung or dead stops reporting: the file's size now, against the
  last reported offset, still shows the growth it misses.

Why the local SQLite and not the control store: a tail host is often outside AWS with a
producer's credentials only (Kinesis), no control store and no warehouse; its state file
is on local disk already, and a reader needs nothing but the path.

The metrics come from the same rows (``TailCollector``, registered by ``shardline metrics``
and by the tailer's own server): a file the tailer lets go leaves the report, so its series
leaves the scrape. Labelled gauges could not do this: prometheus_client cannot remove a
series in multiprocess mode, the mode supervisord's programs run in.
"""
from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

from shardline.tail.checkpoints import STATE_FILE
from shardline.tail.identity import FINGERPRINT_BYTES, fingerprint

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from shardline.settings import Settings


def state_dir(settings: Settings) -> str:
    """``tail.state_dir``, else ``<producer.spool_dir>/tail``, else empty."""
    if settings.tail.state_dir:
        return settings.tail.state_dir
    return os.path.join(settings.producer.spool_dir, "tail") if settings.producer.spool_dir \
        else ""


def collectors(settings: Settings) -> list[TailCollector]:
    """The per-file gauges of this host's ``shardline tail`` for a host scrape target (its
    state directory's report; nothing while no tailer has run with it)."""
    directory = state_dir(settings)
    return [TailCollector(directory, settings.tail.stall_alert_s)] if directory else []


@dataclass(frozen=True)
class Reported:
    """One row of the tailer's report (wall-clock times)."""

    fingerprint: str
    path: str
    offset: int
    size: int
    unsent_since: float
    advanced_at: float


@dataclass(frozen=True)
class Report:
    """The tailer's last report: None ``reported_at`` when it never reported."""

    path: str
    reported_at: float | None
    pid: int | None
    files: list[Reported]


@dataclass(frozen=True)
class FileStatus:
    """One file as status shows it."""

    path: str
    file_id: str
    offset: int
    size: int                 # now, if the path still holds the file; else as reported
    behind_bytes: int
    oldest_unsent_age_s: float
    advanced_age_s: float
    stalled: bool


def read_report(directory: str) -> Report:
    """The tailer's last report in ``directory``. Raises ``FileNotFoundError`` when there
    is no state file (no tailer ever ran with this state directory) and ``sqlite3.Error``
    when it cannot be read."""
    path = os.path.join(directory, STATE_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(path)
    # Read-only: status must never create or change the tailer's state.
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        try:
            rows = db.execute("SELECT fingerprint, path, offset, size, unsent_since, "
                              "advanced_at FROM files ORDER BY path, fingerprint").fetchall()
        except sqlite3.OperationalError:  # a tailer of a release before reports
            rows = []
    finally:
        db.close()
    reported = meta.get("reported_at")
    pid = meta.get("pid")
    return Report(path, float(reported) if reported else None,
                  int(pid) if pid and pid.isdigit() else None,
                  [Reported(fp, p, int(o), int(s), float(u), float(a))
                   for fp, p, o, s, u, a in rows])


def size_now(path: str, file_id: str) -> int | None:
    """The size of ``path`` if its first line is still the file ``file_id``, else None
    (rotated away, truncated, gone: the report's size is all there is)."""
    try:
        with open(path, "rb") as f:
            if fingerprint(os.pread(f.fileno(), FINGERPRINT_BYTES, 0)) != file_id:
                return None
            return os.fstat(f.fileno()).st_size
    except OSError:
        return None


def assess(report: Report, now: float, stall_s: float,
           sizes: Callable[[str, str], int | None] = size_now) -> list[FileStatus]:
    """Each reported file with its size now and whether it is stalled (see the module)."""
    out = []
    reported_at = report.reported_at if report.reported_at is not None else now
    for r in report.files:
        size = r.size
        unsent_since = r.unsent_since if r.size > r.offset else None
        current = sizes(r.path, r.fingerprint)
        if current is not None and current > r.size:
            size = current
            if unsent_since is None:  # grew since a report that had sent everything
                unsent_since = reported_at
        behind = max(0, size - r.offset)
        unsent_age = max(0.0, now - unsent_since) if behind and unsent_since is not None \
            else 0.0
        advanced_age = max(0.0, now - r.advanced_at)
        stalled = behind > 0 and unsent_age >= stall_s and advanced_age >= stall_s
        out.append(FileStatus(r.path, r.fingerprint, r.offset, size, behind,
                              round(unsent_age, 3), round(advanced_age, 3), stalled))
    return out


def alerts(files: list[FileStatus], stall_s: float) -> list[str]:
    return [f"tail: {f.path} is not advancing: {f.behind_bytes} bytes behind, offset "
            f"{f.offset} unchanged for {f.advanced_age_s:.0f}s, oldest unsent line "
            f"{f.oldest_unsent_age_s:.0f}s old (tail.stall_alert_s {stall_s:g})"
            for f in files if f.stalled]


class TailCollector:
    """Per-file gauges from the tailer's report in ``directory``, read at each scrape."""

    def __init__(self, directory: str, stall_s: float,
                 clock: Callable[[], float] | None = None):
        import time

        self.directory = directory
        self.stall_s = stall_s
        self.clock = clock or time.time

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        labels = ["path", "file_id"]
        families = {
            "offset": GaugeMetricFamily(
                "shardline_tail_offset_bytes", "the file's checkpoint: every line before it "
                "is durable (spooled or in Kinesis)", labels=labels),
            "behind": GaugeMetricFamily(
                "shardline_tail_behind_bytes", "bytes of the file past its checkpoint",
                labels=labels),
            "age": GaugeMetricFamily(
                "shardline_tail_oldest_unsent_age_seconds", "how long the oldest byte past "
                "the checkpoint has been in the file (0: all sent)", labels=labels),
            "stalled": GaugeMetricFamily(
                "shardline_tail_stalled", "1 while the file has unsent lines and its offset "
                "has not moved for tail.stall_alert_s", labels=labels),
        }
        report_age = GaugeMetricFamily(
            "shardline_tail_report_age_seconds", "seconds since the tailer last reported "
            "(it reports every tail.report_interval_s while it runs)")
        try:
            report = read_report(self.directory)
        except (OSError, sqlite3.Error):
            return  # no tailer on this host (yet): no tail series
        now = self.clock()
        if report.reported_at is not None:
            report_age.add_metric([], max(0.0, now - report.reported_at))
        for f in assess(report, now, self.stall_s):
            values = [f.path, f.file_id]
            families["offset"].add_metric(values, f.offset)
            families["behind"].add_metric(values, f.behind_bytes)
            families["age"].add_metric(values, f.oldest_unsent_age_s)
            families["stalled"].add_metric(values, 1.0 if f.stalled else 0.0)
        yield report_age
        yield from families.values()
