"""``shardline status --serve HOST:PORT``: the status report as a web page, JSON and metrics.

One background thread samples ``collect()`` every ``--interval`` seconds and keeps the
last hour of per-shard lag and throughput in a bounded ring buffer (``History``); HTTP
handlers only read the latest snapshot, so a page load or a scrape never touches the
control store, the warehouse or gearmand. Routes:

- ``/``: one self-contained HTML page (``status_page.html``: inline CSS and JS, nothing
  from a CDN) that fetches the two JSON routes every few seconds and redraws itself;
- ``/api/status``: the latest report (``build_report``'s dict, as ``status --json``);
- ``/api/history``: per shard, ``[epoch_s, millis_behind_latest, records_per_s]`` points
  over the last hour;
- ``/metrics``: the fleet's shared state in Prometheus text format (``FleetCollector``).

Why the standard library's ``ThreadingHTTPServer`` and no web framework: four read-only
GET routes over an in-memory snapshot, no templates (the page renders itself from the
JSON), no forms, sessions or uploads; a framework would be a dependency for none of that.
The page has no authentication, so ``serve`` binds to loopback unless ``public`` is set.
"""
from __future__ import annotations

import ipaddress
import json
import math
import socket
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from shardline.lifecycle import StopSignals, first_line
from shardline.logs import ContextLogger, get_logger
from shardline.settings import parse_host_port

HISTORY_WINDOW_S = 3600.0
DEFAULT_INTERVAL_S = 5.0
Report = Mapping[str, Any]


# -- where to listen -----------------------------------------------------------------
def parse_bind(text: str, *, public: bool = False,
               interval: float = DEFAULT_INTERVAL_S) -> tuple[str, int]:
    """'HOST:PORT' (or ':PORT', '[::1]:PORT') -> (host, port); ValueError with the reason.

    An address that is not loopback is refused unless ``public``: the page shows every
    shard, host and error message of the fleet to whoever can reach it, with no login.
    ``interval`` (the sampling period) is checked here too, with the other ``--serve`` flags.
    """
    if not interval > 0:
        raise ValueError(f"--interval needs a positive number of seconds, not {interval}")
    text = text.strip()
    if text.startswith(":"):
        text = "127.0.0.1" + text
    host, port = parse_host_port(text, default_port=0)
    host = host.strip("[]")
    if port == 0:
        raise ValueError(f"{text!r} has no port (HOST:PORT)")
    if not public and not _is_loopback(host):
        raise ValueError(f"{host} is not a loopback address and the page has no "
                         f"authentication; pass --public to serve it there anyway")
    return host, port


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it could resolve anywhere


# -- the last hour, bounded ------------------------------------------------------------
class History:
    """Per-shard lag and throughput samples over the last ``window_s`` seconds.

    A ring buffer of whole samples (``deque(maxlen=...)``) sized from the interval, so
    memory stays bounded whatever the uptime; samples older than the window are also
    dropped, should sampling have run faster than planned. Pure: times are passed in.
    """

    def __init__(self, window_s: float = HISTORY_WINDOW_S,
                 interval_s: float = DEFAULT_INTERVAL_S):
        self.window_s = window_s
        self.interval_s = interval_s
        self._samples: deque[tuple[float, dict[tuple[str, str], tuple[Any, Any]]]] = deque(
            maxlen=math.ceil(window_s / interval_s) + 1)

    def add(self, t: float, report: Report) -> None:
        points: dict[tuple[str, str], tuple[Any, Any]] = {}
        for s in report.get("shards", []):
            st = s.get("status") or {}
            points[(s["stream"], s["shard_id"])] = (st.get("millis_behind_latest"),
                                                    st.get("records_per_s"))
        self._samples.append((t, points))
        while self._samples and self._samples[0][0] < t - self.window_s:
            self._samples.popleft()

    def __len__(self) -> int:
        return len(self._samples)

    def to_dict(self) -> dict[str, Any]:
        """``{"window_s", "interval_s", "shards": [{"stream", "shard_id", "points":
        [[t, lag_ms, records_per_s], ...]}]}``; a shard missing from a sample has no point."""
        series: dict[tuple[str, str], list[list[Any]]] = {}
        for t, points in self._samples:
            for key, (lag, rps) in points.items():
                series.setdefault(key, []).append([round(t, 3), lag, rps])
        return {"window_s": self.window_s, "interval_s": self.interval_s,
                "shards": [{"stream": k[0], "shard_id": k[1], "points": series[k]}
                           for k in sorted(series)]}


