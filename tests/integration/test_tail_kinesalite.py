"""``shardline tail`` against kinesalite: lines appended at a steady rate to a file rotated
both ways (rename-and-create, copytruncate) while the tailer is SIGKILLed again and again,
some kills right after a rotation. At the end every line written is in the stream, and a
line sent more than once has the same event id each time (the loader's dedup then keeps
one row).

The second test runs the same into the warehouse through the whole pipeline (supervisord,
consumers, stage workers, a loader per table, moto S3, PostgreSQL) with the example tables
file's ``log_lines`` table, and counts rows: each line written is exactly one row.

Real parts: kinesalite (the ``stack`` fixture) behind the test's fault proxy, which also
answers every call with 500 for a while (the producer spools), the ``shardline tail``
process with its producer and its SQLite offsets. The proxy is also what keeps kinesalite
alive: it crashes when a client dies in the middle of a request.
"""
from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from shardline.devstack.fleet import Fleet, shardline, wait_for
from tests.integration.test_pipeline_e2e import warehouse
from tests.pipeline import FAST, read_stream
from tests.producer_kit import PutFaultProxy, interpreter_env, python, user_records

pytestmark = pytest.mark.integration

KILLS = 7
TABLES = Path(__file__).resolve().parents[2] / "examples" / "log_lines" / "tables.toml"


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
            with self.lock:
                with self.live.open("ab") as f:
                    for _ in range(5):
                        text = self.line(self.n)
                        data = text.encode() + b"\n"
                        f.write(data)
                        if not self.size:
                            self.first = data
                        self.places[(self.first, self.size)] = text
                        self.size += len(data)
                        self.n += 1
            time.sleep(0.02)

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
    """The tailer started, SIGKILLed and started again KILLS times while the writer writes
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


def test_every_line_reaches_the_stream_through_kills_and_rotations(
        stack, stack_env, stream_name, kinesis, tmp_path):
    proxy = PutFaultProxy(stack.kinesis_endpoint_url).start()
    env = tail_env(stack_env, stream_name, proxy.url, tmp_path)
    shardline("create-stream", "--stream", stream_name, "--shards", "2", env=env)
    (tmp_path / "logs").mkdir()
    run = Run(env, tmp_path / "logs", proxy, stream_name, tmp_path)
    try:
        written = run.kills()
        deadline = time.monotonic() + 90
        while True:
            events = stream_events(kinesis, stream_name)
            missing = written - {e["line"] for e in events}
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(1)
        run.stop()
    finally:
        run.writer.stopping.set()
        proxy.stop()
    assert proxy.injected().get("500", 0) > 0, proxy.calls()
    assert not missing, f"{len(missing)} of {len(written)} lines never reached the stream, " \
                        f"e.g. {sorted(missing)[:5]}"
    assert {e["line"] for e in events} <= written  # nothing invented, nothing torn
    # A line sent again (after a kill) is the same event: same id, same content.
    by_place: dict[tuple[str, int], set[tuple[str, str]]] = {}
    for e in events:
        assert e["host"] == "web-1" and e["type"] == "log_lines"
        by_place.setdefault((e["file_id"], e["offset"]), set()).add((e["event_id"], e["line"]))
    assert all(len(v) == 1 for v in by_place.values()), \
        [v for v in by_place.values() if len(v) > 1][:3]
    ids = {e["event_id"] for e in events}
    # one id per place, and each written line at one place: a copytruncate copy and its
    # original read both are the same file, so the same ids
    assert len(ids) == len(by_place) == len(written)
    # The kills landed while lines were in flight: some were sent again (else this run
    # would prove nothing about re-sent lines).
    assert len(events) > len(ids)


@pytest.mark.slow
def test_every_line_is_one_log_lines_row_through_the_pipeline(
        stack, stack_env, stream_name, pg_conn, kinesis, tmp_path):
    """The same run into the warehouse (the example tables file's log_lines table): every
    line written is exactly one row, found by its place and its content."""
    proxy = PutFaultProxy(stack.kinesis_endpoint_url).start()
    base = {**stack_env, **FAST, "SHARDLINE_KINESIS_STREAM": stream_name,
            "SHARDLINE_TABLES_FILE": str(TABLES)}
    env = {**tail_env(base, stream_name, proxy.url, tmp_path)}
    shardline("migrate", env=base)
    shardline("migrate", "--control", env=base)
    shardline("create-stream", "--stream", stream_name, "--shards", "2", env=base)
    fleet = Fleet(tmp_path / "supervisor", base, stream_name, 2)
    (tmp_path / "logs").mkdir()
    run = Run(env, tmp_path / "logs", proxy, stream_name, tmp_path)
    try:
        fleet.start()
        written = run.kills()

        def rows() -> list[tuple]:
            return warehouse(pg_conn, "SELECT file_id, byte_offset, line, event_id, host "
                                      "FROM log_lines")
        try:
            wait_for(lambda: len(rows()) >= len(written), 180,
                     f"{len(written)} log_lines rows", every=1)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}: {len(rows())}\n{fleet.logs()}") from None
        time.sleep(3)  # a late copy would show now
        got = rows()
        run.stop()
    finally:
        run.writer.stopping.set()
        proxy.stop()
        fleet.stop()
    assert len(got) == len(written)
    assert {r[2] for r in got} == written
    assert len({(r[0], r[1]) for r in got}) == len(got)   # one row per place
    assert {r[4] for r in got} == {"web-1"}
    # ... though the stream holds copies: the loader's dedup removed them
    events = stream_events(kinesis, stream_name)
    assert len(events) > len(got)
