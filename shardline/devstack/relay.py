"""A TCP relay for the local stack: cut/restore for outage drills (the chaos campaign's
``TcpGate``) and, in front of PostgreSQL, Redshift's commit latency.

Redshift sends every commit through one queue per cluster; a commit there takes hundreds of
ms (STL_COMMIT_STATS). PostgreSQL commits in well under one, so a pipeline tested against it
never feels the cost of small transactions. ``CommitDelay`` parses the client's side of the
PostgreSQL wire protocol just enough to find a simple-query message ('Q') whose text is
COMMIT or END (what psycopg2's ``conn.commit()`` sends) and holds it back for the configured
time before passing it on. Holding the *request* (rather than the server's reply) keeps the
transaction's locks for the wait, as a commit waiting in Redshift's queue does; the client
sees the same latency. Extended-protocol commits (Parse 'P') are not recognised.

    python -m shardline.devstack.relay --port 6001 --upstream 127.0.0.1:5432 \\
        --commit-latency-ms 300

``shardline devstack up --warehouse redshift-like`` runs it as the ``pgrelay`` service and
points ``SHARDLINE_WAREHOUSE_DSN`` at it. With ``--s3-endpoint-url`` it also answers
Redshift's ``COPY ... FROM 's3://...' IAM_ROLE ...`` itself, failing the way Redshift does
(``redshift_copy.py``), so the Redshift dialect runs against the stand-in, and gives writes
to the loader's fence tables Redshift's per-table write lock. Only the startup and
SSLRequest/GSSENCRequest messages come without a type byte; an SSL session (which the local
cluster never offers) could not be parsed, and the relay then passes bytes through unchanged.
"""
from __future__ import annotations

import argparse
import queue
import signal
import socket
import struct
import sys
import threading
import time
from collections import Counter
from typing import Any, Callable

from shardline.devstack.redshift_copy import RedshiftCopy, fence_write, is_copy_from_s3

_LINGER_0 = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, not FIN
_PROTOCOL_3 = 3 << 16
_COMMITS = {b"COMMIT", b"END", b"COMMIT WORK", b"COMMIT TRANSACTION", b"END WORK",
            b"END TRANSACTION"}
# ``feed``'s wait for a message the relay answers itself (a Redshift COPY from S3)
EMULATE = -1.0


class CommitDelay:
    """Per connection, client -> server: whole messages out, COMMIT/END delayed; with
    ``copies``, a Redshift ``COPY ... FROM 's3://...'`` comes out alone with wait
    ``EMULATE`` (redshift_copy.py runs it)."""

    def __init__(self, delay_s: float, on_commit: Callable[[], None] = lambda: None,
                 copies: bool = False):
        self.delay_s, self.on_commit, self.copies = delay_s, on_commit, copies
        self.startup: dict[str, str] = {}  # the session's startup parameters (user, database)
        self._buf = bytearray()
        self._typed = False  # after the startup message every message has a type byte
        self._opaque = False  # an SSL/GSS session began: bytes we cannot read

    def feed(self, data: bytes) -> list[tuple[float, bytes]]:
        """(seconds to wait first, bytes to send) for what ``data`` completes."""
        if self._opaque:
            return [(0.0, data)]
        self._buf += data
        out: list[tuple[float, bytes]] = []
        while True:
            head = 1 if self._typed else 0
            if len(self._buf) < head + 4:
                break
            size = head + int.from_bytes(self._buf[head:head + 4], "big")
            if len(self._buf) < size:
                break
            msg, self._buf = bytes(self._buf[:size]), self._buf[size:]
            delay = 0.0
            if not self._typed and len(msg) >= 8:
                code = int.from_bytes(msg[4:8], "big")
                self._typed = code == _PROTOCOL_3
                if self._typed:
                    words = msg[8:].split(b"\0")
                    pairs = zip(words[::2], words[1::2], strict=False)
                    self.startup = {k.decode(): v.decode() for k, v in pairs if k}
            elif msg[:1] == b"Q" and _is_commit(msg[5:]):
                delay = self.delay_s
                self.on_commit()
            elif msg[:1] == b"Q" and self.copies and (is_copy_from_s3(msg[5:])
                                                      or fence_write(msg[5:])):
                delay = EMULATE
            if out and not delay and not out[-1][0]:
                out[-1] = (0.0, out[-1][1] + msg)
            elif out and not delay:
                out.append((0.0, msg))
            else:
                out.append((delay, msg))
        return out

    def server_said(self, data: bytes) -> None:
        """The server accepted SSL/GSS ('S'/'G' to a request): stop parsing."""
        if not self._typed and data[:1] in (b"S", b"G"):
            self._opaque = True