def fleet_hosts(report: Report) -> list[dict[str, Any]]:
    """``report["hosts"]`` when the report has it (host heartbeats); otherwise the hosts
    named by the shards' lease owners (``host:pid:uuid``), alive while a lease is live."""
    if "hosts" in report:
        return list(report["hosts"])
    hosts: dict[str, dict[str, Any]] = {}
    for s in report.get("shards", []):
        if not s.get("owner"):
            continue
        host_id = str(s["owner"]).split(":")[0]
        h = hosts.setdefault(host_id, {"host_id": host_id, "heartbeat_at": None,
                                       "heartbeat_age_s": None, "alive": False,
                                       "shards": [], "from_leases": True})
        h["shards"].append(s["shard_id"])
        h["alive"] = h["alive"] or bool(s.get("owner_live"))
    return [hosts[k] for k in sorted(hosts)]


# -- sampling --------------------------------------------------------------------------
class StopWait(Protocol):
    """``threading.Event`` or ``StopSignals``: ``wait`` returns True once told to stop."""

    def wait(self, timeout: float) -> bool: ...


class Sampler:
    """The latest report, the last sampling error and the history, behind one lock.

    ``step()`` takes one sample (it never sleeps); ``run()`` is the background thread's
    loop. A failed sample (warehouse restarting, say) keeps the previous report and
    records the error, so the page says "stale since" instead of going blank.
    """

    def __init__(self, collect: Callable[[], dict[str, Any]], *,
                 interval_s: float = DEFAULT_INTERVAL_S, clock: Callable[[], float] = time.time,
                 window_s: float = HISTORY_WINDOW_S, log: ContextLogger | None = None):
        self.collect = collect
        self.interval_s = interval_s
        self.clock = clock
        self.history = History(window_s, interval_s)
        self.log = log or get_logger("status-web")
        self._lock = threading.Lock()
        self._report: dict[str, Any] | None = None
        self._error: str | None = None
        self._sampled_at: float | None = None
        self._failed_at: float | None = None

    def step(self) -> None:
        try:
            report = self.collect()
        except Exception as exc:  # noqa: BLE001 - the page keeps serving the last report
            with self._lock:
                self._error = f"{type(exc).__name__}: {first_line(exc)}"
                self._failed_at = self.clock()
            self.log.warning("status sample failed: %s", self._error)
            return
        now = self.clock()
        with self._lock:
            self._report, self._error, self._sampled_at = report, None, now
            self.history.add(now, report)

    def run(self, stop: StopWait) -> None:
        """Sample until ``stop.wait(interval)`` says stop (an Event or ``StopSignals``)."""
        while True:
            self.step()
            if stop.wait(self.interval_s):
                return

    def latest(self) -> dict[str, Any] | None:
        """The latest report plus ``sampler`` (when, every how long, last error), and
        ``hosts`` derived from the leases when the report has no host heartbeats."""
        with self._lock:
            if self._report is None and self._error is None:
                return None
            report = dict(self._report or {"healthy": None, "alerts": [], "shards": []})
            meta = {"sampled_at": self._sampled_at, "interval_s": self.interval_s,
                    "error": self._error, "failed_at": self._failed_at,
                    "hosts_from_leases": "hosts" not in report}
        report["hosts"] = fleet_hosts(report)
        report["sampler"] = meta
        return report

    def history_dict(self) -> dict[str, Any]:
        with self._lock:
            return self.history.to_dict()


