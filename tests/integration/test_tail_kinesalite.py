"""``shardline tail`` against kinesalite: lines appended at a steady rate to a file rotated
both ways (rename-and-create, copytruncate) while the tailer is SIGKILLed again and again,
some kills right after a rotation. At the end every line written is in the stream, and a
line sent more than once has the same event id each time (the loader's dedup then keeps
one row).

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

from shardline.devstack.fleet import shardline
from tests.pipeline import read_stream
from tests.producer_kit import PutFaultProxy, interpreter_env, python, user_records

pytestmark = pytest.mark.integration

KILLS = 7


class Writer(threading.Thread):
    """Appends numbered lines to app.log; ``rotate()`` alternates the two styles."""

    def __init__(self, logs: Path):
        super().__init__(daemon=True)
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
                        f.write(f"{self.n:08d} GET /page/{self.n % 97} 200\n".encode())
                        self.n += 1
            time.sleep(0.02)

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
            self.rotations.append(style)
            return style


def stream_events(kinesis, stream: str) -> list[dict]:
    records = read_stream(kinesis, stream)
    return [json.loads(d) for _, d in user_records([("k", data) for data in records.values()])]


def test_every_line_reaches_the_stream_through_kills_and_rotations(
        stack, stack_env, stream_name, kinesis, tmp_path):
    proxy = PutFaultProxy(stack.kinesis_endpoint_url).start()
    env = {**stack_env, **interpreter_env(), "SHARDLINE_KINESIS_STREAM": stream_name,
           "SHARDLINE_KINESIS_ENDPOINT_URL": proxy.url,
           "SHARDLINE_PRODUCER_SPOOL_AFTER_MS": "300",
           "SHARDLINE_PRODUCER_SPOOL_DIR": str(tmp_path / "spool"),
           "SHARDLINE_PRODUCER_LINGER_MS": "20", "SHARDLINE_PRODUCER_SYNC_INTERVAL_MS": "20",
           "SHARDLINE_TAIL_POLL_S": "0.05", "SHARDLINE_TAIL_ROTATE_WAIT_S": "1",
           "SHARDLINE_AGENT_HOST_ID": "web-1"}
    shardline("create-stream", "--stream", stream_name, "--shards", "2", env=env)
    logs = tmp_path / "logs"
    logs.mkdir()
    writer = Writer(logs)
    writer.start()
    argv = ["-m", "shardline.cli", "tail", "--stream", stream_name, "--from-beginning",
            str(logs / "app.log*")]
    err = tmp_path / "tail.err"
    rnd = random.Random(21)
    kills_after_rotation = 0
    try:
        for i in range(KILLS):
            with err.open("ab") as e:
                proc = python(*argv, env=env, stderr=e, stdout=subprocess.DEVNULL)
            if i == 3:  # Kinesis answers 500 to everything: the lines go to the spool
                time.sleep(1.0)       # (once this tailer is up and putting)
                proxy.storm("500", 2.5)
            time.sleep(rnd.uniform(0.6, 1.6))
            if i % 2 == 0:
                writer.rotate()
                if i % 4 == 0:  # the kill lands while the tailer handles the rotation
                    time.sleep(rnd.uniform(0.0, 0.15))
                    kills_after_rotation += 1
            assert proc.poll() is None, err.read_text()[-3000:]
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        writer.stopping.set()
        writer.join(10)
        written = {f"{n:08d} GET /page/{n % 97} 200" for n in range(writer.n)}
        with err.open("ab") as e:
            proc = python(*argv, env=env, stderr=e, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 90
        while True:
            events = stream_events(kinesis, stream_name)
            missing = written - {e["line"] for e in events}
            if not missing or time.monotonic() > deadline:
                break
            time.sleep(1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, err.read_text()[-3000:]
    finally:
        writer.stopping.set()
        proxy.stop()
    assert KILLS >= 5 and kills_after_rotation >= 2
    assert set(writer.rotations) == {"rename", "copytruncate"}
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
    # one id per place, and a written line is at one place, except when copytruncate's
    # copy and the original were both read (the same file: same id)
    assert len(ids) == len(by_place) == len(written)
