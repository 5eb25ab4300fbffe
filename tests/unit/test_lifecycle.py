"""shardline.lifecycle: the two-step stop, the reconnecting transaction, first_line.

No real signals: the handler is called directly (as the kernel would, in the main
thread; or from another thread, the way a test or a relay would)."""
from __future__ import annotations

import signal
import threading
import time

import psycopg2
import pytest

from shardline.errors import ServiceUnavailable
from shardline.exitcodes import ExitCode
from shardline.lifecycle import ForcedStop, StopSignals, first_line, transaction


class Log:
    def __init__(self, fail: bool = False):
        self.lines: list[str] = []
        self.fail = fail

    def info(self, fmt: str, *args) -> None:
        if self.fail:
            raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stderr>'>")
        self.lines.append(fmt % args)


def test_first_signal_asks_for_a_graceful_stop_once():
    reasons: list[str] = []
    log = Log()
    stop = StopSignals(on_stop=reasons.append, log=log, notice="finishing the current load")
    assert not stop.requested and not stop.forced and not stop.is_set()
    stop.handler(signal.SIGTERM, None)
    assert stop.requested and not stop.forced and stop.is_set()
    assert stop.reason == "signal SIGTERM" and reasons == ["signal SIGTERM"]
    assert log.lines == ["SIGTERM: finishing the current load"]
    stop.check()  # a graceful stop raises nothing


def test_second_signal_in_the_main_thread_raises_forced_stop():
    stop = StopSignals()
    stop.handler(signal.SIGTERM)
    with pytest.raises(ForcedStop, match="second signal SIGINT"):
        stop.handler(signal.SIGINT)
    assert stop.forced and stop.count == 2
    # no `except Exception` on the way swallows it; the CLI maps KeyboardInterrupt to 130
    assert issubclass(ForcedStop, KeyboardInterrupt) and not issubclass(ForcedStop, Exception)
    assert ExitCode.FORCED_STOP == 130


def test_second_signal_off_the_main_thread_is_recorded_and_acted_on_by_the_loop():
    stop = StopSignals()
    errors: list[BaseException] = []

    def relay() -> None:
        try:
            stop.handler(signal.SIGTERM)
            stop.handler(signal.SIGTERM)
        except BaseException as exc:  # noqa: BLE001 - the test asserts there is none
            errors.append(exc)

    t = threading.Thread(target=relay)
    t.start()
    t.join()
    assert errors == [] and stop.forced
    with pytest.raises(ForcedStop):
        stop.check()
    with pytest.raises(ForcedStop):
        stop.sleep(10)


def test_a_failing_log_line_never_breaks_the_handler():
    reasons: list[str] = []
    stop = StopSignals(on_stop=reasons.append, log=Log(fail=True))
    stop.handler(signal.SIGINT)
    assert stop.requested and reasons == ["signal SIGINT"]


def test_wait_returns_early_on_a_stop_and_times_out_without_one():
    stop = StopSignals()
    t0 = time.monotonic()
    assert stop.wait(0.1) is False
    assert time.monotonic() - t0 >= 0.1
    threading.Timer(0.05, stop.handler, (signal.SIGTERM,)).start()
    t0 = time.monotonic()
    assert stop.wait(10) is True
    assert time.monotonic() - t0 < 2


def test_sleep_is_not_cut_short_by_a_graceful_stop():
    stop = StopSignals()
    stop.handler(signal.SIGTERM)
    t0 = time.monotonic()
    stop.sleep(0.12)  # a retry's backoff still waits
    assert time.monotonic() - t0 >= 0.12


def test_install_sets_the_handler_for_sigterm_and_sigint():
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    stop = StopSignals()
    try:
        stop.install()
        assert all(signal.getsignal(s) == stop.handler for s in old)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def test_first_line():
    assert first_line(ValueError("could not connect\nDETAIL: refused\n")) == "could not connect"
    assert first_line(ValueError("  \n ")) == "ValueError"
    assert first_line(psycopg2.OperationalError()) == "OperationalError"


