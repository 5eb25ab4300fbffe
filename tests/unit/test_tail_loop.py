"""The tailer's I/O loop on real files with a stand-in producer: offsets saved only when
durable, a restart re-sends what was not with the same event ids, an over-long line, and an
unreadable path ending the command with NO_INPUT."""
from __future__ import annotations

import collections
import json
import os
from pathlib import Path

import pytest

from shardline.exitcodes import ExitCode
from shardline.tail.checkpoints import Checkpoints
from shardline.tail.loop import LinesDropped, Tail, TailOptions
from shardline.tail.main import main


class FakeProducer:
    def __init__(self, room: int = 10**9) -> None:
        self.events: list[dict] = []
        self.accepted_seq = 0
        self.durable_seq = 0
        self.room = room
        self.closed = False
        self.dropped: collections.Counter[str] = collections.Counter()

    def put(self, event: dict, partition_key: str | None = None) -> bool:
        if self.room <= 0:
            return False
        self.room -= 1
        self.events.append(event)
        self.accepted_seq += 1
        return True

    def close(self) -> bool:
        self.closed = True
        return True


def options(tmp_path: Path, **kw: object) -> TailOptions:
    base = dict(patterns=[str(tmp_path / "logs" / "*.log")], host="h1", event_type="log_lines",
                max_line_bytes=256, poll_s=0.01, rotate_wait_s=1.0, from_beginning=True)
    base.update(kw)
    return TailOptions(**base)  # type: ignore[arg-type]


def tail(tmp_path: Path, producer: FakeProducer, **kw: object) -> Tail:
    return Tail(options(tmp_path, **kw), producer, Checkpoints(str(tmp_path / "state")))  # type: ignore[arg-type]


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    (tmp_path / "logs").mkdir()
    return tmp_path / "logs"


def test_restart_resends_what_was_not_durable_with_the_same_ids(tmp_path, logs):
    log = logs / "a.log"
    log.write_bytes(b"l0\nl1\nl2\n")
    p1 = FakeProducer()
    t1 = tail(tmp_path, p1)
    t1.cycle()
    assert [e["line"] for e in p1.events] == ["l0", "l1", "l2"]
    with log.open("ab") as f:
        f.write(b"l3\n")
    t1.cycle()
    p1.durable_seq = 3          # l3 is not durable yet ...
    t1.cycle()
    t1.store.close()            # ... when the process dies (no shutdown)
    p2 = FakeProducer()
    t2 = tail(tmp_path, p2)
    t2.cycle()
    assert [e["line"] for e in p2.events] == ["l3"]
    assert p2.events[0]["event_id"] == p1.events[3]["event_id"]
    assert p2.events[0]["offset"] == 9 and p2.events[0]["path"] == str(log)
    assert p2.events[0]["type"] == "log_lines" and p2.events[0]["host"] == "h1"


def test_a_full_producer_makes_the_line_wait_not_vanish(tmp_path, logs):
    (logs / "a.log").write_bytes(b"a\nb\nc\n")
    p = FakeProducer(room=1)
    t = tail(tmp_path, p)
    t.cycle()
    assert [e["line"] for e in p.events] == ["a"]
    p.room = 10
    t.cycle()
    t.cycle()
    assert [e["line"] for e in p.events] == ["a", "b", "c"]


def test_an_over_long_line_is_one_truncated_event(tmp_path, logs):
    (logs / "a.log").write_bytes(b"first\n" + b"x" * 5000 + b"\nlast\n")
    p = FakeProducer()
    t = tail(tmp_path, p)
    t.cycle()
    lines = [(e["line"], e.get("truncated")) for e in p.events]
    assert lines == [("first", None), ("x" * 256, 256), ("last", None)]
    assert all(len(json.dumps(e)) < 2000 for e in p.events)


def test_first_start_begins_at_the_end_and_saves_it_at_once(tmp_path, logs):
    (logs / "a.log").write_bytes(b"before\n")
    p = FakeProducer()
    t = tail(tmp_path, p, from_beginning=False)
    t.cycle()
    assert p.events == []
    t.store.close()
    with (logs / "a.log").open("ab") as f:
        f.write(b"after\n")
    p2 = FakeProducer()
    tail(tmp_path, p2, from_beginning=False).cycle()   # not a first start any more
    assert [e["line"] for e in p2.events] == ["after"]


def test_an_unreadable_path_is_one_line_and_no_input(tmp_path, capsys):
    code = main(["--stream", "s", "--set", f"tail.state_dir={tmp_path}",
                 str(tmp_path / "missing-dir" / "*.log")])
    assert code == ExitCode.NO_INPUT
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such directory" in err
    if os.geteuid() != 0:  # root reads everything
        f = tmp_path / "secret.log"
        f.write_text("x\n")
        f.chmod(0)
        assert main(["--stream", "s", str(f)]) == ExitCode.NO_INPUT
        assert "permission denied" in capsys.readouterr().err


def test_directories_and_fifos_a_glob_matches_are_left_alone(tmp_path, logs):
    (logs / "dir.log").mkdir()
    os.mkfifo(logs / "pipe.log")   # opening it would block the tailer
    (logs / "a.log").write_bytes(b"a\n")
    p = FakeProducer()
    tail(tmp_path, p).cycle()
    assert [e["line"] for e in p.events] == ["a"]


def test_lines_the_producer_dropped_after_accepting_them_stop_the_tailer_before_them(
        tmp_path, logs):
    (logs / "a.log").write_bytes(b"a\nb\n")
    p = FakeProducer()
    t = tail(tmp_path, p)
    t.cycle()
    p.dropped["spool_full"] += 2   # counted, then published as durable: must not count
    p.durable_seq = 2
    with pytest.raises(LinesDropped, match="dropped 2 accepted"):
        t.cycle()
    t.shutdown()
    assert list(Checkpoints(str(tmp_path / "state")).offsets().values()) == \
        [(str(logs / "a.log"), 0)]
