"""``put_events``: a blocking PutRecords call for tools, tests and benchmarks.

A web process embeds ``shardline.producer.Producer`` instead (its ``put`` never waits
on Kinesis). ``put_events`` shares the producer's sending machinery
(``shardline.producer.put_records``: the one retry loop, the lane threads) and its
batch limits: calls of up to 500 records / 5 MiB, retrying only the entries a call
reports as failed, with capped exponential backoff, paced to a rate in records per
second. Lanes (two by default) each own a fixed group of shards, so HTTP calls
overlap while each shard's records are still put by one thread, in order (a retried
entry lands after the entries of its call that succeeded, as with any Kinesis
producer). Shards come from ``shardline.kinesis``; ``aggregate`` (KPL) is
``shardline.producer.kpl.aggregate``.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Iterable

from shardline.errors import ConfigError, FatalError
from shardline.kinesis import KinesisClient, ShardInfo, ShardMap, error_code, open_shards
from shardline.logs import get_logger
from shardline.producer.kpl import AGG_MAX_BYTES, Entry, aggregate
from shardline.producer.put_records import Lane, PutBatch, PutStats, Sender

__all__ = ["MAX_BATCH_RECORDS", "MAX_BATCH_BYTES", "MAX_RECORD_BYTES", "AGG_MAX_BYTES",
           "PutStats", "put_events", "aggregate", "shard_map_for"]

MAX_BATCH_RECORDS = 500                 # PutRecords limit
MAX_BATCH_BYTES = 5 * 1024 * 1024       # PutRecords limit: data + partition keys
MAX_RECORD_BYTES = 1024 * 1024          # one record: data + partition key

log = get_logger("producer")


def shard_map_for(client: KinesisClient, stream: str) -> ShardMap:
    """The stream's open shards as a ShardMap; an empty map (one lane) when ListShards is
    not allowed or fails for a reason other than a missing stream."""
    try:
        return ShardMap(open_shards(client, stream))
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. no kinesis:ListShards permission
        log.warning("cannot list the shards of %s (%s): using one sender", stream,
                    error_code(exc) or type(exc).__name__)
        return ShardMap([])


class _Builder:
    """The entries one lane collects until they make a call."""

    def __init__(self, lane: Lane):
        self.lane = lane
        self.entries: list[Entry] = []
        self.users: list[int] = []
        self.nbytes = 0
        self.first_t = 0.0

    def take(self) -> PutBatch:
        batch = PutBatch(self.entries, self.users, self.nbytes)
        self.entries, self.users, self.nbytes = [], [], 0
        return batch


def put_events(client: KinesisClient, stream: str,
               records: Iterable[tuple[str, bytes] | tuple[str, bytes, int]], rate: float = 0,
               progress: Callable[[PutStats], None] | None = None, *,
               senders: int = 2, shards: list[ShardInfo] | None = None,
               max_attempts: int = 12, backoff_base_s: float = 0.05,
               backoff_max_s: float = 5.0, threaded: bool = True,
               sleep: Callable[[float], None] = time.sleep) -> PutStats:
    """Put ``records`` into ``stream``; return what was sent.

    ``records`` yields ``(partition_key, data)`` or ``(partition_key, data, user_records)``
    (the count an aggregated record carries, for pacing and stats). ``rate`` is user
    records per second (0: as fast as possible). ``progress(stats)`` is called after
    every call.

    With ``senders`` > 1 the open shards (``shards``, else ListShards) are split into
    that many groups, each with its own sender thread. ``threaded=False`` sends from
    the calling thread (one lane).

    Raises ``StreamNotFound`` (a ``ConfigError``), ``ThrottledError`` /
    ``ServiceUnavailable`` (still failing after ``max_attempts``), ``FatalError``
    (refused for good, e.g. a record over 1 MiB).
    """
    stats = PutStats()
    lock = threading.Lock()
    shard_map = ShardMap([])
    if threaded and senders > 1:
        shard_map = ShardMap(shards) if shards is not None else shard_map_for(client, stream)
    n_lanes = max(1, min(senders, len(shard_map))) if threaded else 1
    builders = [_Builder(Lane(Sender(client, stream, stats, max_attempts=max_attempts,
                                     backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s,
                                     progress=progress, sleep=sleep, lock=lock),
                              threaded, f"put-records-{i}")) for i in range(n_lanes)]
    batch_max = MAX_BATCH_RECORDS if rate <= 0 else \
        max(1, min(MAX_BATCH_RECORDS, int(rate / 10 / n_lanes)))
    t0 = time.monotonic()
    queued = 0  # user records handed to the senders so far

    def dispatch(b: _Builder) -> None:
        nonlocal queued
        if rate > 0:
            delay = t0 + queued / rate - time.monotonic()
            if delay > 0:
                sleep(delay)
        queued += sum(b.users)
        b.lane.submit(b.take())

    try:
        for item in records:
            key, data = item[0], item[1]
            n = item[2] if len(item) > 2 else 1
            size = len(data) + len(key.encode("utf-8"))
            if size > MAX_RECORD_BYTES:
                raise FatalError(f"a record of {size} bytes is over the Kinesis limit of "
                                 f"{MAX_RECORD_BYTES} (data + partition key)")
            b = builders[shard_map.slot(key) % n_lanes] if n_lanes > 1 else builders[0]
            if b.entries and (len(b.entries) >= batch_max
                              or b.nbytes + size > MAX_BATCH_BYTES
                              or (rate > 0 and time.monotonic() - b.first_t > 0.5)):
                dispatch(b)
            if not b.entries:
                b.first_t = time.monotonic()
            b.entries.append({"Data": data, "PartitionKey": key})
            b.users.append(n)
            b.nbytes += size
        for b in builders:
            if b.entries:
                dispatch(b)
    finally:
        for b in builders:
            b.lane.close()
        stats.elapsed_s = time.monotonic() - t0
    for b in builders:
        if b.lane.failure:
            raise b.lane.failure[0]
    return stats
