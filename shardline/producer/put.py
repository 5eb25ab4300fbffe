"""Putting records into a Kinesis stream: the library behind ``shardline produce``.

``put_events`` is the library call (CLI, tests, benchmarks): PutRecords in calls of
up to 500 records / 5 MiB, retrying only the entries a call reports as failed,
with capped exponential backoff, paced to a rate in records per second.
Sender threads ("lanes", two by default) each own a fixed group of shards, so
HTTP calls overlap with each other and with building the next batch while each
shard's records are still put by one thread, in order (a session's records reach
its shard in order, except that a retried entry lands after the entries of its
call that succeeded, as with any Kinesis producer). The retries and the lane
threads are in ``shardline.producer.put_records``.

``open_shards`` lists a stream's open shards; ``aggregate`` packs user records
into KPL aggregated records, grouped by shard. The commands ``produce`` and
``create-stream`` are in ``shardline.producer.produce_cli``.
"""
from __future__ import annotations

import bisect
import hashlib
import threading
import time
from typing import Any, Callable, Iterable, Iterator

from shardline.errors import ConfigError, FatalError, ServiceUnavailable
from shardline.logs import get_logger
from shardline.producer.put_records import (RETRIABLE_CODES, Lane, PutStats, Sender,
                                            error_code, is_connection_error)

__all__ = ["MAX_BATCH_RECORDS", "MAX_BATCH_BYTES", "MAX_RECORD_BYTES", "AGG_MAX_BYTES",
           "RETRIABLE_CODES", "PutStats", "put_events", "open_shards", "aggregate"]

MAX_BATCH_RECORDS = 500                 # PutRecords limit
MAX_BATCH_BYTES = 5 * 1024 * 1024       # PutRecords limit: data + partition keys
MAX_RECORD_BYTES = 1024 * 1024          # one record: data + partition key
AGG_MAX_BYTES = 1_000_000               # an aggregated record stays under 1 MiB with its key

log = get_logger("producer")


def put_events(client: Any, stream: str, records: Iterable[tuple], rate: float = 0,
               progress: Callable[[PutStats], None] | None = None, *,
               senders: int = 2, shards: list[dict] | None = None,
               max_attempts: int = 12, backoff_base_s: float = 0.05,
               backoff_max_s: float = 5.0, threaded: bool = True,
               sleep: Callable[[float], None] = time.sleep) -> PutStats:
    """Put ``records`` into ``stream``; return what was sent.

    ``records`` yields ``(partition_key, data)`` or ``(partition_key, data, user_records)``
    (the count an aggregated record carries, for pacing and stats). ``rate`` is user
    records per second (0: as fast as possible). ``progress(stats)`` is called after
    every call.

    With ``senders`` > 1 the open shards (``shards``, else ListShards) are split into
    that many groups, each with its own sender thread: calls overlap, while each
    shard's records are still put by one thread, in order. ``threaded=False`` sends
    from the calling thread (one lane).

    Raises ``ConfigError`` (no such stream), ``ThrottledError`` / ``ServiceUnavailable``
    (still failing after ``max_attempts``), ``FatalError`` (refused for good, e.g. a
    record over 1 MiB).
    """
    stats = PutStats()
    lock = threading.Lock()
    starts: list[int] = []
    if threaded and senders > 1:
        if shards is None:
            try:
                shards = open_shards(client, stream)
            except ConfigError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. no kinesis:ListShards permission
                log.warning("cannot list the shards of %s (%s): using one sender", stream,
                            error_code(exc) or type(exc).__name__)
                shards = []
        if len(shards) > 1:
            starts = [int(sh["HashKeyRange"]["StartingHashKey"]) for sh in shards]
    n_lanes = min(senders, len(starts)) if starts else 1
    lanes = [Lane(Sender(client, stream, stats, max_attempts=max_attempts,
                           backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s,
                           progress=progress, sleep=sleep, lock=lock),
                   threaded, f"put-records-{i}") for i in range(n_lanes)]
    batch_max = MAX_BATCH_RECORDS if rate <= 0 else \
        max(1, min(MAX_BATCH_RECORDS, int(rate / 10 / n_lanes)))
    t0 = time.monotonic()
    queued = 0  # user records handed to the senders so far

    def dispatch(lane: Lane) -> None:
        nonlocal queued
        if rate > 0:
            delay = t0 + queued / rate - time.monotonic()
            if delay > 0:
                sleep(delay)
        queued += sum(lane.users)
        lane.submit()

    md5 = hashlib.md5
    try:
        for item in records:
            key, data = item[0], item[1]
            n = item[2] if len(item) > 2 else 1
            kb = key.encode("utf-8")
            size = len(data) + len(kb)
            if size > MAX_RECORD_BYTES:
                raise FatalError(f"a record of {size} bytes is over the Kinesis limit of "
                                 f"{MAX_RECORD_BYTES} (data + partition key)")
            if n_lanes == 1:
                lane = lanes[0]
            else:
                h = int.from_bytes(md5(kb).digest(), "big")
                lane = lanes[max(0, bisect.bisect_right(starts, h) - 1) % n_lanes]
            if lane.entries and (len(lane.entries) >= batch_max
                                 or lane.nbytes + size > MAX_BATCH_BYTES
                                 or (rate > 0 and time.monotonic() - lane.first_t > 0.5)):
                dispatch(lane)
            if not lane.entries:
                lane.first_t = time.monotonic()
            lane.entries.append({"Data": data, "PartitionKey": key})
            lane.users.append(n)
            lane.nbytes += size
        for lane in lanes:
            if lane.entries:
                dispatch(lane)
    finally:
        for lane in lanes:
            lane.close()
        stats.elapsed_s = time.monotonic() - t0
    for lane in lanes:
        if lane.failure:
            raise lane.failure[0]
    return stats


