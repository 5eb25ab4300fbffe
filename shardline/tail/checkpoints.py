"""The tailer's offsets, in SQLite on local disk: per file fingerprint, the offset up to which
every line is durable (spooled or accepted by Kinesis).

One transaction per loop cycle, synchronous=FULL in WAL mode: a checkpoint that
``save`` returned from survives a power cut, and a ``kill -9`` in the middle of one leaves
the previous one. ``files`` is what the tailer last reported of each file it follows (for
``shardline status --tail`` and the metrics, ``shardline.tail.report``), replaced whole at
each report with ``meta.reported_at``. ``started`` records that the first start's
positions (the ends of the files that already existed) are stored, so a restart never
takes them again.
"""
from __future__ import annotations

import os
import sqlite3
import time

from shardline.errors import ConfigError
from shardline.tail.tracker import FileState

STATE_FILE = "tail.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS offsets (
    fingerprint TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    offset INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    fingerprint TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    offset INTEGER NOT NULL,
    size INTEGER NOT NULL,
    unsent_since REAL NOT NULL,
    advanced_at REAL NOT NULL
);
"""


class Checkpoints:
    def __init__(self, directory: str, name: str = STATE_FILE):
        try:
            os.makedirs(directory, exist_ok=True)
            self.path = os.path.join(directory, name)
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"tail.state_dir {directory!r}: {exc}") from None

    def load(self) -> tuple[dict[str, int], bool]:
        """(offset per fingerprint, whether this is the first start)."""
        rows = self.db.execute("SELECT fingerprint, offset FROM offsets").fetchall()
        started = self.db.execute("SELECT 1 FROM meta WHERE key = 'started'").fetchone()
        return {fp: int(off) for fp, off in rows}, started is None

    def save(self, checkpoints: list[tuple[str, str, int]], forget: list[str]) -> None:
        """Offsets and forgotten files, with the ``started`` mark, in one transaction."""
        now = time.time()
        with self.db:  # BEGIN ... COMMIT
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT INTO offsets (fingerprint, path, offset, updated_at) VALUES (?,?,?,?) "
                "ON CONFLICT (fingerprint) DO UPDATE SET path = excluded.path, "
                "offset = excluded.offset, updated_at = excluded.updated_at",
                [(fp, path, off, now) for fp, path, off in checkpoints])
            self.db.executemany("DELETE FROM offsets WHERE fingerprint = ?",
                                [(fp,) for fp in forget])
            self.db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('started', ?)",
                            (str(now),))

    def report(self, states: list[FileState], wall_now: float, pid: int) -> None:
        """Replace the reported files (ages become wall-clock times: a reader in another
        process compares them with its own clock) and the report time; one transaction per
        ``tail.report_interval_s``."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("DELETE FROM files")
            self.db.executemany(
                "INSERT INTO files (fingerprint, path, offset, size, unsent_since, advanced_at) "
                "VALUES (?,?,?,?,?,?)",
                [(f.fingerprint, f.path, f.offset, f.size, wall_now - f.unsent_age_s,
                  wall_now - f.advanced_age_s) for f in states])
            self.db.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                [("reported_at", repr(wall_now)), ("pid", str(pid))])

    def offsets(self) -> dict[str, tuple[str, int]]:
        """fingerprint -> (path, offset), for status and tests."""
        return {fp: (path, int(off)) for fp, path, off in
                self.db.execute("SELECT fingerprint, path, offset FROM offsets")}

    def close(self) -> None:
        self.db.close()