# -- /metrics ----------------------------------------------------------------------------
class FleetCollector:
    """The fleet's shared state as Prometheus gauges, read from the latest sample at
    scrape time (a custom collector: the values come from another system, not from
    counters this process increments). ``tables``: every target table, so a table with
    nothing pending exports 0 rather than disappearing."""

    def __init__(self, latest: Callable[[], Report | None], tables: Iterable[str]):
        self.latest = latest
        self.tables = sorted(tables)

    def describe(self) -> list[Metric]:
        return []  # no fixed descriptions: collect() runs at scrape time only

    def collect(self) -> Iterator[GaugeMetricFamily]:
        report = self.latest() or {}
        pending = {p["target_table"]: p for p in report.get("staged_pending", [])}
        quarantined: dict[str, int] = {}
        for q in report.get("quarantined", []):
            quarantined[q["target_table"]] = quarantined.get(q["target_table"], 0) + 1
        tables = sorted(set(self.tables) | set(pending) | set(quarantined))

        def per_table(name: str, doc: str, value: Callable[[str], float]) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=["table"])
            for t in tables:
                g.add_metric([t], value(t))
            return g

        yield per_table("shardline_fleet_pending_files", "Staged files waiting for a load",
                        lambda t: pending.get(t, {}).get("files", 0))
        yield per_table("shardline_fleet_pending_bytes", "Bytes of staged files waiting",
                        lambda t: pending.get(t, {}).get("bytes", 0))
        yield per_table("shardline_fleet_oldest_pending_age_seconds",
                        "Age of the oldest pending staged file (0: none pending)",
                        lambda t: pending.get(t, {}).get("oldest_age_s") or 0)
        yield per_table("shardline_fleet_quarantined_files",
                        "Staged files whose COPY kept failing", lambda t: quarantined.get(t, 0))
        yield GaugeMetricFamily("shardline_fleet_hosts_alive", "Hosts with a live heartbeat",
                                value=sum(1 for h in fleet_hosts(report) if h.get("alive")))
        lag = GaugeMetricFamily("shardline_fleet_shard_millis_behind",
                                "MillisBehindLatest last reported by the shard's consumer",
                                labels=["stream", "shard"])
        ckpt = GaugeMetricFamily("shardline_fleet_shard_checkpoint_age_seconds",
                                 "Seconds since the shard's checkpoint moved",
                                 labels=["stream", "shard"])
        for s in report.get("shards", []):
            st, cp = s.get("status") or {}, s.get("checkpoint") or {}
            if st.get("millis_behind_latest") is not None:
                lag.add_metric([s["stream"], s["shard_id"]], st["millis_behind_latest"])
            if cp.get("age_s") is not None:
                ckpt.add_metric([s["stream"], s["shard_id"]], cp["age_s"])
        yield lag
        yield ckpt
        recon = {r["target_table"]: r for r in report.get("reconciliation", [])}
        diff = GaugeMetricFamily("shardline_fleet_reconcile_difference_rows",
                                 "Rows a target holds beyond the reconciliation rule's "
                                 "expectation, summed over settled hours that disagree "
                                 "(negative: missing; no lake sample when none is configured)",
                                 labels=["table", "target"])
        bad = GaugeMetricFamily("shardline_fleet_reconcile_disagreeing_hours",
                                "Settled hours whose counts disagree", labels=["table"])
        for t in tables:
            r = recon.get(t)
            if r is None:
                continue
            diff.add_metric([t, "warehouse"], r["warehouse_diff_rows"])
            if r["lake_diff_rows"] is not None:
                diff.add_metric([t, "lake"], r["lake_diff_rows"])
            bad.add_metric([t], r["hours"]["disagree"])
        yield diff
        yield bad
        yield GaugeMetricFamily("shardline_fleet_alerts", "Alerts in the status report",
                                value=len(report.get("alerts", [])))


def fleet_registry(sampler: Sampler, tables: Iterable[str]) -> CollectorRegistry:
    """A registry of its own: only the fleet gauges, none of the process defaults."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(sampler.latest, tables))
    return registry


# -- HTTP ------------------------------------------------------------------------------
def page_html() -> bytes:
    return resources.files("shardline.ops").joinpath("status_page.html").read_bytes()


def make_handler(sampler: Sampler, registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    page = page_html()
    log = sampler.log

    class Handler(BaseHTTPRequestHandler):
        server_version = "shardline-status"

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                self._send(200, "text/html; charset=utf-8", page)
            elif path == "/api/status":
                report = sampler.latest()
                if report is None:
                    self._json(503, {"error": "no sample yet"})
                else:
                    self._json(200, report)
            elif path == "/api/history":
                self._json(200, sampler.history_dict())
            elif path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
            else:
                self._json(404, {"error": "not found"})

        def _json(self, code: int, body: Any) -> None:
            self._send(code, "application/json",
                       json.dumps(body, default=str, allow_nan=False).encode())

        def _send(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Content-Security-Policy",
                             "default-src 'self'; style-src 'unsafe-inline'; "
                             "script-src 'unsafe-inline'; img-src 'self' data:")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            log.debug("%s %s", self.address_string(), format % args)

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, addr: tuple[str, int], handler: type[BaseHTTPRequestHandler]):
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, handler)


def serve(collect: Callable[[], dict[str, Any]], host: str, port: int, *,
          interval_s: float, tables: Iterable[str]) -> int:
    """Serve until SIGTERM/SIGINT; the sampler thread is the only caller of ``collect``."""
    from shardline.exitcodes import ExitCode

    log = get_logger("status-web", listen=f"{host}:{port}")
    sampler = Sampler(collect, interval_s=interval_s, log=log)
    try:
        server = _Server((host, port), make_handler(sampler, fleet_registry(sampler, tables)))
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", host, port, exc)
        return ExitCode.UNAVAILABLE
    stop = StopSignals(log=log, notice="stopping the status page")
    stop.install()
    threads = [threading.Thread(target=sampler.run, args=(stop,), name="status-sampler",
                                daemon=True),
               threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                name="status-http", daemon=True)]
    for t in threads:
        t.start()
    shown = f"[{host}]" if ":" in host else host
    log.info("serving the status page on http://%s:%d/ (sampling every %ss)",
             shown, server.server_address[1], interval_s)
    try:
        stop.wait(float("inf"))
    finally:
        server.shutdown()
        server.server_close()
    return ExitCode.OK
