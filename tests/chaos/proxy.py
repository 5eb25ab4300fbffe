"""Fault-injecting proxies for the chaos campaign.

The local stack never fails on its own: kinesalite never throttles, never answers 500 and
never loses a connection, and moto keeps S3 only in memory, so an S3 outage cannot be a
real process stop. Clients therefore go through these proxies, which make the faults:

- ``KinesisFaultProxy``: an HTTP proxy in front of kinesalite that answers read calls
  (GetRecords, GetShardIterator, ListShards, DescribeStream*) with throttling, expired
  iterators, 500s, slow answers or dropped connections, at seeded random rates or in
  forced storms. Writes are never faulted.
- S3 outages use the devstack's relay, ``shardline.devstack.relay.TcpRelay`` (which also
  adds commit latency in front of PostgreSQL): it can be cut (every connection reset, new
  ones reset at accept) and restored.
"""
from __future__ import annotations

import http.client
import json
import random
import socket
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from shardline.devstack.relay import quietly as _quietly

KINDS = ("throttled", "expired", "500", "slow", "drop")
OTHER_OPS = frozenset({"GetShardIterator", "ListShards", "DescribeStream",
                       "DescribeStreamSummary"})
# Not relayed: hop-by-hop headers, and the ones http.client / _send set themselves.
_SKIP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                   "te", "trailers", "transfer-encoding", "upgrade", "expect",
                   "content-length"})
_JSON = "application/x-amz-json-1.1"
_ERRORS = {  # kind -> (status, __type, message)
    "throttled": (400, "ProvisionedThroughputExceededException",
                  "Rate exceeded for {} (injected)"),
    "expired": (400, "ExpiredIteratorException", "Iterator expired (injected)"),
    "500": (500, "InternalFailure", None),
}


@dataclass
class FaultRates:
    """How often and how calls are faulted; probabilities are per call."""

    get_records: float = 0.05  # probability that one GetRecords call is faulted
    other: float = 0.02  # probability for GetShardIterator / ListShards / DescribeStream*
    weights: dict[str, float] = field(default_factory=lambda: {
        "throttled": 3, "expired": 2, "500": 2, "slow": 1, "drop": 2})
    slow_s: tuple[float, float] = (1.0, 4.0)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: KinesisFaultProxy

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet about clients that go away (boto3 drops pooled connections at will)."""
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive toward boto3's connection pool
    timeout = 300  # idle keep-alive connections end eventually
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: ~50 requests/s would flood the test output."""

    def setup(self) -> None:
        super().setup()
        self.server.proxy._track(self.connection, True)

    def finish(self) -> None:
        self.server.proxy._track(self.connection, False)
        super().finish()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))  # boto3 sets it
        op = self.headers.get("X-Amz-Target", "").rpartition(".")[2]
        kind, drop_before, delay = self.server.proxy._decide(op)
        if kind in _ERRORS:
            status, type_, msg = _ERRORS[kind]
            err = {"__type": type_}
            if msg:
                req = json.loads(body or b"{}")
                err["message"] = msg.format(f"shard {req.get('ShardId', '?')} in stream "
                                            f"{req.get('StreamName', '?')}")
            self._send(status, [("x-amzn-RequestId", str(uuid.uuid4())),
                                ("Content-Type", _JSON)], json.dumps(err).encode())
            return
        if kind == "drop" and drop_before:
            self.close_connection = True  # close without a byte of answer
            return
        time.sleep(delay)
        try:
            status, headers, payload = self._forward(body)
        except (OSError, http.client.HTTPException) as e:
            self._send(502, [("Content-Type", _JSON)], json.dumps(
                {"__type": "InternalFailure", "message": f"proxy: upstream: {e!r}"}).encode())
            return
        if kind == "drop":  # kinesalite did the work; the answer is lost
            self.close_connection = True
            return
        self._send(status, headers, payload)

    do_GET = do_POST

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        """One fresh upstream connection per request: no stale keep-alive to recover from."""
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _SKIP}
        conn = http.client.HTTPConnection(*self.server.proxy._upstream_addr, timeout=60)
        try:
            conn.request(self.command, self.path, body, headers)
            resp = conn.getresponse()
            payload = resp.read()  # the whole body, chunked or not
        finally:
            conn.close()
        kept = [(k, v) for k, v in resp.getheaders() if k.lower() not in _SKIP]
        return resp.status, kept, payload

    def _send(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
        self.send_response_only(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class KinesisFaultProxy:
    """HTTP proxy between boto3 Kinesis clients and kinesalite that injects read faults.

    Decisions come from ``rng`` under a lock, so a seed gives a reproducible fault mix
    for a given order of calls. PutRecord(s) and unlisted operations are never faulted.
    """

    def __init__(self, upstream_url: str, rng: random.Random, rates: FaultRates | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        parts = urlsplit(upstream_url)
        self._upstream_addr = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.rng = rng
        self.rates = rates if rates is not None else FaultRates()
        self.enabled = True  # False: pass everything through untouched
        self.url = ""  # "http://127.0.0.1:PORT" once started
        self._bind = (host, port)
        self._lock = threading.Lock()
        self._injected: Counter[str] = Counter()
        self._drops: Counter[str] = Counter()
        self._calls: Counter[str] = Counter()
        self._storm: tuple[str, float] = ("", 0.0)  # kind, monotonic deadline
        self._conns: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> KinesisFaultProxy:
        self._server = _Server(self._bind, _Handler)
        self._server.proxy = self
        host, port = self._server.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name=f"kinesis-fault-proxy-{port}")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return  # never started, or already stopped
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:  # wake handler threads idling on keep-alive connections
            _quietly(c.shutdown, socket.SHUT_RDWR)
        self._thread.join(10)
        self._server = None

    def storm(self, kind: str, seconds: float) -> None:
        """For ``seconds``, every eligible call gets ``kind`` (0 ends the storm)."""
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {KINDS}")
        with self._lock:
            self._storm = (kind, time.monotonic() + seconds)

    def injected(self) -> dict[str, int]:
        """Fault kind -> how many calls got it."""
        with self._lock:
            return dict(self._injected)

    def drops(self) -> dict[str, int]:
        """Drops by phase: "before" (never reached kinesalite), "after" (answer lost)."""
        with self._lock:
            return dict(self._drops)

    def calls(self) -> dict[str, int]:
        """Operation -> requests received, faulted or not."""
        with self._lock:
            return dict(self._calls)

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def _decide(self, op: str) -> tuple[str | None, bool, float]:
        """(kind or None, drop before forwarding?, seconds to sleep first)."""
        with self._lock:
            self._calls[op] += 1
            if not self.enabled or (op != "GetRecords" and op not in OTHER_OPS):
                return None, False, 0.0
            kinds = [k for k in KINDS if op == "GetRecords" or k != "expired"]
            kind: str | None = None
            if time.monotonic() < self._storm[1]:
                kind = self._storm[0] if self._storm[0] in kinds else None
            elif self.rng.random() < (self.rates.get_records if op == "GetRecords"
                                      else self.rates.other):
                kind = self.rng.choices(kinds, [self.rates.weights.get(k, 0) for k in kinds])[0]
            return self._inject(kind)

    def _inject(self, kind: str | None) -> tuple[str | None, bool, float]:
        """Count a chosen fault and say how it plays out (call with ``_lock`` held)."""
        if kind is None:
            return None, False, 0.0
        self._injected[kind] += 1
        if kind == "drop":
            before = self.rng.random() < 0.5
            self._drops["before" if before else "after"] += 1
            return kind, before, 0.0
        return kind, False, self.rng.uniform(*self.rates.slow_s) if kind == "slow" else 0.0
