"""One scrape target per host: prometheus_client's multiprocess mode under supervisord.

Every program of the generated supervisord config runs with ``PROMETHEUS_MULTIPROC_DIR``
(``<out>/metrics``), so each process writes its metrics to ``<type>_<pid>.db`` files there.
The host's target (``shardline agent`` at ``agent.metrics_address``, or ``shardline metrics
--serve`` without the agent) merges them at each scrape with ``MultiProcessCollector``.

Dead processes: before each scrape ``sweep`` calls ``mark_process_dead`` for every pid in
the directory that no longer runs (its live gauges go; its counters and histograms stay, so
totals never drop while the target runs). At the target's start ``sweep(everything=True)``
also deletes a dead pid's counter files: what a previous boot left behind (the library's
"wipe the directory at start", without touching the files of programs already running).
"""
from __future__ import annotations

import contextlib
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping, Sequence

from shardline.errors import ConfigError
from shardline.logs import ContextLogger

if TYPE_CHECKING:  # imported where used at run time: the exporter is loaded lazily
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector

ENV = "PROMETHEUS_MULTIPROC_DIR"
DIR_NAME = "metrics"  # under supervisor-config's --out directory
_FILE = re.compile(r"^[a-z_]+_(\d+)\.db$")


def multiproc_dir(environ: Mapping[str, str] | None = None) -> str | None:
    """The directory this process's metrics go to, or None (single-process mode)."""
    return (os.environ if environ is None else environ).get(ENV) or None


def ensure_dir() -> None:
    """Create the directory if supervisord's environment names one that does not exist yet
    (prometheus_client does not, and fails at the first metric update)."""
    path = multiproc_dir()
    if path:
        with contextlib.suppress(OSError):
            os.makedirs(path, exist_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _pids(path: str) -> Iterator[tuple[int, Path]]:
    for f in Path(path).iterdir():
        m = _FILE.match(f.name)
        if m:
            yield int(m.group(1)), f


def sweep(path: str, *, everything: bool = False) -> list[int]:
    """Forget the processes that are gone: ``mark_process_dead`` (live gauges), and with
    ``everything`` their other files too. Returns the dead pids."""
    from prometheus_client import multiprocess

    dead = sorted({pid for pid, _ in _pids(path) if pid != os.getpid() and not _alive(pid)})
    for pid in dead:
        multiprocess.mark_process_dead(pid, path)
    if everything:
        gone = set(dead)
        for pid, f in _pids(path):
            if pid in gone:
                with contextlib.suppress(FileNotFoundError):
                    f.unlink()
    return dead


class HostCollector:
    """``MultiProcessCollector`` over ``path``, sweeping dead pids before each collect."""

    def __init__(self, path: str):
        from prometheus_client import multiprocess

        self.path = path
        self._inner = multiprocess.MultiProcessCollector(None, path=path)

    def collect(self) -> Iterator[Metric]:
        with contextlib.suppress(OSError):
            sweep(self.path)
        yield from self._inner.collect()


def parse_address(text: str, key: str = "agent.metrics_address") -> tuple[str, int]:
    """``host:port`` (``[::1]:port`` for IPv6; port 0: any free port)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{key}: {text!r} is not host:port (e.g. 127.0.0.1:9641)")
    return host, int(port)


def serve(address: str, path: str | None = None,
          extra: Sequence[Collector] = ()) -> WSGIServer:
    """Serve the host's metrics on ``address`` (``/metrics``) from a daemon thread (the
    library's threading WSGI server).

    ``path`` None: the directory from ``PROMETHEUS_MULTIPROC_DIR``; without one, this
    process's own registry. ``extra``: collectors read at each scrape beside them (the
    tailer's per-file report). Raises ``OSError`` when the address cannot be bound."""
    from prometheus_client import REGISTRY, CollectorRegistry
    from prometheus_client.exposition import start_http_server

    host, port = parse_address(address)
    path = path or multiproc_dir()
    registry: CollectorRegistry = REGISTRY
    if path:
        os.makedirs(path, exist_ok=True)
        sweep(path, everything=True)
        registry = CollectorRegistry()
        registry.register(HostCollector(path))
    for collector in extra:
        registry.register(collector)
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server


def bound_address(server: WSGIServer) -> str:
    host, port = server.server_address[:2]
    if isinstance(host, bytes):  # typeshed allows it for AF_UNIX; an HTTP server has str
        host = host.decode()
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def serve_quietly(address: str, log: ContextLogger, path: str | None = None,
                  extra: Sequence[Collector] = ()) -> WSGIServer | None:
    """``serve`` for a process whose real job is something else (the agent): a port in use
    is a warning, not a reason to stop running this host's consumers."""
    if not address:
        return None
    try:
        server = serve(address, path, extra)
    except OSError as exc:
        log.warning("metrics: cannot serve on %s (%s); this host has no scrape target",
                    address, exc)
        return None
    log.info("metrics: serving this host's metrics on http://%s/metrics",
             bound_address(server))
    return server


def stop(server: WSGIServer | None) -> None:
    if server is not None:
        threading.Thread(target=server.shutdown, daemon=True).start()
        server.server_close()
