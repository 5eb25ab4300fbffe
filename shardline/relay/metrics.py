"""The relay's Prometheus metrics (prometheus_client, as the fleet exports them): pushed as
deltas of the engine's plain counts once a second, never from the request path."""
from __future__ import annotations

from prometheus_client import Counter, Gauge

from shardline.relay.core import Counts

ACCEPTED = Counter("shardline_relay_accepted", "events journaled and acknowledged OK")
ACCEPTED_BYTES = Counter("shardline_relay_accepted_bytes", "bytes of the events acknowledged")
REFUSED = Counter("shardline_relay_refused", "lines answered ERR, by reason", ["reason"])
SHIPPED = Counter("shardline_relay_shipped", "events put into the producer")
COMMITS = Counter("shardline_relay_commits", "journal group commits (one fdatasync each)")
QUEUE = Gauge("shardline_relay_queue_bytes", "journal bytes not yet durable in the producer",
              multiprocess_mode="livesum")
CONNECTIONS = Gauge("shardline_relay_connections", "open client connections",
                    multiprocess_mode="livesum")


class Exporter:
    def __init__(self) -> None:
        self.last = Counts()

    def push(self, counts: Counts, queue_bytes: int, connections: int) -> None:
        last = self.last
        for metric, now, before in ((ACCEPTED, counts.accepted, last.accepted),
                                    (ACCEPTED_BYTES, counts.accepted_bytes, last.accepted_bytes),
                                    (SHIPPED, counts.shipped, last.shipped),
                                    (COMMITS, counts.commits, last.commits)):
            if now > before:
                metric.inc(now - before)
        for reason, n in dict(counts.refused).items():
            if n > last.refused.get(reason, 0):
                REFUSED.labels(reason).inc(n - last.refused.get(reason, 0))
        self.last = Counts(counts.accepted, counts.accepted_bytes, dict(counts.refused),
                           counts.commits, counts.shipped)
        QUEUE.set(queue_bytes)
        CONNECTIONS.set(connections)
