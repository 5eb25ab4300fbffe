"""``shardline relay`` with real parts: the process on the shared stack's kinesalite, its
protocol on the unix socket, the Node client (``examples/relay/pageview.js`` under node),
its metrics; then a real php-fpm pool whose page (``examples/relay/pageview.php``) sends
one page view per request while Kinesis stalls and the relay is SIGKILLed and restarted
(twice) and stuck (SIGSTOP) for a moment:
every page view the relay acknowledged is exactly one page_views row once the pipeline
(supervisord, consumers, stage workers, loader, PostgreSQL) has drained, and no page
waited for Kinesis or for the dead relay.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from shardline.devstack.fleet import Fleet, shardline, wait_for
from tests.integration.test_pipeline_e2e import warehouse
from tests.pipeline import FAST, free_address, read_stream, scrape
from tests.producer_kit import PutFaultProxy, percentile, user_records
from tests.relay_kit import PAGE, PhpFpm, RelayProcess, body, fastcgi_get, relay_env, \
    short_dir

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sock_dir() -> Iterator[str]:
    """A short directory for the unix sockets (and php-fpm's files), removed afterwards."""
    path = short_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


def stream_ids(kinesis, stream: str) -> list[str]:
    records = read_stream(kinesis, stream)
    return [json.loads(d)["event_id"]
            for _, d in user_records([("k", data) for data in records.values()])]


def ask(sock: str, data: bytes, lines: int) -> list[str]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(sock)
        s.sendall(data)
        got = b""
        while got.count(b"\n") < lines:
            chunk = s.recv(65536)
            assert chunk, got
            got += chunk
    return got.decode().splitlines()


def test_protocol_node_client_metrics_and_graceful_stop(stack, stack_env, stream_name,
                                                        kinesis, tmp_path, sock_dir):
    d = sock_dir
    metrics = free_address()
    env = relay_env(stack_env, stream_name, stack.kinesis_endpoint_url, str(tmp_path / "j"),
                    f"{d}/relay.sock", SHARDLINE_RELAY_METRICS_ADDRESS=metrics,
                    SHARDLINE_RELAY_MAX_EVENT_BYTES="1000")
    shardline("create-stream", "--stream", stream_name, "--shards", "1", env=env)
    relay = RelayProcess(env, tmp_path / "relay.err").start()
    try:
        assert os.stat(relay.sock).st_mode & 0o777 == 0o660
        got = ask(relay.sock, b'{"event_id":"own-1","session_id":"s1"}\nnot json\n[1]\n\n'
                              b'{"url":"/no-id"}\n' + b'{"x":"' + b"y" * 2000 + b'"}\n'
                              b'{"event_id":"own-2"}\n', 6)
        assert got[0] == "OK own-1" and got[6 - 1] == "OK own-2"
        assert got[1] == "ERR invalid not JSON" and got[2] == "ERR invalid not a JSON object"
        assert got[3].startswith("OK ") and len(got[3]) == 3 + 36   # an id assigned
        assert got[4].startswith("ERR too_large")
        node = subprocess.run(["node", str(ROOT / "examples" / "relay" / "pageview.js"), "40"],
                              env={**os.environ, "SHARDLINE_RELAY_SOCKET": relay.sock},
                              capture_output=True, text=True, timeout=30)
        answers = node.stdout.splitlines()
        assert len(answers) == 40 and all(a.startswith("OK ") for a in answers), node
        node_ids = {a[3:] for a in answers}
        wait_for(lambda: scrape(metrics).get("shardline_relay_accepted_total", 0) >= 43, 10,
                 "the relay's metrics", every=0.2)
        m = scrape(metrics)
        assert m["shardline_relay_accepted_total"] == 43
        assert m["shardline_relay_refused_total"] == 3
        assert relay.stop() == 0, relay.log.read_text()[-3000:]
    finally:
        relay.stop()
    t0 = time.perf_counter()
    with pytest.raises(OSError), socket.socket(socket.AF_UNIX) as s:   # down: refused at once
        s.connect(relay.sock)
    assert time.perf_counter() - t0 < 0.05
    t0 = time.perf_counter()   # the Node client with the relay down: dropped at once
    node = subprocess.run(["node", str(ROOT / "examples" / "relay" / "pageview.js"), "1"],
                          env={**os.environ, "SHARDLINE_RELAY_SOCKET": relay.sock},
                          capture_output=True, text=True, timeout=30)
    assert node.stdout.split() == ["DROPPED"] and time.perf_counter() - t0 < 5
    ids = stream_ids(kinesis, stream_name)
    assert {"own-1", "own-2", got[3][3:]} | node_ids == set(ids) and len(ids) == 43
    assert os.listdir(tmp_path / "j") == ["lock"]   # all shipped: the journal is empty


class Pages(threading.Thread):
    """Requests the page from ``threads`` threads until stopped; (seconds, body) each."""

    def __init__(self, fpm: PhpFpm, threads: int = 3):
        super().__init__(daemon=True)
        self.fpm, self.threads = fpm, threads
        self.done: list[tuple[float, float, str]] = []   # (start, seconds, body)
        self.stopping = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        workers = [threading.Thread(target=self._one, args=(w,)) for w in range(self.threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    def _one(self, w: int) -> None:
        i = 0
        while not self.stopping.is_set():
            t0 = time.perf_counter()
            got = body(fastcgi_get(self.fpm.sock, str(PAGE), f"/p/{w}/{i}",
                                   cookie=f"sid=s-relay-test-{w:02d}"))
            with self.lock:
                self.done.append((t0, time.perf_counter() - t0, got))
            i += 1
            time.sleep(0.005)

    def since(self, t: float) -> list[tuple[float, float, str]]:
        with self.lock:
            return [x for x in self.done if x[0] >= t]


@pytest.mark.slow
def test_php_fpm_page_views_exactly_once_through_a_stall_and_kill_9(
        stack, stack_env, stream_name, pg_conn, tmp_path, sock_dir):
    proxy = PutFaultProxy(stack.kinesis_endpoint_url, stall_s=3.0).start()
    d = sock_dir
    base = {**stack_env, **FAST, "SHARDLINE_KINESIS_STREAM": stream_name}
    env = relay_env(base, stream_name, proxy.url, str(tmp_path / "journal"), f"{d}/relay.sock",
                    SHARDLINE_PRODUCER_SPOOL_DIR=str(tmp_path / "spool"),
                    SHARDLINE_PRODUCER_SPOOL_AFTER_MS="300")
    shardline("migrate", env=base)
    shardline("migrate", "--control", env=base)
    shardline("create-stream", "--stream", stream_name, "--shards", "2", env=base)
    fleet = Fleet(tmp_path / "supervisor", base, stream_name, 2)
    relay = RelayProcess(env, tmp_path / "relay.err")
    fpm = PhpFpm(d, relay.sock)
    pages = Pages(fpm)
    try:
        fleet.start()
        relay.start()
        pages.start()
        time.sleep(1.5)
        proxy.storm("slow", 6.0)           # Kinesis stalls: every call hangs 3 s
        time.sleep(1.0)
        relay.kill()                       # acknowledged, maybe not shipped: journaled
        down = time.perf_counter()
        time.sleep(0.7)                    # pages while nobody listens
        up = time.perf_counter()
        relay.start()                      # ships the journal again, through the stall
        time.sleep(1.5)
        relay.kill()                       # once more, mid-stall
        relay.start()
        time.sleep(1.0)
        assert relay.proc is not None
        relay.proc.send_signal(signal.SIGSTOP)   # the relay itself stuck: connects, no answer
        frozen = time.perf_counter()
        time.sleep(0.5)
        thawed = time.perf_counter()
        relay.proc.send_signal(signal.SIGCONT)   # it then takes what was sent meanwhile
        time.sleep(1.0)
        pages.stopping.set()
        pages.join(30)
        assert relay.stop() == 0, relay.log.read_text()[-3000:]
        relay.start()                      # what the stop left in the journal (if any)
        done = list(pages.done)
        acked = {b.split()[1] for _, _, b in done if b.startswith("OK ")}
        dropped = [(t, s) for t, s, b in done if b.startswith("DROPPED")]

        def rows() -> list[tuple]:
            return warehouse(pg_conn, "SELECT event_id::text, count(*) FROM page_views "
                                      "GROUP BY 1")
        try:
            wait_for(lambda: len(rows()) >= len(acked), 180, f"{len(acked)} page_views rows",
                     every=1)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}: {len(rows())}\n{fleet.logs()}") from None
        time.sleep(3)  # a late copy would show now
        got = rows()
    finally:
        pages.stopping.set()
        relay.stop()
        fpm.stop()
        proxy.stop()
        fleet.stop()
    assert proxy.injected().get("slow", 0) > 0, proxy.calls()
    assert len(acked) > 100
    assert {r[1] for r in got} == {1}                 # one row each ...
    assert acked <= {r[0] for r in got}               # ... for every acknowledged view
    # A view whose answer did not come in time (a kill, a busy machine) may have been
    # journaled all the same: it lands, once. No other view does.
    unanswered = Path(d, "php-errors.log").read_text().count("no answer within")
    assert {r[0] for r in got} <= {b.split()[1] for _, _, b in done}
    assert len(got) - len(acked) <= unanswered, (len(got), len(acked), unanswered)
    # The page never waited: for Kinesis (the stall) nor for the dead relay (refused).
    while_down = [s for t, s in dropped if down <= t < up]
    assert while_down, "no page was served while the relay was down"
    while_stuck = [s for t, s in dropped if frozen <= t < thawed]
    assert while_stuck, "no page was served while the relay was stuck"
    # stuck: the page gives up after its 50 ms (connect, then the answer), never later
    assert max(while_stuck) < 0.3, sorted(while_stuck)[-5:]
    assert max(s for _, s, _ in done) < 0.5, sorted(s for _, s, _ in done)[-5:]
    assert percentile([s for _, s, _ in done], 99) < 0.1


def test_a_second_sigterm_exits_at_once_and_the_next_start_ships_the_journal(
        stack, stack_env, stream_name, kinesis, tmp_path, sock_dir):
    """Kinesis unreachable: the graceful stop waits for the producer's close time; a second
    SIGTERM ends it at once (exit 130), and what was acknowledged is shipped by the next
    start, against the reachable Kinesis."""
    d = sock_dir
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"   # nobody listens there afterwards
    state = str(tmp_path / "j")
    env = relay_env(stack_env, stream_name, dead, state, f"{d}/relay.sock",
                    SHARDLINE_PRODUCER_CLOSE_TIMEOUT_S="30")
    shardline("create-stream", "--stream", stream_name, "--shards", "1", env=stack_env)
    relay = RelayProcess(env, tmp_path / "relay.err").start()
    assert ask(relay.sock, b'{"event_id":"kept-1"}\n{"event_id":"kept-2"}\n', 2) == \
        ["OK kept-1", "OK kept-2"]
    assert relay.proc is not None
    relay.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "stopping" in relay.log.read_text(), 10, "the graceful stop", every=0.05)
    time.sleep(0.3)
    t0 = time.monotonic()
    relay.proc.send_signal(signal.SIGTERM)
    assert relay.proc.wait(5) == 130
    assert time.monotonic() - t0 < 2
    again = RelayProcess({**env, "SHARDLINE_KINESIS_ENDPOINT_URL": stack.kinesis_endpoint_url},
                         tmp_path / "relay2.err").start()
    try:
        wait_for(lambda: {"kept-1", "kept-2"} <= set(stream_ids(kinesis, stream_name)), 30,
                 "the journaled events in the stream", every=0.3)
    finally:
        assert again.stop() == 0
    assert "shipped again" in again.log.read_text()
