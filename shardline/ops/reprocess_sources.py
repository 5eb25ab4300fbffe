"""Where ``shardline reprocess`` reads source records from: a shard in Kinesis, or the raw
archive in S3. Both yield ``codec.Batch`` es in Kinesis order per shard.

Kinesis: the consumer's own ``ShardReader`` (pacing, bounded retries, KPL de-aggregation)
from the start position up to the shard's tip *as the run reaches it* (an empty read with
MillisBehindLatest 0, or the end of a closed shard), cut into batches by the consumer's
``Batcher`` limits. Everything the consumers read before the run started is behind that
tip, which is what makes a reprocess with the fleet running complete (docs/iterating.md).

Archive: the objects stage workers wrote (``layout.archive_key``: the gzip'd batch
payload, one per batch, keyed by the UTC hour of its first arrival). Replays and job
retries can archive the same records twice under other batch boundaries, so per shard
the objects are read in position order and a record at or before the last one yielded
is dropped: every source record comes out once. ``since``/``until`` filter on arrival
time; only the hours they need are listed (plus the hour before ``since``: a batch keyed
there may hold records after it).
"""
from __future__ import annotations

import gzip
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Iterator

from shardline import codec, layout
from shardline.consumers.batcher import Batcher
from shardline.consumers.reader import Position, ShardReader
from shardline.kinesis import KinesisClient
from shardline.logs import ContextLogger
from shardline.positions import position
from shardline.settings import ConsumerSettings

UTC = timezone.utc
PREFETCH = 16  # archive objects fetched ahead, in threads


def kinesis_batches(kinesis: KinesisClient, stream: str, shard_id: str, start: Position,
                    cs: ConsumerSettings, *, sleep: Callable[[float], None] = time.sleep,
                    log: ContextLogger | None = None) -> Iterator[codec.Batch]:
    """Batches of the shard from ``start`` to its tip (see the module doc)."""
    reader = ShardReader(kinesis, stream, shard_id, cs, sleep=sleep, retry_for_s=60.0, log=log)
    reader.start(start)
    batcher = Batcher(stream, shard_id, cs.batch_max_records, cs.batch_max_bytes, float("inf"))
    while True:
        result = reader.read()
        batcher.add(result.records, 0.0)
        yield from batcher.take(0.0)
        if result.closed or (result.raw_count == 0 and not result.millis_behind):
            break
    yield from batcher.take(0.0, flush=True)


# -- the archive ---------------------------------------------------------------------
def _hours(since: datetime, until: datetime) -> Iterator[datetime]:
    hour = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    while hour <= until:
        yield hour
        hour += timedelta(hours=1)


def archive_keys(s3: Any, bucket: str, prefix: str, stream: str,
                 since: datetime | None = None, until: datetime | None = None) -> list[str]:
    """Every archive key of the stream that can hold records in [since, until)."""
    if since is None:
        prefixes = [layout.archive_prefix(prefix, stream)]
    else:
        prefixes = [layout.archive_prefix(prefix, stream, h)
                    for h in _hours(since, until or datetime.now(UTC))]
    keys = []
    paginator = s3.get_paginator("list_objects_v2")
    for p in prefixes:
        for page in paginator.paginate(Bucket=bucket, Prefix=p):
            keys += [o["Key"] for o in page.get("Contents", [])
                     if o["Key"].endswith(layout.ARCHIVE_SUFFIX)]
    return keys


def _shard_and_first(key: str) -> tuple[str, tuple[int, str, int]]:
    """The shard and first position of an archive key (``.../{shard}/{first}_{last}...``)."""
    parts = key.split("/")
    first = parts[-1].split("_", 1)[0]
    seq, _, sub = first.rpartition("-")
    return parts[-2], position(seq, int(sub))


def archive_batches(s3: Any, bucket: str, prefix: str, stream: str, *,
                    shards: set[str] | None = None, since: datetime | None = None,
                    until: datetime | None = None) -> Iterator[codec.Batch]:
    """The archived batches of the stream (of ``shards``), each source record once, in
    position order per shard, restricted to arrival times in [since, until)."""
    by_shard: dict[str, list[tuple[tuple[int, str, int], str]]] = {}
    for key in archive_keys(s3, bucket, prefix, stream, since, until):
        shard, first = _shard_and_first(key)
        if shards is None or shard in shards:
            by_shard.setdefault(shard, []).append((first, key))
    lo = None if since is None else since.timestamp() * 1000
    hi = None if until is None else until.timestamp() * 1000

    def fetch(key: str) -> codec.Batch:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return codec.decode(gzip.decompress(body))

    with ThreadPoolExecutor(max_workers=PREFETCH, thread_name_prefix="archive-get") as pool:
        for shard in sorted(by_shard):
            keys = [k for _first, k in sorted(by_shard[shard])]
            fetched = (batch for start in range(0, len(keys), PREFETCH)
                       for batch in pool.map(fetch, keys[start:start + PREFETCH]))
            yield from once_per_record(fetched, stream, shard, lo, hi)


def once_per_record(batches: Iterable[codec.Batch], stream: str, shard: str,
                    lo: float | None = None, hi: float | None = None) -> Iterator[codec.Batch]:
    """Archived batches of one shard, in order of their first position -> each source
    record once (a record at or before the last one yielded is dropped), restricted to
    arrival times (ms) in [lo, hi)."""
    mark: tuple[int, str, int] | None = None
    for batch in batches:
        records = [r for r in batch.records
                   if (mark is None or r.position > mark)
                   and (lo is None or r.arrival_ms >= lo)
                   and (hi is None or r.arrival_ms < hi)]
        if batch.records:
            last = batch.records[-1].position
            mark = last if mark is None or last > mark else mark
        if records:
            yield codec.Batch(stream, shard, records)
