"""The relay for PHP: php-fpm request latency with one page view sent per request.

A real php-fpm pool (Debian's ``php-fpm``, 4 static workers) serves
``examples/relay/pageview.php``, which sends one page view to ``shardline relay`` per
request and waits for its answer (the event fsynced in the relay's journal), and beside it
the same page with no send (the event built and encoded, not sent). The requests go through
a small FastCGI client (the web server's part) from ``--clients`` threads back to back,
while another client sends ``--background-rate`` events/s through the same relay (the
producer busy shipping, as at 100,000 page views a minute).
Kinesis is kinesalite behind ``tests.producer_kit.PutFaultProxy`` (a process of its own),
healthy, then stalling every call 2 s. Each round measures the four pages (send/no send x
healthy/stalled); the figures are medians over rounds of each phase's p50/p99.

Also in the same run, the journal's cost: the bare ``fdatasync`` of a small append in the
relay's state directory (what each group commit pays), the relay's answer time seen by a
Python client (connect, one line, the OK: one event per commit), and events/s with 4
clients pipelining 10,000 lines each, with the events per commit that gives.

    .venv/bin/python bench/bench_relay.py [--rounds 3] [--requests 2000] [--clients 2]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shardline import devstack  # noqa: E402
from shardline.devstack.fleet import shardline  # noqa: E402
from tests.pipeline import free_address, scrape  # noqa: E402
from tests.producer_kit import ProxyProcess, percentile  # noqa: E402
from tests.relay_kit import (PAGE, PhpFpm, RelayProcess, body, fastcgi_get,  # noqa: E402
                             relay_env, short_dir)

RESULTS = ROOT / "bench" / "results"
NOSEND = """<?php
require %r;
$event = shardline_page_view();
$line = json_encode($event, JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE);
header('Content-Type: text/plain');
echo 'NOSEND ', $event['event_id'], "\\n";
"""


def load(fpm: PhpFpm, script: str, n: int, clients: int) -> tuple[list[float], dict[str, int]]:
    """``n`` requests from ``clients`` threads back to back: ms each, and the bodies' first
    words counted (OK / ERR / DROPPED / NOSEND)."""
    lat: list[float] = []
    kinds: dict[str, int] = {}
    lock = threading.Lock()
    left = iter(range(n))

    def client(c: int) -> None:
        while True:
            with lock:
                i = next(left, None)
            if i is None:
                return
            t0 = time.perf_counter()
            got = body(fastcgi_get(fpm.sock, script, f"/p/{c}/{i}",
                                   cookie=f"sid=s-bench-client-{c:02d}"))
            dt = (time.perf_counter() - t0) * 1000
            with lock:
                lat.append(dt)
                word = got.split(" ", 1)[0]
                kinds[word] = kinds.get(word, 0) + 1

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, kinds


def fdatasync_ms(directory: str, n: int = 200) -> float:
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    out = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, b'{"event_id":"probe","pad":"' + b"x" * 300 + b'"}\n')
            os.fdatasync(fd)
            out.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
        os.unlink(path)
    return statistics.median(out)


def answer_ms(sock: str, n: int = 300) -> tuple[float, float]:
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(sock)
            s.sendall(b'{"event_id":"bench-%d","session_id":"s-bench"}\n' % i)
            assert s.recv(100).startswith(b"OK ")
        out.append((time.perf_counter() - t0) * 1000)
    return statistics.median(out), percentile(out, 99)


def pipelined(sock: str, n: int, connections: int) -> float:
    """Events/s of ``connections`` clients each writing n/connections lines at once and
    reading the answers (many lines per group commit)."""
    per = n // connections
    start = threading.Barrier(connections + 1)
    errors: list[str] = []

    def client(c: int) -> None:
        data = b"".join(b'{"event_id":"pipe-%d-%d","session_id":"s-pipe-%d"}\n' % (c, i, i % 50)
                        for i in range(per))
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(sock)
            start.wait()
            s.sendall(data)
            got = b""
            while got.count(b"\n") < per:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                got += chunk
            if got.count(b"OK ") != per:
                errors.append(got[:200].decode())

    threads = [threading.Thread(target=client, args=(c,)) for c in range(connections)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    assert not errors, errors
    return per * connections / (time.perf_counter() - t0)


class Background(threading.Thread):
    """Other front ends' traffic through the same relay: ``rate`` events/s in batches of
    1/50 s on one connection, the answers read (and counted) as they come."""

    def __init__(self, sock: str, rate: float):
        super().__init__(daemon=True)
        self.sock, self.rate = sock, rate
        self.stopping = threading.Event()
        self.sent = self.ok = 0

    def run(self) -> None:
        if self.rate <= 0:
            return
        per = max(1, int(self.rate / 50))
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.sock)
            s.settimeout(0.001)
            t = time.perf_counter()
            while not self.stopping.is_set():
                lines = b"".join(b'{"event_id":"bg-%d","session_id":"s-bg-%d","url":"/bg"}\n'
                                 % (self.sent + i, i % 100) for i in range(per))
                s.sendall(lines)
                self.sent += per
                t += 0.02
                while True:   # read answers until the next batch is due
                    try:
                        self.ok += s.recv(1 << 16).count(b"OK ")
                    except TimeoutError:
                        pass
                    if time.perf_counter() >= t:
                        break


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=2000, help="per phase and round")
    ap.add_argument("--clients", type=int, default=2)
    ap.add_argument("--background-rate", type=float, default=1700,
                    help="events/s other clients send meanwhile (100,000 page views a minute)")
    args = ap.parse_args()
    os.environ.update(devstack.DUMMY_AWS_ENV)
    tmp = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    info = devstack.up(tmp / "stack")
    proxy = ProxyProcess(info.kinesis_endpoint_url, stall_s=2.0)
    d = short_dir()
    stream = f"bench-relay-{int(time.time())}"
    metrics = free_address()
    # The producer's and the journal's defaults, as a deployment runs them.
    env = relay_env(info.env(), stream, proxy.url, str(tmp / "journal"), f"{d}/relay.sock",
                    SHARDLINE_PRODUCER_LINGER_MS="50", SHARDLINE_RELAY_SEGMENT_AGE_S="1",
                    SHARDLINE_RELAY_METRICS_ADDRESS=metrics)
    results: dict = {"args": vars(args), "load_at_start": os.getloadavg()[0], "rounds": []}
    relay = RelayProcess(env, tmp / "relay.err")
    fpm: PhpFpm | None = None
    try:
        shardline("create-stream", "--stream", stream, "--shards", "2", env=env)
        relay.start()
        fpm = PhpFpm(d, relay.sock, children=4)
        nosend = os.path.join(d, "nosend.php")
        Path(nosend).write_text(NOSEND % str(PAGE))
        load(fpm, str(PAGE), 200, args.clients)          # warm: opcache, the relay's client
        load(fpm, nosend, 200, args.clients)
        results["fdatasync_ms"] = fdatasync_ms(str(tmp / "journal"))
        results["answer_ms"] = answer_ms(relay.sock)

        background = Background(relay.sock, args.background_rate)
        background.start()
        for r in range(args.rounds):
            rnd: dict = {}
            for state in ("healthy", "stalled"):
                if state == "stalled":
                    proxy.storm("slow", 3600)
                    time.sleep(0.5)            # calls in flight now hang
                for name, script in (("send", str(PAGE)), ("nosend", nosend)):
                    lat, kinds = load(fpm, script, args.requests, args.clients)
                    rnd[f"{state}/{name}"] = {"p50": percentile(lat, 50),
                                              "p99": percentile(lat, 99), "kinds": kinds}
                if state == "stalled":
                    proxy.storm("slow", 0)
            results["rounds"].append(rnd)
            print(json.dumps({"round": r, **{k: {"p50": round(v["p50"], 3),
                                                   "p99": round(v["p99"], 3),
                                                   "kinds": v["kinds"]}
                                               for k, v in rnd.items()}}), flush=True)
        background.stopping.set()
        background.join(10)
        results["background"] = {"sent": background.sent, "ok": background.ok}
        # Last: the producer ships these 40,000 events for a while after (its threads
        # share the relay's GIL), which would weigh on the pages measured next.
        time.sleep(1.5)   # the relay pushes its counts to the metrics once a second
        before = scrape(metrics)
        results["pipelined_events_s"] = pipelined(relay.sock, 40_000, 4)
        time.sleep(1.5)
        after = scrape(metrics)
        results["events_per_commit"] = (
            (after["shardline_relay_accepted_total"] - before["shardline_relay_accepted_total"])
            / (after["shardline_relay_commits_total"] - before["shardline_relay_commits_total"]))
        assert relay.stop(120) == 0, relay.log.read_text()[-2000:]
    finally:
        if fpm is not None:
            fpm.stop()
        relay.stop()
        proxy.stop()
        devstack.down(tmp / "stack")
        shutil.rmtree(d, ignore_errors=True)
    summary: dict = {"fdatasync_ms_median": round(results["fdatasync_ms"], 3),
                     "python_client_answer_ms_p50_p99": [round(x, 3)
                                                         for x in results["answer_ms"]],
                     "pipelined_events_s": round(results["pipelined_events_s"]),
                     "events_per_commit": round(results["events_per_commit"], 1)}
    for key in results["rounds"][0]:
        summary[key] = {q: round(statistics.median(r[key][q] for r in results["rounds"]), 3)
                        for q in ("p50", "p99")}
    summary["p99_stalled_minus_healthy_send_ms"] = round(
        summary["stalled/send"]["p99"] - summary["healthy/send"]["p99"], 3)
    summary["p99_send_minus_nosend_healthy_ms"] = round(
        summary["healthy/send"]["p99"] - summary["healthy/nosend"]["p99"], 3)
    results["summary"] = summary
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_relay.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
