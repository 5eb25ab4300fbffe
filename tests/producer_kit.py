"""Helpers for the producer's tests and benchmark: a Kinesis fault proxy that faults writes,
a bounded HTTP load generator (127.0.0.1 only), the example app under gunicorn,
deterministic page views a test can recompute and KPL unpacking. The in-memory Kinesis
is ``tests.fakes.FakeKinesis`` (``shards=``, ``put_gate``, ``put_down``).

The proxy is ``tests.chaos.proxy.KinesisFaultProxy`` (the one fault proxy) with one
change: during a storm *every* operation is faulted, PutRecords included (the chaos
campaign faults only reads).
"""
from __future__ import annotations

import http.client
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from shardline.sample import events
from tests.chaos.proxy import FaultRates, KinesisFaultProxy

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


class PutFaultProxy(KinesisFaultProxy):
    """Nothing faulted at random; during ``storm(kind, s)`` every call gets ``kind``:
    "slow" stalls each call ``stall_s`` and then forwards it, "500" answers
    InternalFailure, "drop" closes the connection (half before forwarding, half after:
    the records landed but the answer is lost)."""

    def __init__(self, upstream_url: str, stall_s: float = 2.0, seed: int = 0):
        super().__init__(upstream_url, random.Random(seed),
                         FaultRates(get_records=0.0, other=0.0, slow_s=(stall_s, stall_s)))

    def _decide(self, op: str) -> tuple[str | None, bool, float]:
        with self._lock:
            self._calls[op] += 1
            kind, until = self._storm
            if not self.enabled or not kind or time.monotonic() >= until:
                return None, False, 0.0
            return self._inject(kind)


def event_id(run: str, i: int) -> str:
    """The event_id of event ``i`` of run ``run`` (a valid uuid4, reproducible)."""
    return str(uuid.UUID(int=random.Random(f"{run}-{i}").getrandbits(128), version=4))


def page_views(run: str, n: int, seed: int = 7):
    """(i, event) for ``n`` realistic, valid page views whose ids ``event_id`` recomputes."""
    gen = events.Generator(None, 0.0, seed)
    for i in range(n):
        event, _ = gen.event(i)
        event["event_id"] = event_id(run, i)
        yield i, event


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def run_load(port: int, start: int, n: int, threads: int = 8,
             headers: dict[str, str] | None = None) -> list[tuple[float, int]]:
    """GET ``/products/linen-shirt?rid=<i>`` for i in start..start+n-1 from ``threads``
    threads (127.0.0.1 only, bounded); returns (seconds, status) per request."""
    out: list[tuple[float, int]] = []
    lock = threading.Lock()
    ids = iter(range(start, start + n))

    def worker(w: int) -> None:
        cookie = f"sid=s-load{w:02d}{start:08x}"
        while True:
            with lock:
                i = next(ids, None)
            if i is None:
                return
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            t0 = time.perf_counter()
            try:
                conn.request("GET", f"/products/linen-shirt?rid={i}", headers={
                    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Firefox/128.0",
                    "Referer": "https://www.example.com/", "Cookie": cookie,
                    "X-Forwarded-For": f"203.0.113.{i % 250 + 1}", **(headers or {})})
                resp = conn.getresponse()
                resp.read()
                status = resp.status
            except OSError:
                status = 0
            finally:
                conn.close()
            with lock:
                out.append((time.perf_counter() - t0, status))

    pool = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(600)
    return out


NOOP_APP = "tests.noop_pageview_app:app"


def paired_load(real: "Gunicorn", noop: "Gunicorn", start: int, n: int, rounds: int = 4
                ) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
    """``n`` requests to each app in ``rounds`` alternating chunks (the order flipped every
    round), so both see the same machine; the real app gets rids start..start+n-1."""
    real_out: list[tuple[float, int]] = []
    noop_out: list[tuple[float, int]] = []
    for r in range(rounds):
        lo, hi = start + n * r // rounds, start + n * (r + 1) // rounds
        runs = [(real.port, lo, real_out), (noop.port, 10**7 + lo, noop_out)]
        for port, first, out in runs[::-1 if r % 2 else 1]:
            out += run_load(port, first, hi - lo)
    return real_out, noop_out


class Gunicorn:
    """examples/pageview_app.py under gunicorn (config examples/gunicorn.conf.py); ``app``
    NOOP_APP is the same site with a producer that does nothing (the baseline)."""

    def __init__(self, env: dict[str, str], workers: int = 4, log: Path | None = None,
                 app: str = "examples.pageview_app:app"):
        self.port = free_port()
        self.app = app
        self.env = {**env, "PAGEVIEW_BIND": f"127.0.0.1:{self.port}",
                    "PAGEVIEW_WORKERS": str(workers)}
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> "Gunicorn":
        out = open(self.log, "wb") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "examples/gunicorn.conf.py",
             self.app], cwd=ROOT, env=self.env, stdout=out,
            stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited {self.proc.returncode}: {self.logs()}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer in {timeout} s: {self.logs()}")

    def get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()

    def stop(self, timeout: float = 40) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)  # graceful: workers close their producers
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log and \
            self.log.exists() else ""


def child_env(base: dict[str, str], **producer: Any) -> dict[str, str]:
    """``base`` plus SHARDLINE_PRODUCER_<KEY> for each option."""
    return {**base, **{f"SHARDLINE_PRODUCER_{k.upper()}": str(v) for k, v in producer.items()}}


def python(*args: str, env: dict[str, str], **kw: Any) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, **kw)


def interpreter_env() -> dict[str, str]:
    return {"PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def user_records(stored: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """(partition key, data) of every user record, KPL aggregates unpacked (the library)."""
    import base64

    from aws_kinesis_agg.deaggregator import iter_deaggregate_records

    out = []
    for key, data in stored:
        if not data.startswith(b"\xf3\x89\x9a\xc2"):
            out.append((key, data))
            continue
        for u in iter_deaggregate_records({"Data": data, "PartitionKey": key,
                                           "SequenceNumber": "1",
                                           "ApproximateArrivalTimestamp": 0},
                                          data_format="Boto3"):
            out.append((u["kinesis"]["partitionKey"], base64.b64decode(u["kinesis"]["data"])))
    return out


class ProxyProcess:
    """``PutFaultProxy`` in a process of its own (a benchmark must not share its GIL):
    ``storm(kind, seconds)`` goes over its stdin."""

    def __init__(self, upstream_url: str, stall_s: float = 2.0):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.producer_kit", upstream_url, str(stall_s)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, **interpreter_env()})
        self.url = self.proc.stdout.readline().strip()  # type: ignore[union-attr]
        if not self.url.startswith("http://"):
            raise RuntimeError(f"fault proxy did not start: {self.url!r}")

    def storm(self, kind: str, seconds: float) -> None:
        self.proc.stdin.write(f"{kind} {seconds}\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        self.proc.stdout.readline()  # type: ignore[union-attr]  # "ok": the storm is on

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _serve_proxy(upstream: str, stall_s: float) -> None:
    proxy = PutFaultProxy(upstream, stall_s=stall_s).start()
    print(proxy.url, flush=True)
    for line in sys.stdin:
        kind, seconds = line.split()
        proxy.storm(kind, float(seconds))
        print("ok", flush=True)
    proxy.stop()


if __name__ == "__main__":
    _serve_proxy(sys.argv[1], float(sys.argv[2]))
