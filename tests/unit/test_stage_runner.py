"""The generic worker loop (shardline.workers.runner.WorkerRunner), driven step by step with
fake workers."""
from __future__ import annotations

import os
import signal
import socket

import pytest
from gearman.errors import ServerUnavailable

from shardline.lifecycle import ForcedStop
from shardline.workers.runner import WorkerRunner


class FakeJob:
    def __init__(self, data: bytes, handle: bytes = b"H:host:1"):
        self.data = data
        self.handle = handle


class FakeWorker:
    """Plays a script: each work() call pops one action.

    actions: ("jobs", [bytes...]) runs the tasks then polls until after_poll says stop
    (or "idle" polls, max 5); ("down",) raises ServerUnavailable.
    """

    def __init__(self, script: list, log: list):
        self.script = script
        self.log = log
        self.tasks = {}
        self.client_id = None
        self.connection_list = []
        self.shut = False

    def register_task(self, name, fn):
        self.tasks[name] = fn

    def set_client_id(self, cid):
        self.client_id = cid

    def after_poll(self, any_activity):  # replaced by the runner
        return True

    def work(self, poll_timeout=None):
        self.log.append(("work", poll_timeout))
        action = self.script.pop(0) if self.script else ("idle",)
        if action[0] == "down":
            raise ServerUnavailable("Found no valid connections in list: []")
        self.connection_list = [type("C", (), {"connected": True})()]
        for data in action[1] if action[0] == "jobs" else []:
            fn = self.tasks[b"stage"]
            try:
                self.log.append(("done", fn(self, FakeJob(data))))
            except Exception as exc:  # what pygearman does: WORK_FAIL
                self.log.append(("fail", type(exc).__name__))
            if not self.after_poll(True):
                return
        for _ in range(5):
            if not self.after_poll(False):
                return
        raise AssertionError("after_poll never said stop")

    def shutdown(self):
        self.shut = True


def make_runner(script, task=None, **kw):
    log, made, sleeps = [], [], []

    def factory():
        w = FakeWorker(script, log)
        made.append(w)
        return w

    runner = WorkerRunner({"stage": task or (lambda data, jlog: data.upper())}, factory,
                          sleep=sleeps.append, **kw)
    return runner, log, made, sleeps


def test_tasks_registered_as_bytes_and_hook_installed():
    runner, log, made, _ = make_runner([("jobs", [b"a"])], client_id="w1")

    def task(data, jlog):
        runner.stop("test")
        return data

    runner.tasks[b"stage"] = task
    assert runner.step() is False
    w = made[0]
    assert list(w.tasks) == [b"stage"] and all(isinstance(k, bytes) for k in w.tasks)
    assert w.client_id == b"w1"
    assert log[0] == ("work", 1.0)


def test_reconnect_with_capped_backoff_after_server_restart():
    script = [("down",)] * 8 + [("jobs", [b"x"])]
    runner, log, made, sleeps = make_runner(script, reconnect_max_s=0.5)
    for _ in range(8):
        assert runner.step() is True
        assert runner.worker is None, "a failed worker object is discarded"
    assert len(made) == 8 and all(w.shut for w in made)
    assert runner.failures == 8
    assert sleeps[0] == pytest.approx(0.1, rel=0.21)
    assert sleeps[1] == pytest.approx(0.2, rel=0.21)
    assert max(sleeps) <= 0.5 and sleeps[-1] == pytest.approx(0.5, rel=0.21)
    assert sorted(sleeps[:3]) == sleeps[:3]
    # gearmand is back: a fresh worker registers again and takes the job
    runner.tasks[b"stage"] = lambda data, jlog: (runner.stop("done"), data.upper())[1]
    assert runner.step() is False
    assert ("done", b"X") in log
    assert len(made) == 9 and runner.failures == 0


def test_stop_during_a_job_finishes_it_then_exits_zero():
    order = []

    def task(data, jlog):
        order.append("start")
        runner.stop("SIGTERM (simulated)")  # arrives mid-job
        order.append("end")
        return b"result-" + data

    runner, log, made, _ = make_runner([("jobs", [b"1", b"2", b"3"])], task=task)
    assert runner.run() == 0
    assert order == ["start", "end"], "the job in hand completes, no further job starts"
    assert ("done", b"result-1") in log and runner.jobs_done == 1
    assert made[0].shut


def test_idle_worker_sees_stop_flag_at_next_poll():
    runner, log, made, _ = make_runner([("idle",)])
    polls = []
    orig = runner._after_poll

    def after_poll(activity):
        polls.append(activity)
        if len(polls) == 2:
            runner.stop("test")
        return orig(activity)

    runner._after_poll = after_poll
    assert runner.run() == 0
    assert len(polls) == 2


def test_failing_job_is_reported_and_worker_keeps_going():
    calls = []

    def task(data, jlog):
        calls.append(data)
        if data == b"bad":
            raise RuntimeError("s3 down")
        if data == b"last":
            runner.stop("test")
        return data

    runner, log, _, _ = make_runner([("jobs", [b"bad", b"ok", b"last"])], task=task)
    assert runner.run() == 0
    assert ("fail", "RuntimeError") in log and ("done", b"ok") in log
    assert (runner.jobs_done, runner.jobs_failed) == (2, 1)


def test_stop_while_backing_off_exits():
    runner, _, _, sleeps = make_runner([("down",)])
    runner._sleep = lambda s: runner.stop("signal during backoff")
    assert runner.step() is False


def test_real_backoff_pause_is_cut_short_by_stop():
    import time

    runner = WorkerRunner({"stage": lambda d, jlog: d}, lambda: None, reconnect_max_s=30)
    runner.stop("already")
    t0 = time.monotonic()
    runner._pause(10)
    assert time.monotonic() - t0 < 0.5


def test_signals_first_sets_flag_second_forces_stop():
    runner, _, _, _ = make_runner([])
    old_term, old_int = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        runner.install_signal_handlers()
        os.kill(os.getpid(), signal.SIGTERM)
        assert runner.stopping and runner.stop_signals.count == 1
        with pytest.raises(ForcedStop):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)
    assert issubclass(ForcedStop, KeyboardInterrupt)  # the CLI maps it to exit 130


def test_real_pygearman_worker_with_no_server_backs_off():
    import gearman

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps = []
    runner = WorkerRunner({"stage": lambda d, jlog: d},
                          lambda: gearman.GearmanWorker([f"127.0.0.1:{port}"]),
                          sleep=sleeps.append, poll_timeout=0.2)
    for _ in range(3):
        assert runner.step() is True
    assert runner.failures == 3 and len(sleeps) == 3 and runner.worker is None