# -- transaction ------------------------------------------------------------------------
class Cursor:
    def __init__(self, conn: "Conn"):
        self.conn = conn

    def __enter__(self) -> "Cursor":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def execute(self, sql: str) -> None:
        if self.conn.fail_execute is not None:
            raise self.conn.fail_execute
        self.conn.log.append(sql)


class Conn:
    def __init__(self, fail_execute: BaseException | None = None):
        self.fail_execute = fail_execute
        self.log: list[str] = []
        self.closed = 0
        self.autocommit = True

    def cursor(self) -> Cursor:
        return Cursor(self)

    def commit(self) -> None:
        self.log.append("COMMIT")

    def rollback(self) -> None:
        self.log.append("ROLLBACK")

    def close(self) -> None:
        self.closed = 1


class Owner:
    def __init__(self, *conns: Conn):
        self.made = list(conns)
        self._conn = None
        self.closes = 0

    def _connect(self) -> Conn:
        return self.made.pop(0)

    def close(self) -> None:
        self.closes += 1
        if self._conn is not None:
            self._conn.close()
        self._conn = None


def test_transaction_commits_on_success_and_keeps_the_connection():
    conn = Conn()
    owner = Owner(conn)
    for _ in range(2):
        with transaction(owner, "things") as cur:
            cur.execute("SELECT 1")
    assert conn.log == ["SELECT 1", "COMMIT"] * 2
    assert owner._conn is conn and conn.autocommit is False and owner.made == []


def test_transaction_rolls_back_and_reraises_other_errors():
    conn = Conn(fail_execute=psycopg2.ProgrammingError("syntax error"))
    owner = Owner(conn)
    with pytest.raises(psycopg2.ProgrammingError):
        with transaction(owner, "things") as cur:
            cur.execute("SELEC 1")
    assert conn.log == ["ROLLBACK"] and owner._conn is conn and owner.closes == 0


def test_a_connection_error_closes_the_connection_and_the_next_call_reconnects():
    dead = Conn(fail_execute=psycopg2.OperationalError("server closed the connection\nmore"))
    fresh = Conn()
    owner = Owner(dead, fresh)
    with pytest.raises(ServiceUnavailable, match=r"^things: server closed the connection$"):
        with transaction(owner, "things") as cur:
            cur.execute("SELECT 1")
    assert dead.closed and owner._conn is None and owner.closes == 1
    with transaction(owner, "things") as cur:
        cur.execute("SELECT 1")
    assert fresh.log == ["SELECT 1", "COMMIT"] and owner._conn is fresh


def test_consumer_run_acts_on_a_stop_that_came_before_it_started():
    """A SIGTERM between ``install()`` and ``run()`` (settings, clients being built) must
    still stop the consumer gracefully, not be ignored until supervisord SIGKILLs it."""
    import signal as _signal
    from types import SimpleNamespace

    from shardline.consumers.main import run
    from shardline.lifecycle import StopSignals

    class OneShardConsumer:
        def __init__(self) -> None:
            self.done, self.exit_code, self.stop_requests, self.steps = False, 0, 0, 0
            self.dispatcher = SimpleNamespace(start=lambda: None, wait=lambda t: False)
            self.lease = SimpleNamespace(release=lambda: None)
            self.log = SimpleNamespace(warning=lambda *a: None, error=lambda *a: None)

        def start(self) -> None:
            pass

        def request_stop(self) -> None:
            self.stop_requests += 1

        def step(self) -> float:
            self.steps += 1
            self.done = self.stop_requests > 0 or self.steps > 50
            return 0.0

    stop = StopSignals()
    stop.handler(_signal.SIGTERM)  # arrives before run()
    consumer = OneShardConsumer()
    assert run(consumer, stop) == 0
    assert consumer.stop_requests == 1 and consumer.steps == 1
