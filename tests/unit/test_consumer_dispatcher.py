"""Dispatcher threads: bytes task name, poll_timeout always, retries, client rebuilds."""
from __future__ import annotations

import hashlib
import threading
import time

from shardline.consumers.dispatcher import Dispatcher, unique_id
from shardline.codec import Batch, Record, decode


class Req:
    def __init__(self, state: str, result: bytes | None = None):
        self.state, self.result = state, result


class FakeClient:
    def __init__(self, script: list, calls: list):
        self.script, self.calls = script, calls
        self.closed = False

    def submit_job(self, task, data, unique=None, poll_timeout=None, **kw):
        assert isinstance(task, bytes) and poll_timeout is not None
        self.calls.append((task, decode(data).batch_id, unique, poll_timeout, id(self)))
        step = self.script.pop(0) if self.script else "COMPLETE"
        if isinstance(step, BaseException):
            raise step
        if step == "COMPLETE":
            return Req("COMPLETE", b"")  # what the stage job answers
        return Req(step)

    def shutdown(self):
        self.closed = True


def batch(i: int) -> Batch:
    return Batch("s", "sh", [Record(str(10 ** 55 + i), 0, "k", b"d", 0)])


def make(script, attempts=3):
    calls, clients = [], []

    def factory():
        c = FakeClient(script, calls)
        clients.append(c)
        return c

    d = Dispatcher(factory, "stage_fn", threads=2, job_timeout_s=7, max_attempts=attempts,
                   retry_max_s=0.01, sleep=lambda s: None)
    d.start()
    return d, calls, clients


def outcomes(d: Dispatcher, n: int, timeout: float = 5.0):
    got, end = [], time.monotonic() + timeout
    while len(got) < n and time.monotonic() < end:
        d.wait(0.05)
        got += d.poll()
    d.stop()
    return sorted(got, key=lambda o: o.ticket)


def test_unique_id_follows_the_contract():
    b = batch(1)
    assert unique_id("s", b) == hashlib.sha1(f"s/{b.batch_id}".encode()).hexdigest()
    assert len(unique_id("s", b)) <= 64


def test_success_uses_bytes_task_and_poll_timeout():
    d, calls, clients = make([])
    for i in range(5):
        d.submit(i + 1, "s", batch(i))
    got = outcomes(d, 5)
    assert [o.ok for o in got] == [True] * 5 and all(o.error is None for o in got)
    assert [o.ticket for o in got] == [1, 2, 3, 4, 5]
    assert all(c[0] == b"stage_fn" and c[3] == 7 for c in calls)
    assert len(clients) <= 2  # one client per thread, reused after success


def test_failed_and_lost_jobs_are_retried_with_a_new_client():
    d, calls, clients = make(["FAILED", "CREATED", "COMPLETE"], attempts=3)
    d.submit(1, "s", batch(1))
    (o,) = outcomes(d, 1)
    assert o.ok and o.attempts == 3
    assert len({c[4] for c in calls}) == 3  # a fresh client after each failure
    assert all(c.closed for c in clients[:2])
    assert len({c[2] for c in calls}) == 1  # same unique id: the same idempotent job


def test_connection_errors_rebuild_the_client():
    d, calls, clients = make([ConnectionResetError("gone"), "COMPLETE"], attempts=3)
    d.submit(1, "s", batch(1))
    (o,) = outcomes(d, 1)
    assert o.ok and len(clients) == 2


def test_gives_up_after_max_attempts():
    d, calls, clients = make(["FAILED"] * 10, attempts=4)
    d.submit(9, "s", batch(9))
    (o,) = outcomes(d, 1)
    assert not o.ok and o.attempts == 4 and "failed" in o.error
    assert len(calls) == 4


def test_does_not_block_the_caller():
    gate = threading.Event()

    class Slow(FakeClient):
        def submit_job(self, *a, **kw):
            gate.wait(5)
            return super().submit_job(*a, **kw)

    calls: list = []
    d = Dispatcher(lambda: Slow([], calls), "f", threads=2, job_timeout_s=5, max_attempts=1,
                   retry_max_s=0.01)
    d.start()
    t0 = time.monotonic()
    for i in range(10):
        d.submit(i + 1, "s", batch(i))
    assert time.monotonic() - t0 < 0.5
    gate.set()
    assert len(outcomes(d, 10)) == 10


def test_backoff_doubles_from_half_a_second_so_defaults_ride_out_a_30s_outage():
    from shardline.settings import ConsumerSettings

    slept: list[float] = []
    calls: list = []
    cs = ConsumerSettings()
    d = Dispatcher(lambda: FakeClient(["FAILED"] * 20, calls), "stage_fn", threads=1,
                   job_timeout_s=7, max_attempts=cs.job_max_attempts,
                   retry_max_s=cs.job_retry_max_s, sleep=slept.append)
    d.start()
    d.submit(1, "s", batch(1))
    (o,) = outcomes(d, 1)
    assert not o.ok and len(calls) == cs.job_max_attempts
    floors = [0.5, 1, 2, 4, 8, 10, 10][:cs.job_max_attempts - 1]
    assert len(slept) == len(floors)
    assert all(f <= s <= f + 0.5 for f, s in zip(floors, slept, strict=True)), slept
    assert sum(slept) >= 30
