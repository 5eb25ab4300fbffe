"""A Kinesis outage with the spool on, the producer SIGKILLed in the middle and restarted:
every event accepted before the last sync reaches the warehouse exactly once.

Real parts: kinesalite behind the fault proxy (every call dropped, then answered 500),
a producer process (``tests.producer_child``), and the fleet (consumers, stage
workers, loader under supervisord) reading the stream into PostgreSQL.
The outage lasts ``PRODUCER_TEST_OUTAGE_S`` seconds (default 60, the issue's case).
"""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from shardline.devstack.fleet import Fleet, shardline, wait_for
from tests.pipeline import FAST
from tests.producer_kit import PutFaultProxy, child_env, event_id, interpreter_env, python

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_S = float(os.environ.get("PRODUCER_TEST_OUTAGE_S", "60"))
RATE = 250


class Child:
    """A producer process whose stdout is read as it comes (the pump must never block)."""

    def __init__(self, env: dict, run: str, count: int):
        import subprocess

        self.run = run
        self.proc = python("-m", "tests.producer_child", "--run", run, "--count", str(count),
                           "--rate", str(RATE), env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
        self.base = 0
        self.durable = 0
        self.stats = ""
        self.dropped: list[int] = []
        self.err: list[str] = []
        self.threads = [threading.Thread(target=self._out, daemon=True),
                        threading.Thread(target=self._errs, daemon=True)]
        for t in self.threads:
            t.start()

    def _out(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            word, _, rest = line.strip().partition(" ")
            if word == "base":
                self.base = int(rest)
            elif word == "durable":
                self.durable = max(self.durable, int(rest))
            elif word == "dropped":
                self.dropped.append(int(rest))
            elif word == "stats":
                self.stats = rest

    def _errs(self) -> None:
        for line in self.proc.stderr:  # type: ignore[union-attr]
            self.err.append(line)

    def durable_count(self) -> int:
        """How many of this run's events (0..n-1) are durable."""
        return max(0, self.durable - self.base) if self.base else 0


def test_outage_kill_restart_every_synced_event_lands_once(
        stack, stack_env, stream_name, pg_conn, tmp_path):
    env = {**stack_env, **FAST, **interpreter_env(), "SHARDLINE_KINESIS_STREAM": stream_name}
    shardline("migrate", env=env)
    shardline("create-stream", "--stream", stream_name, "--shards", "2", env=env)
    proxy = PutFaultProxy(stack.kinesis_endpoint_url).start()
    spool = tmp_path / "spool"
    penv = child_env({**env, "SHARDLINE_KINESIS_ENDPOINT_URL": proxy.url}, spool_dir=spool,
                     spool_after_ms=300, sync_interval_ms=50, linger_ms=20, aggregate="true",
                     backoff_max_ms=500)
    fleet = Fleet(tmp_path / "supervisor", env, stream_name, workers=2)
    children: list[Child] = []
    try:
        first = Child(penv, "a", count=100_000)
        children.append(first)
        wait_for(lambda: first.durable_count() > RATE, 30, "the first producer to send")
        proxy.storm("drop", OUTAGE_S / 2)  # answers lost: some puts landed, the rest did not
        outage_started = time.monotonic()
        time.sleep(OUTAGE_S / 4)
        proxy.storm("500", OUTAGE_S - (time.monotonic() - outage_started))
        time.sleep(max(0.0, outage_started + OUTAGE_S / 2 - time.monotonic()))
        durable_a = first.durable_count()  # read before the kill: the last sync it reported
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(10)
        assert durable_a > RATE * OUTAGE_S / 2 * 0.5, \
            f"only {durable_a} events durable before the kill: {''.join(first.err)[-2000:]}"

        # Restarted with the same spool directory while Kinesis is still down; it must send
        # the killed process's spool and its own events once Kinesis answers again.
        left = OUTAGE_S - (time.monotonic() - outage_started)
        count_b = int(RATE * (left + 3))
        second = Child(penv, "b", count=count_b)
        children.append(second)
        fleet.start()
        second.proc.wait(left + 180)
        assert second.proc.returncode == 0, f"second producer: {''.join(second.err)[-3000:]}"
        assert not first.dropped and not second.dropped
        assert proxy.injected().get("drop", 0) > 0 and proxy.injected().get("500", 0) > 0

        required = {event_id("a", i) for i in range(durable_a)} | \
            {event_id("b", i) for i in range(count_b)}
        allowed = required | {event_id("a", i) for i in range(durable_a, durable_a + 20 * RATE)}

        def loaded() -> bool:
            with pg_conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM page_views WHERE event_id = ANY(%s)",
                            (list(required),))
                return cur.fetchone()[0] >= len(required)

        try:
            wait_for(loaded, 180, f"{len(required)} events in the warehouse", every=1)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{fleet.logs()}") from None
        with pg_conn.cursor() as cur:
            cur.execute("SELECT event_id, count(*) FROM page_views GROUP BY event_id")
            rows = dict(cur.fetchall())
        assert all(n == 1 for n in rows.values()), "an event is in the warehouse twice"
        assert required <= set(rows), f"{len(required - set(rows))} durable events are missing"
        assert set(rows) <= allowed, "the warehouse holds events nobody put"
        assert '"spooled": 0' not in second.stats, second.stats
        assert not list(spool.glob("slot-*/*.seg")), "the spool was not emptied"
    finally:
        for child in children:
            if child.proc.poll() is None:
                child.proc.kill()
        fleet.stop()
        proxy.stop()
