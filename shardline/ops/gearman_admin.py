"""A tiny client for gearmand's admin text protocol (what ``gearadmin --status`` uses).

``status\\n`` returns one ``FUNCTION\\tTOTAL\\tRUNNING\\tAVAILABLE_WORKERS`` line per
registered function, then ``.\\n``. TOTAL counts queued *and* running jobs, so the
jobs still waiting for a worker are TOTAL - RUNNING.

A server that is down, slow or answers garbage is reported as down with the
reason; nothing here raises for a network problem.
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Iterable

from shardline.settings import parse_host_port

DEFAULT_TIMEOUT_S = 2.0
_MAX_REPLY = 4 * 1024 * 1024


class AdminProtocolError(Exception):
    """The server's reply does not follow the admin protocol."""


@dataclass(frozen=True)
class FunctionStatus:
    name: str
    total: int  # queued + running
    running: int
    workers: int  # available (registered) workers

    @property
    def queued(self) -> int:
        """Jobs waiting for a worker."""
        return max(self.total - self.running, 0)


@dataclass(frozen=True)
class ServerStatus:
    server: str  # "host:port"
    up: bool
    functions: tuple[FunctionStatus, ...] = field(default_factory=tuple)
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {"server": self.server, "up": self.up, "error": self.error,
                "functions": [{"name": f.name, "total": f.total, "running": f.running,
                               "queued": f.queued, "workers": f.workers}
                              for f in self.functions]}


def parse_status(text: str) -> list[FunctionStatus]:
    """Parse a complete ``status`` reply (the lines before the ``.`` terminator).

    Raises ``AdminProtocolError`` on an ``ERR`` line or a malformed line.
    """
    out: list[FunctionStatus] = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line == ".":
            break
        if not line.strip():
            continue
        if line.startswith("ERR "):
            raise AdminProtocolError(line[4:].strip() or "ERR")
        parts = line.rsplit("\t", 3)  # a function name could in theory hold a tab
        if len(parts) != 4 or not all(p.strip().isdigit() for p in parts[1:]):
            raise AdminProtocolError(f"unexpected status line {line[:200]!r}")
        name, total, running, workers = parts
        out.append(FunctionStatus(name, int(total), int(running), int(workers)))
    return sorted(out, key=lambda f: f.name)


def _complete(buf: bytes) -> bool:
    if buf.startswith(b"ERR "):
        return b"\n" in buf
    return buf == b".\n" or buf.endswith(b"\n.\n")


def _read_reply(sock: socket.socket, deadline: float) -> str:
    buf = b""
    while True:
        if _complete(buf):
            return buf.decode("utf-8", "replace")
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out waiting for the end of the status reply")
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            raise AdminProtocolError("connection closed before the end of the reply")
        buf += chunk
        if len(buf) > _MAX_REPLY:
            raise AdminProtocolError("status reply too large")


def server_status(server: str, timeout: float = DEFAULT_TIMEOUT_S) -> ServerStatus:
    """Ask one gearmand (``host:port``) for its function status; never raises for I/O."""
    try:
        host, port = parse_host_port(server)
    except ValueError as exc:
        return ServerStatus(server, False, error=str(exc))
    name = f"{host}:{port}"
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sock.sendall(b"status\n")
            functions = parse_status(_read_reply(sock, deadline))
    except (OSError, AdminProtocolError) as exc:
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, socket.timeout):
            reason = f"timed out after {timeout:g}s"
        elif isinstance(exc, ConnectionRefusedError):
            reason = "connection refused"
        return ServerStatus(name, False, error=reason)
    return ServerStatus(name, True, tuple(functions))


def cluster_status(servers: Iterable[str],
                   timeout: float = DEFAULT_TIMEOUT_S) -> list[ServerStatus]:
    """``server_status`` for every configured server, in the order given."""
    return [server_status(s, timeout) for s in servers]


def totals(statuses: Iterable[ServerStatus]) -> dict[str, dict[str, int]]:
    """Per function, summed over the servers that answered: total, running, queued, workers."""
    out: dict[str, dict[str, int]] = {}
    for st in statuses:
        for f in st.functions:
            agg = out.setdefault(f.name, {"total": 0, "running": 0, "queued": 0, "workers": 0})
            agg["total"] += f.total
            agg["running"] += f.running
            agg["queued"] += f.queued
            agg["workers"] += f.workers
    return dict(sorted(out.items()))
