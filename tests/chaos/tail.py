"""A tail source beside the producer: a writer appends access-log lines (some malformed)
to a file it rotates both ways (rename-and-create, copytruncate), and a ``shardline tail
--table access_log`` process the campaign starts ships them; the plan SIGKILLs it (kind
``tail``) and the campaign starts it again at once.

The verdict: every well-formed line written is exactly one ``access_log`` row, found by
its place (host, file fingerprint, byte offset) and by its content; every malformed line
is a dead letter with its reason (compared by place: a malformed line the tailer sent
twice is two dead letters of one event id, since dead letters are not deduplicated).

The tailer reaches Kinesis through the campaign's fault proxy, which passes PutRecords
through: a client SIGKILLed in the middle of a request would otherwise crash kinesalite.
"""
from __future__ import annotations

import base64
import json
import logging
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from shardline.tail.identity import event_id, fingerprint
from tests.tail_kit import HOST, TABLES, AccessLogWriter, rebuilt, tail_env
from tests.producer_kit import python

log = logging.getLogger("chaos")
KIND = "tail"
TABLE = "access_log"
TABLES_FILE = TABLES  # routes page_views (the default route) and access_log
MALFORMED_SUFFIX = "not an access log line"
COLUMNS = ("remote_addr, remote_user, occurred_at, request, status, body_bytes, referrer, "
           "user_agent")


class ChaosLogWriter(AccessLogWriter):
    """``rate`` lines a second in bursts of 5; a rotation every ``rotate_every_s``,
    alternating the two styles."""

    def __init__(self, logs: Path, rate: float, rotate_every_s: float):
        super().__init__(logs)
        self.pause = 5 / max(rate, 1.0)
        self.rotate_every_s = rotate_every_s

    def run(self) -> None:
        next_rotation = time.monotonic() + self.rotate_every_s
        while not self.stopping.is_set():
            self.append()
            if time.monotonic() >= next_rotation:
                self.rotate()
                next_rotation = time.monotonic() + self.rotate_every_s
            time.sleep(self.pause)


class TailSource:
    def __init__(self, work: Path, env: dict[str, str], stream: str, kinesis_url: str,
                 rate: float):
        self.work = work
        self.logs = work / "access-logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = tail_env(env, stream, kinesis_url, work / "tail")
        self.env["SHARDLINE_AGENT_HOST_ID"] = HOST
        self.err = work / "tail.log"  # searched for secrets with the other logs
        self.argv = ["-m", "shardline.cli", "tail", "--stream", stream, "--from-beginning",
                     "--table", TABLE, str(self.logs / "app.log*")]
        self.writer = ChaosLogWriter(self.logs, rate, rotate_every_s=6.0)
        self.proc: subprocess.Popen | None = None
        self.kills = 0
        self.started = 0

    def start(self) -> None:
        self.writer.start()
        self._spawn()

    def _spawn(self) -> None:
        with self.err.open("ab") as e:
            self.proc = python(*self.argv, env=self.env, stderr=e, stdout=subprocess.DEVNULL)
        self.started += 1

    def kill(self) -> bool:
        """SIGKILL the tailer and start a new one at once."""
        if self.proc is None or self.proc.poll() is not None:
            self._spawn()  # it died on its own: start it, try the kill again shortly
            return False
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.kills += 1
        log.info("SIGKILL tail (pid %d)", self.proc.pid)
        self._spawn()
        return True

    def stop_writing(self) -> None:
        self.writer.stopping.set()
        self.writer.join(10)
        if self.proc is None or self.proc.poll() is not None:
            self._spawn()

    def stop(self) -> None:
        self.writer.stopping.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    # -- the verdict ------------------------------------------------------------
    def expected(self) -> tuple[dict[tuple[str, int], str], dict[tuple[str, int], str]]:
        """(well-formed lines, malformed lines) by place (fingerprint, offset)."""
        good, bad = {}, {}
        for (first, offset), text in self.writer.places.items():
            place = (fingerprint(first), offset)
            (bad if text.endswith(MALFORMED_SUFFIX) else good)[place] = text
        return good, bad

    def rows(self, query: Callable[..., list[tuple]]) -> list[tuple]:
        return query(f"SELECT host, file_id, byte_offset, event_id, {COLUMNS} FROM {TABLE}")

    def complete(self, query: Callable[..., list[tuple]]) -> bool:
        return len(self.rows(query)) >= len(self.expected()[0])

    def check(self, v: Any, query: Callable[..., list[tuple]],
              letters: list[dict[str, Any]]) -> None:
        good, bad = self.expected()
        got = self.rows(query)
        v.tail_lines, v.tail_malformed, v.tail_rows = len(good), len(bad), len(got)
        v.tail_kills, v.tail_rotations = self.kills, len(self.writer.rotations)
        by_place: dict[tuple[str, int], list[tuple]] = {}
        for r in got:
            by_place.setdefault((r[1], r[2]), []).append(r)
        v.tail_missing = len(good.keys() - by_place.keys())
        v.tail_duplicated = sum(len(rs) - 1 for rs in by_place.values())
        v.tail_unexpected = len(by_place.keys() - good.keys())
        wrong = [p for p, text in good.items() if p in by_place and any(
            r[0] != HOST or r[3] != event_id(HOST, *p) or rebuilt(r[4:]) != text
            for r in by_place[p])]
        v.tail_mismatched = len(wrong)
        dead = {(d["file_id"], d["offset"]): d for d in letters}
        v.tail_dead_lettered = len(dead)
        v.tail_dead_missing = len(bad.keys() - dead.keys())
        v.tail_dead_unexpected = len(dead.keys() - bad.keys())
        v.tail_dead_wrong = sum(1 for p, d in dead.items() if p in bad and (
            d["line"] != bad[p] or "not a combined log line" not in d["reason"]))
        if (v.tail_missing or v.tail_duplicated or v.tail_unexpected or v.tail_mismatched
                or v.tail_dead_missing or v.tail_dead_unexpected or v.tail_dead_wrong):
            lost = sorted(good.keys() - by_place.keys())[:2]
            v.problems.append(
                f"tail: missing {v.tail_missing} (e.g. {lost}),"
                f" duplicated {v.tail_duplicated}, unexpected {v.tail_unexpected}, content "
                f"wrong {v.tail_mismatched}, dead letters missing {v.tail_dead_missing}, "
                f"unexpected {v.tail_dead_unexpected}, wrong {v.tail_dead_wrong}")


def tail_letter(entry: dict[str, Any]) -> dict[str, Any] | None:
    """A dead-letter entry's tailed line (with its reason), or None for any other record."""
    try:
        data = json.loads(base64.b64decode(entry["data_b64"]))
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("type") != TABLE:
        return None
    return {**data, "reason": entry.get("reason") or ""}


def split_letters(entries: list[dict[str, Any]]) -> tuple[list[dict[str, Any]],
                                                           list[dict[str, Any]]]:
    """(the tail's dead letters, every other entry)."""
    tailed, others = [], []
    for e in entries:
        t = tail_letter(e)
        if t is None:
            others.append(e)
        else:
            tailed.append(t)
    return tailed, others