def _is_commit(text: bytes) -> bool:
    return b" ".join(text.rstrip(b"\0").strip().rstrip(b";").upper().split()) in _COMMITS


class TcpRelay:
    """TCP relay to ``upstream``; ``cut()`` resets every connection (an outage) until
    ``restore()``; ``commit_delay_s`` > 0 (or ``count_commits``) adds ``CommitDelay`` on
    the client side, which counts the COMMITs in ``commits``."""

    def __init__(self, upstream: tuple[str, int], host: str = "127.0.0.1", port: int = 0,
                 commit_delay_s: float = 0.0, count_commits: bool = False,
                 s3_endpoint_url: str = "") -> None:
        self.upstream = upstream
        self.commit_delay_s = commit_delay_s
        # redshift-like: Redshift's COPY from S3 answered here (redshift_copy.py)
        self.s3_endpoint_url = s3_endpoint_url
        # per link: while the relay runs a COPY on the session, the server's bytes go here
        self._hijacked: dict[tuple[socket.socket, socket.socket], queue.Queue[bytes]] = {}
        # count COMMITs even without a delay (bench/bench_commits.py: one relay per
        # component, so the commits of shardline's own sessions are told apart)
        self.count_commits = count_commits
        self._listener = socket.create_server((host, port))
        self._listener.settimeout(0.1)  # the accept loop notices stop()
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.outages = 0  # number of cut() calls
        self.commits = 0  # COMMITs seen (held back when commit_delay_s > 0)
        self._cut = False
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._links: dict[tuple[socket.socket, socket.socket], list[threading.Thread]] = {}
        self._dead: set[tuple[socket.socket, socket.socket]] = set()  # being reset
        self._live: Counter[tuple[socket.socket, socket.socket]] = Counter()  # pumps running
        self._thread = threading.Thread(target=self._accept_loop, daemon=True,
                                        name=f"tcp-relay-{self.port}")

    def start(self) -> TcpRelay:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self._listener.close()
        with self._lock:
            links = dict(self._links)
        for link, threads in links.items():
            self._kill(link)
            for t in threads:
                t.join(5)

    def cut(self) -> None:
        """Outage: reset every open connection, and new ones at accept, until restore()."""
        with self._lock:
            self._cut = True
            self.outages += 1
            links = list(self._links)
        for link in links:
            self._kill(link)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def _counted(self) -> None:
        with self._lock:
            self.commits += 1

    def _kill(self, link: tuple[socket.socket, socket.socket]) -> None:
        """Linger 0 and wake the pumps; the last pump out closes both sockets (RST)."""
        with self._lock:
            self._dead.add(link)
        for s in link:
            quietly(s.setsockopt, socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
            quietly(s.shutdown, socket.SHUT_RD)  # wakes a blocked recv, sends nothing

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                if self._cut:
                    raise ConnectionRefusedError("relay is cut")
                upstream = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                reset(client)
                continue
            link = (client, upstream)
            delay = CommitDelay(self.commit_delay_s, self._counted,
                                copies=bool(self.s3_endpoint_url)) \
                if self.commit_delay_s > 0 or self.count_commits or self.s3_endpoint_url \
                else None
            threads = [threading.Thread(target=self._pump, args=(link, src, dst, delay, up),
                                        daemon=True, name=f"tcp-relay-{self.port}-pump")
                       for src, dst, up in ((client, upstream, True), (upstream, client, False))]
            with self._lock:
                if self._cut:
                    reset(client)
                    reset(upstream)
                    continue
                self._links[link] = threads
                self._live[link] = 2
            for s in link:
                s.settimeout(0.25)  # a pump blocked in send() notices a reset
            for t in threads:
                t.start()

    def _send(self, link: tuple[socket.socket, socket.socket], dst: socket.socket,
              data: bytes) -> None:
        view = memoryview(data)
        while view and link not in self._dead:
            try:
                view = view[dst.send(view):]
            except TimeoutError:
                continue

    def _pump(self, link: tuple[socket.socket, socket.socket], src: socket.socket,
              dst: socket.socket, delay: CommitDelay | None, client_side: bool) -> None:
        try:
            while link not in self._dead:
                try:
                    data = src.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    if link not in self._dead:  # half-close: pass the FIN on
                        quietly(dst.shutdown, socket.SHUT_WR)
                    break
                if delay is None:
                    self._send(link, dst, data)
                elif not client_side:
                    delay.server_said(data)
                    hijacked = self._hijacked.get(link)
                    if hijacked is not None:
                        hijacked.put(data)
                    else:
                        self._send(link, dst, data)
                else:
                    for wait_s, chunk in delay.feed(data):
                        if wait_s == EMULATE:
                            self._emulate(link, src, dst, delay, chunk)
                            continue
                        if wait_s:
                            time.sleep(wait_s)
                        self._send(link, dst, chunk)
        except OSError:
            self._kill(link)  # one side reset: reset the other
        finally:
            hijacked = self._hijacked.get(link)
            if hijacked is not None:
                hijacked.put(b"")  # a COPY waiting for the server: the session is gone
            with self._lock:
                self._live[link] -= 1
                last = self._live[link] == 0
                if last:
                    del self._live[link], self._links[link]
                    self._dead.discard(link)
            if last:
                for s in link:
                    s.close()


    def _emulate(self, link: tuple[socket.socket, socket.socket], client: socket.socket,
                 server: socket.socket, delay: CommitDelay, msg: bytes) -> None:
        """Run a Redshift COPY on the session; the client waits for its answer meanwhile
        (psycopg2 sends nothing else until it has it), so the server's replies to what the
        COPY sends can be taken out of the stream until it is done."""
        replies: queue.Queue[bytes] = queue.Queue()
        self._hijacked[link] = replies
        try:
            redshift = RedshiftCopy(self.s3_endpoint_url, self.upstream,
                                    lambda data: self._send(link, server, data),
                                    lambda data: self._send(link, client, data),
                                    replies, delay.startup)
            fence = fence_write(msg[5:])
            if fence is not None:
                redshift.write(fence, msg)
            else:
                redshift.run(msg[5:].rstrip(b"\0").decode())
        except (queue.Empty, ConnectionError) as exc:
            raise OSError(f"redshift COPY: {exc}") from None
        finally:
            del self._hijacked[link]


def quietly(fn: Any, *args: Any) -> None:
    """Call a socket operation that may fail on an already broken connection."""
    try:
        fn(*args)
    except OSError:
        pass


def reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN."""
    quietly(sock.setsockopt, socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_0)
    sock.close()


def main(argv: list[str] | None = None) -> int:
    """Run a relay until SIGTERM/SIGINT (the devstack's ``pgrelay`` service)."""
    parser = argparse.ArgumentParser(prog="python -m shardline.devstack.relay",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="host:port of PostgreSQL")
    parser.add_argument("--commit-latency-ms", type=int, default=0)
    parser.add_argument("--s3-endpoint-url", default="",
                        help="answer Redshift's COPY ... FROM 's3://...' from this S3")
    args = parser.parse_args(argv)
    host, _, port = args.upstream.rpartition(":")
    relay = TcpRelay((host, int(port)), args.host, args.port,
                     commit_delay_s=args.commit_latency_ms / 1000,
                     s3_endpoint_url=args.s3_endpoint_url).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"relay 127.0.0.1:{relay.port} -> {args.upstream}, commit latency "
          f"{args.commit_latency_ms} ms", file=sys.stderr, flush=True)
    while not stop.wait(0.5):
        pass
    relay.stop()
    print(f"relay stopped after {relay.commits} delayed commits", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
