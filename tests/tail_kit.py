"""What the tail tests and the chaos campaign's tail source share: a writer appending lines
to a file it rotates both ways (``Writer``; ``AccessLogWriter`` writes combined access-log
lines, some malformed), a tailer run the test kills and restarts (``Run``), its environment,
and reading back what reached the stream or the warehouse."""
from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from shardline.devstack.fleet import wait_for
from tests.pipeline import read_stream
from tests.producer_kit import PutFaultProxy, interpreter_env, python, user_records


KILLS = 7  # a Run's kills unless the test says
TABLES = Path(__file__).resolve().parents[1] / "examples" / "log_lines" / "tables.toml"


class Writer(threading.Thread):
    """Appends numbered lines to app.log; ``rotate()`` alternates the two styles.
    ``places`` is where each line went: (first line of its file, byte offset) -> line."""

    def __init__(self, logs: Path):
        super().__init__(daemon=True)
        self.places: dict[tuple[bytes, int], str] = {}
        self.first = b""     # the live file's first line (its identity)
        self.size = 0        # the live file's size
        self.logs = logs
        self.live = logs / "app.log"
        self.n = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.rotations: list[str] = []
        self.live.write_bytes(b"")

    def run(self) -> None:
        while not self.stopping.is_set():
            self.append()
            time.sleep(0.02)

    def append(self, lines: int = 5) -> None:
        """Append ``lines`` lines to the live file, remembering each one's place (the
        file's first line and the byte offset)."""
        with self.lock:
            with self.live.open("ab") as f:
                for _ in range(lines):
                    text = self.line(self.n)
                    data = text.encode() + b"\n"
                    f.write(data)
                    if not self.size:
                        self.first = data
                    self.places[(self.first, self.size)] = text
                    self.size += len(data)
                    self.n += 1

    def line(self, n: int) -> str:
        return f"{n:08d} GET /page/{n % 97} 200"

    def written(self) -> set[str]:
        return {self.line(n) for n in range(self.n)}

    def rotate(self) -> str:
        with self.lock:
            k = len(self.rotations) + 1
            if k % 2:  # logrotate's default: rename, then the writer creates a new file
                style = "rename"
                self.live.rename(self.logs / f"app.log.{k}")
                self.live.write_bytes(b"")
            else:      # copytruncate: copy, then truncate in place (same inode)
                style = "copytruncate"
                shutil.copyfile(self.live, self.logs / f"app.log.{k}")
                with self.live.open("r+b") as f:
                    f.truncate(0)
            self.size = 0
            self.rotations.append(style)
            return style


def stream_events(kinesis, stream: str) -> list[dict]:
    records = read_stream(kinesis, stream)
    return [json.loads(d) for _, d in user_records([("k", data) for data in records.values()])]


def tail_env(stack_env: dict, stream: str, proxy_url: str, tmp_path: Path) -> dict:
    return {**stack_env, **interpreter_env(), "SHARDLINE_KINESIS_STREAM": stream,
            "SHARDLINE_KINESIS_ENDPOINT_URL": proxy_url,
            "SHARDLINE_PRODUCER_SPOOL_AFTER_MS": "300",
            "SHARDLINE_PRODUCER_SPOOL_DIR": str(tmp_path / "spool"),
            "SHARDLINE_PRODUCER_LINGER_MS": "20", "SHARDLINE_PRODUCER_SYNC_INTERVAL_MS": "20",
            "SHARDLINE_TAIL_POLL_S": "0.05", "SHARDLINE_TAIL_ROTATE_WAIT_S": "1",
            "SHARDLINE_AGENT_HOST_ID": "web-1"}


class Run:
    """The tailer started, SIGKILLed and started again ``kills`` times while the writer writes
    and rotates, a 500 storm in the middle; then a last tailer that stays up."""

    def __init__(self, env: dict, logs: Path, proxy: PutFaultProxy, stream: str, tmp: Path,
                 writer: Writer | None = None, kills: int = KILLS, table: str = "log_lines",
                 at_work: tuple[float, float] = (0.1, 1.2), stall_at: int = 3,
                 slow_at: int | None = None):
        self.env, self.logs, self.proxy, self.stream = env, logs, proxy, stream
        self.err = tmp / "tail.err"
        self.writer = writer or Writer(logs)
        self.n_kills, self.at_work = kills, at_work
        self.stall_at, self.slow_at = stall_at, slow_at
        self.argv = ["-m", "shardline.cli", "tail", "--stream", stream, "--from-beginning",
                     "--table", table, str(logs / "app.log*")]
        self.kills_after_rotation = 0
        self.proc: subprocess.Popen | None = None

    def start(self) -> subprocess.Popen:
        with self.err.open("ab") as e:
            self.proc = python(*self.argv, env=self.env, stderr=e, stdout=subprocess.DEVNULL)
        return self.proc

    def kills(self) -> set[str]:
        """The lines written, once the writer stopped; the last tailer runs on."""
        rnd = random.Random(21)
        self.writer.start()
        for i in range(self.n_kills):
            puts = self.proxy.calls().get("PutRecords", 0)
            proc = self.start()
            # Killed at work, not while Python starts: once it has put lines.
            wait_for(lambda p=proc, n=puts: self.proxy.calls().get("PutRecords", 0) > n or
                     p.poll() is not None, 60, "the tailer putting lines", every=0.05)
            if i == self.stall_at:  # Kinesis answers 500 to everything: to the spool
                time.sleep(1.0)       # (once this tailer is up and putting)
                self.proxy.storm("500", 2.5)
            elif i == self.slow_at:  # Kinesis answers each call only after 2 s
                time.sleep(0.3)
                self.proxy.storm("slow", 2.5)
            time.sleep(rnd.uniform(*self.at_work))
            if i % 2 == 0:
                self.writer.rotate()
                if i % 4 == 0:  # the kill lands while the tailer handles the rotation
                    time.sleep(rnd.uniform(0.0, 0.15))
                    self.kills_after_rotation += 1
            assert proc.poll() is None, self.err.read_text()[-3000:]
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        self.writer.stopping.set()
        self.writer.join(10)
        self.start()
        assert self.n_kills >= 5 and self.kills_after_rotation >= 2
        assert set(self.writer.rotations) == {"rename", "copytruncate"}
        return self.writer.written()

    def stop(self) -> None:
        self.writer.stopping.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(30) == 0, self.err.read_text()[-3000:]


HOST = "web-1"
MALFORMED_EVERY = 37


class AccessLogWriter(Writer):
    def line(self, n: int) -> str:
        if n % MALFORMED_EVERY == 5:
            return f"{n:08d} this is not an access log line"
        ts = datetime.now(timezone.utc).strftime("%d/%b/%Y:%H:%M:%S +0000")
        return (f'10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255} - u{n % 7} [{ts}] '
                f'"GET /page/{n}?q={n % 13} HTTP/1.1" {200 + n % 3} {n} "-" '
                f'"kill-test/{n % 5}"')


def rebuilt(row: tuple) -> str:
    """The line a row was parsed from, from its columns."""
    addr, user, at, request, status, nbytes, referrer, agent = row
    return (f'{addr} - {user or "-"} [{at:%d/%b/%Y:%H:%M:%S} +0000] "{request}" {status} '
            f'{"-" if nbytes is None else nbytes} "{referrer or "-"}" "{agent}"')
