"""The tailer's status and metrics: each file's offset, bytes behind and oldest unsent line's
age (``Tracker.states`` on simulated time), the report in its SQLite state read back by
another process (``shardline.tail.report``), the stall rule, the per-file series that leave
the scrape with their file, and ``shardline status --tail``'s exit codes."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shardline.cli import main as cli
from shardline.exitcodes import ExitCode
from shardline.tail.checkpoints import Checkpoints
from shardline.tail.report import Report, Reported, TailCollector, assess, read_report
from shardline.tail.tracker import FileState, Handle, Seen, Tracker
from tests.unit.test_tail_loop import FakeProducer, tail

INODE = (1, 7)


def _tracker_at(size: int) -> Tracker:
    """A tracker following a.log (``size`` bytes, all read and durable) since t=0."""
    tr = Tracker({}, first_start=False, from_beginning=True, rotate_wait_s=10)
    tr.step(0.0, [Seen("a.log", "fp", size, INODE)], {})
    tr.advanced(0.0, "fp", size, size, False, 1)
    tr.durable(1)
    return tr


def _step(tr: Tracker, now: float, size: int) -> None:
    tr.step(now, [Seen("a.log", "fp", size, INODE)], {"fp": Handle(size, INODE)})


def test_ages_follow_the_bytes_past_the_offset():
    tr = _tracker_at(100)
    _step(tr, 1.0, 100)
    (st,) = tr.states(1.0)
    assert (st.offset, st.size, st.unsent_age_s, st.advanced_age_s) == (100, 100, 0.0, 0.0)
    _step(tr, 2.0, 150)            # 50 bytes appear at t=2 and are not sent
    _step(tr, 4.0, 180)
    (st,) = tr.states(5.0)
    assert (st.offset, st.size) == (100, 180)
    assert st.unsent_age_s == 3.0 and st.advanced_age_s == 4.0
    tr.advanced(5.0, "fp", 180, 150, False, 2)   # a line boundary at 150 made durable
    tr.durable(2)
    _step(tr, 6.0, 180)
    (st,) = tr.states(6.0)
    # the oldest unsent byte is now one that appeared at t=4
    assert (st.offset, st.unsent_age_s, st.advanced_age_s) == (150, 2.0, 0.0)


def test_a_steady_writer_and_a_moving_tailer_show_a_small_age():
    tr = _tracker_at(0)
    size, seq = 0, 1
    for i in range(1, 200):        # 10 bytes every 0.25 s, made durable one step later
        now = i * 0.25
        prev = size
        size += 10
        _step(tr, now, size)
        seq += 1
        tr.advanced(now, "fp", size, prev, False, seq)
        tr.durable(seq)
    (st,) = tr.states(200 * 0.25)
    assert st.size - st.offset == 10 and st.unsent_age_s <= 2.0 and st.advanced_age_s <= 0.5


def _report(*rows: Reported, reported_at: float = 1000.0) -> Report:
    return Report("state", reported_at, 42, list(rows))


def test_the_stall_rule():
    now = 1000.0
    stalled = Reported("f1", "stuck.log", 100, 150, now - 100, now - 100)
    moving = Reported("f2", "slow.log", 100, 150, now - 100, now - 1)   # behind, but moving
    idle = Reported("f3", "idle.log", 100, 100, now, now - 3600)        # nothing new
    got = {f.path: f for f in assess(_report(stalled, moving, idle), now, 60,
                                     sizes=lambda p, fp: None)}
    assert got["stuck.log"].stalled and got["stuck.log"].behind_bytes == 50
    assert got["stuck.log"].oldest_unsent_age_s == 100
    assert not got["slow.log"].stalled and got["slow.log"].behind_bytes == 50
    assert not got["idle.log"].stalled and got["idle.log"].behind_bytes == 0
    assert got["idle.log"].oldest_unsent_age_s == 0


def test_a_tailer_that_stopped_reporting_stalls_by_the_files_growth():
    now = 1000.0
    row = Reported("f1", "a.log", 100, 100, now - 300, now - 200)  # all sent at its report
    dead = _report(row, reported_at=now - 90)
    (grown,) = assess(dead, now, 60, sizes=lambda p, fp: 400)
    assert grown.stalled and grown.size == 400 and grown.behind_bytes == 300
    assert grown.oldest_unsent_age_s == 90     # at most since its last report
    (same,) = assess(dead, now, 60, sizes=lambda p, fp: 100)
    assert not same.stalled                    # stopped, but nothing to send: idle
    (rotated,) = assess(dead, now, 60, sizes=lambda p, fp: None)
    assert not rotated.stalled and rotated.size == 100
    # a file that was idle for an hour and just got a line is not stalled
    fresh = _report(Reported("f1", "a.log", 100, 100, now - 3600, now - 3600),
                    reported_at=now - 2)
    (new_line,) = assess(fresh, now, 60, sizes=lambda p, fp: 120)
    assert not new_line.stalled and new_line.oldest_unsent_age_s == 2


def _series(collector: TailCollector) -> dict[tuple[str, str], float]:
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {(s.name, s.labels.get("path", "")): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_loop_reports_and_a_file_let_go_leaves_the_scrape(tmp_path: Path):
    logs = tmp_path / "logs"
    logs.mkdir()
    log = logs / "a.log"
    log.write_bytes(b"l0\nl1\n")
    producer = FakeProducer()
    t = tail(tmp_path, producer, report_interval_s=0.0, rotate_wait_s=0.0)
    collector = TailCollector(str(tmp_path / "state"), stall_s=60,
                              clock=lambda: time.time() + 3600)   # an hour from now
    t.cycle()
    rep = read_report(str(tmp_path / "state"))
    assert rep.pid == os.getpid() and [(r.path, r.offset, r.size) for r in rep.files] == \
        [(str(log), 0, 6)]                      # read, not durable yet
    producer.durable_seq = 2
    t.cycle()
    t.cycle()
    series = _series(collector)
    assert series[("shardline_tail_offset_bytes", str(log))] == 6
    assert series[("shardline_tail_behind_bytes", str(log))] == 0
    assert series[("shardline_tail_stalled", str(log))] == 0
    with log.open("ab") as f:                   # grows; the producer makes nothing durable
        f.write(b"l2\n")
    t.cycle()
    t.cycle()
    series = _series(collector)
    assert series[("shardline_tail_behind_bytes", str(log))] == 3
    assert series[("shardline_tail_oldest_unsent_age_seconds", str(log))] >= 3599
    assert series[("shardline_tail_stalled", str(log))] == 1
    producer.durable_seq = 3
    log.rename(logs / "a.old")                  # rotated away, the globs no longer match
    for _ in range(3):
        t.cycle()
    assert read_report(str(tmp_path / "state")).files == []
    series = _series(collector)
    assert not [k for k in series if k[1]], series   # no per-file series left
    assert ("shardline_tail_report_age_seconds", "") in series
    t.shutdown()


def _state_with(tmp_path: Path, *states: FileState) -> str:
    store = Checkpoints(str(tmp_path / "state"))
    store.save([], [])
    store.report(list(states), time.time(), 4242)
    store.close()
    return str(tmp_path / "state")


def test_status_tail_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("SHARDLINE_CONFIG", raising=False)
    monkeypatch.setenv("SHARDLINE_TAIL_STALL_ALERT_S", "30")
    gone = str(tmp_path / "gone" / "x.log")   # size_now finds no file: the report's size
    healthy = _state_with(tmp_path, FileState("f1", gone, 10, 10, 0.0, 500.0))
    assert cli(["status", "--tail", healthy]) == ExitCode.OK
    out = capsys.readouterr().out
    assert gone in out and "STALLED" not in out
    _state_with(tmp_path, FileState("f1", gone, 10, 90, 45.0, 40.0))
    assert cli(["status", "--tail", healthy, "--json"]) == ExitCode.ALERT
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["files"][0]["stalled"] and doc["files"][0]["behind_bytes"] == 80
    assert doc["pid"] == 4242 and len(doc["alerts"]) == 1
    assert "ALERT tail: " + gone in captured.err and "not advancing" in captured.err
    # no state: one line naming the setting, exit 78
    assert cli(["status", "--tail", str(tmp_path / "nothing")]) == ExitCode.CONFIG
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tail.state_dir" in err[0] and "Traceback" not in err[0]


def test_the_host_target_shows_the_tailers_files(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch):
    """``shardline metrics`` (the metrics program of supervisor-config) prints the tailer's
    per-file series beside the multiprocess directory's."""
    state = _state_with(tmp_path, FileState("f1", "/var/log/a.log", 10, 90, 45.0, 40.0))
    (tmp_path / "metrics").mkdir()
    monkeypatch.delenv("SHARDLINE_CONFIG", raising=False)
    monkeypatch.setenv("SHARDLINE_TAIL_STATE_DIR", state)
    monkeypatch.setenv("SHARDLINE_TAIL_STALL_ALERT_S", "30")
    assert cli(["metrics", "--dir", str(tmp_path / "metrics")]) == ExitCode.OK
    samples = {(s.name, s.labels.get("path")): s.value for f in
               text_string_to_metric_families(capsys.readouterr().out) for s in f.samples}
    assert samples[("shardline_tail_behind_bytes", "/var/log/a.log")] == 80
    assert samples[("shardline_tail_stalled", "/var/log/a.log")] == 1
