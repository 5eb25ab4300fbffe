"""The producer's Prometheus metrics (prometheus_client, as the fleet exports them).

Plain ``Counter`` / ``Histogram`` / ``Gauge`` objects in the default registry, so
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` for gunicorn/uWSGI workers) works
unchanged. ``put()`` never touches them: it counts in plain integers and the
background thread adds the deltas every cycle (in multiprocess mode every update
checks ``os.getpid()``, a syscall the hot path must not pay).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from prometheus_client import Counter, Gauge, Histogram

if TYPE_CHECKING:
    from shardline.producer.background import PumpCounts

# put() latency buckets, seconds: the target is p99 <= 50 µs.
LATENCY_BUCKETS = (1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2.5e-4, 1e-3, 1e-2, 0.1, 1.0)

PUT = Counter("shardline_producer_put", "events accepted by put()", ["stream"])
SENT = Counter("shardline_producer_sent", "user records Kinesis acknowledged", ["stream"])
RETRIED = Counter("shardline_producer_retried",
                  "PutRecords entries put again after a failed try", ["stream"])
SPOOLED = Counter("shardline_producer_spooled", "user records written to the spool", ["stream"])
DROPPED = Counter("shardline_producer_dropped", "events given up, by reason", ["stream", "reason"])
TORN = Counter("shardline_producer_spool_torn",
               "spool segments whose tail was torn or corrupt at recovery", ["stream"])
PUT_LATENCY = Histogram("shardline_producer_put_latency_seconds", "time spent in put()",
                        ["stream"], buckets=LATENCY_BUCKETS)
BUFFERED = Gauge("shardline_producer_buffered_bytes", "bytes of events held in memory",
                 ["stream"], multiprocess_mode="livesum")
SPOOL_BYTES = Gauge("shardline_producer_spool_bytes", "bytes of spool segments on disk",
                    ["stream"], multiprocess_mode="livesum")


# The counts pushed as counters, each to the attribute of the same name.
_COUNTED: tuple[Literal["put", "sent", "retried", "spooled", "torn"], ...] = (
    "put", "sent", "retried", "spooled", "torn")


class Exporter:
    """Pushes a producer's counts into the metrics; called from its background thread."""

    def __init__(self, stream: str):
        self.stream = stream
        self.put, self.sent, self.retried = PUT.labels(stream), SENT.labels(stream), \
            RETRIED.labels(stream)
        self.spooled, self.torn = SPOOLED.labels(stream), TORN.labels(stream)
        self.latency = PUT_LATENCY.labels(stream)
        self.buffered, self.spool_bytes = BUFFERED.labels(stream), SPOOL_BYTES.labels(stream)
        self.last: dict[str, int] = {}

    def _delta(self, name: str, value: int) -> int:
        d = value - self.last.get(name, 0)
        self.last[name] = value
        return d

    def push(self, counts: PumpCounts, dropped: dict[str, int], buckets: list[int],
             latency_sum_ns: int, buffered: int, spool_bytes: int) -> None:
        for name in _COUNTED:
            d = self._delta(name, counts.get(name, 0))
            if d > 0:
                getattr(self, name).inc(d)
        for reason, n in dropped.items():
            d = self._delta("dropped:" + reason, n)
            if d > 0:
                DROPPED.labels(self.stream, reason).inc(d)
        self._push_latency(buckets, latency_sum_ns)
        self.buffered.set(buffered)
        self.spool_bytes.set(spool_bytes)

    def _push_latency(self, buckets: list[int], sum_ns: int) -> None:
        """Add whole bucket counts: Histogram has no bulk observe, and observing each put
        again here would cost ~1 µs a put. Falls back to observe() on a bucket bound if
        prometheus_client's internals ever change (the unit tests read the export)."""
        deltas = [self._delta(f"b{i}", n) for i, n in enumerate(buckets)]
        dsum = self._delta("sum_ns", sum_ns)
        if not any(deltas):
            return
        h = self.latency
        inner = getattr(h, "_buckets", None)
        if inner is not None and len(inner) == len(deltas) and hasattr(h, "_sum"):
            for i, d in enumerate(deltas):
                if d:
                    inner[i].inc(d)
            h._sum.inc(dsum / 1e9)
            return
        bounds = LATENCY_BUCKETS + (LATENCY_BUCKETS[-1] * 2,)
        for i, d in enumerate(deltas):
            for _ in range(d):
                h.observe(bounds[i])