def open_shards(client: Any, stream: str) -> list[dict]:
    """The stream's open shards (no EndingSequenceNumber), in hash-key order."""
    shards: list[dict] = []
    kwargs: dict[str, Any] = {"StreamName": stream}
    while True:
        try:
            page = client.list_shards(**kwargs)
        except Exception as exc:  # noqa: BLE001
            if error_code(exc) == "ResourceNotFoundException":
                raise ConfigError(f"stream {stream!r} does not exist; create it with "
                                  f"`shardline create-stream --stream {stream} --shards N`") \
                    from None
            if is_connection_error(exc):
                raise ServiceUnavailable(f"Kinesis ListShards: {exc}") from None
            raise
        shards += page["Shards"]
        token = page.get("NextToken")
        if not token:
            break
        kwargs = {"NextToken": token}
    shards = [s for s in shards if "EndingSequenceNumber" not in s["SequenceNumberRange"]]
    return sorted(shards, key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]))


def aggregate(records: Iterable[tuple[str, bytes]], per_record: int,
              shards: list[dict]) -> Iterator[tuple[str, bytes, int]]:
    """Pack up to ``per_record`` user records per Kinesis record (KPL aggregated format).

    Like the KPL, user records are grouped by the shard their partition key maps to,
    and each aggregated record is put with its first user record's key, so it lands
    on that shard and one session's records stay in order. Yields
    ``(partition_key, data, user_records)``.
    """
    from aws_kinesis_agg.aggregator import RecordAggregator

    starts = [int(s["HashKeyRange"]["StartingHashKey"]) for s in shards] or [0]
    buffers: dict[int, Any] = {}

    def emit(agg_record: Any) -> tuple[str, bytes, int]:
        key, _, data = agg_record.get_contents()
        return key, data, agg_record.get_num_user_records()

    for key, data in records:
        h = int.from_bytes(hashlib.md5(key.encode("utf-8")).digest(), "big")
        slot = max(0, bisect.bisect_right(starts, h) - 1)
        agg = buffers.get(slot)
        if agg is None:
            agg = buffers[slot] = RecordAggregator(max_size=AGG_MAX_BYTES)
        full = agg.add_user_record(key, data)
        if full is not None:
            yield emit(full)
        if agg.get_num_user_records() >= per_record:
            yield emit(agg.clear_and_get())
    for slot in sorted(buffers):
        rest = buffers[slot].clear_and_get()
        if rest is not None:
            yield emit(rest)
