"""KPL aggregated records: many user records in one Kinesis record, grouped by shard.

The format is the KPL's (``aws_kinesis_agg.MAGIC`` ``f3 89 9a c2``, a protobuf
``AggregatedRecord``, its MD5). Encoding is written out here instead of going
through ``aws_kinesis_agg.RecordAggregator``: that class costs ~13 µs per user
record on this machine (a protobuf message object per record), more than half of the
producer's budget at 50,000 events/s; ``_shard_records`` costs ~1.4 µs, most of it
MD5 (which runs without the GIL). The library stays the reference: the consumer
de-aggregates with it and the tests decode every aggregate built here with its
deaggregator.

Protobuf (proto2) of the format::

    message AggregatedRecord { repeated string partition_key_table = 1;
                               repeated string explicit_hash_key_table = 2;
                               repeated Record records = 3; }
    message Record { required uint64 partition_key_index = 1;
                     optional uint64 explicit_hash_key_index = 2;
                     required bytes data = 3; }
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Iterable, Iterator, Mapping

from shardline.kinesis import ShardInfo, ShardMap

# One of the producer's records: (sequence number, monotonic ns when put, partition key, data).
Record = tuple[int, int, str, bytes]
# One PutRecords request entry: {"Data": bytes, "PartitionKey": str}.
Entry = dict[str, bytes | str]

MAGIC = b"\xf3\x89\x9a\xc2"
DIGEST_BYTES = 16
AGG_MAX_BYTES = 1_000_000  # an aggregate + its partition key stays under Kinesis' 1 MiB


def _varint(value: int) -> bytes:
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_V = [_varint(i) for i in range(1 << 14)]  # every one- and two-byte varint, looked up
_LIMIT_PLAIN = AGG_MAX_BYTES - 1024           # a user record this big goes plain


def _shard_records(group: list[Record], max_records: int) -> Iterator[tuple[str, bytes, int]]:
    """One shard's records ``(seq, t, key, data)``, in order, as Kinesis records:
    ``(partition key, data, user records)``; each aggregate holds as many as fit 1 MB
    (or ``max_records``), a record too big to wrap is yielded plain (count 1).

    One loop with table-looked-up varints and no object per record: it runs on the
    producer's thread for every event, and every microsecond it holds the GIL is one a
    ``put()`` or a lane may wait for. The size check keeps data + partition key of
    every aggregate within ``AGG_MAX_BYTES``."""
    V, limit = _V, AGG_MAX_BYTES
    keys: dict[str, int] = {}
    table: list[bytes] = []
    parts: list[bytes] = []
    size, count, first_len, first_key = len(MAGIC) + DIGEST_BYTES, 0, 0, ""
    for rec in group:
        key, data = rec[2], rec[3]
        n = len(data)
        if n + len(key) > _LIMIT_PLAIN:
            if count:
                yield _finish(first_key, table, parts, count)
                keys, table, parts = {}, [], []
                size, count = len(MAGIC) + DIGEST_BYTES, 0
            yield key, data, 1
            continue
        while True:
            index = keys.get(key)
            if index is None:
                kb = key.encode("utf-8")
                entry = b"\x0a" + (V[len(kb)] if len(kb) < 16384 else _varint(len(kb))) + kb
                index = len(keys)
                grow = len(entry)
            else:
                entry = None
                grow = 0
            vi = V[index] if index < 16384 else _varint(index)
            vn = V[n] if n < 16384 else _varint(n)
            rec_len = 2 + len(vi) + len(vn) + n
            vr = V[rec_len] if rec_len < 16384 else _varint(rec_len)
            grow += 1 + len(vr) + rec_len
            if count and (size + grow + first_len > limit or count == max_records):
                yield _finish(first_key, table, parts, count)
                keys, table, parts = {}, [], []
                size, count = len(MAGIC) + DIGEST_BYTES, 0
                continue  # again, as the first record of a new aggregate
            break
        if not count:
            first_key = key
            first_len = len(kb) if entry is not None else len(key.encode("utf-8"))
        if entry is not None:
            keys[key] = index
            table.append(entry)
        parts += (b"\x1a", vr, b"\x08", vi, b"\x1a", vn, data)
        size += grow
        count += 1
    if count:
        yield _finish(first_key, table, parts, count)


def _finish(key: str, table: list[bytes], parts: list[bytes], count: int
            ) -> tuple[str, bytes, int]:
    body = b"".join(table + parts)  # the key table first, as the KPL writes it
    return key, b"".join((MAGIC, body, hashlib.md5(body).digest())), count


def pack(records: list[Record], slot_of: Callable[[str], int], max_records: int = 0
         ) -> tuple[list[Entry], list[int], list[Record], list[tuple[int, int]], int]:
    """One PutRecords call's entries from the producer's records ``(seq, t, key, data)``.

    Records are grouped by shard slot, each group packed into aggregates (a record too
    big to wrap goes plain). Returns (entries, user records per entry, the records in
    entry order, each entry's slice of them, bytes of the entries)."""
    groups: dict[int, list[Record]] = {}
    for rec in records:
        slot = slot_of(rec[2])
        group = groups.get(slot)
        if group is None:
            groups[slot] = [rec]
        else:
            group.append(rec)
    entries: list[Entry] = []
    users: list[int] = []
    ordered: list[Record] = []
    spans: list[tuple[int, int]] = []
    nbytes = 0
    for slot in sorted(groups):
        group = groups[slot]
        start = len(ordered)
        for key, data, n in _shard_records(group, max_records):
            entries.append({"Data": data, "PartitionKey": key})
            users.append(n)
            spans.append((start, start + n))
            start += n
            nbytes += len(data) + len(key)
        ordered += group
    return entries, users, ordered, spans, nbytes


def aggregate(records: Iterable[tuple[str, bytes]], per_record: int,
              shards: Iterable[ShardInfo | Mapping[str, object]]
              ) -> Iterator[tuple[str, bytes, int]]:
    """Pack up to ``per_record`` user records per Kinesis record (KPL aggregated format).

    Like the KPL, user records are grouped by the shard their partition key maps to,
    and each aggregated record is put with its first user record's key, so it lands
    on that shard and one session's records stay in order. Yields
    ``(partition_key, data, user_records)``, shard by shard (the records are read first).
    """
    shard_map = ShardMap(_as_info(shards))
    groups: dict[int, list[Record]] = {}
    for key, data in records:
        groups.setdefault(shard_map.slot(key), []).append((0, 0, key, data))
    for slot in sorted(groups):
        yield from _shard_records(groups[slot], per_record)


def _as_info(shards: Iterable[ShardInfo | Mapping[str, Any]]) -> list[ShardInfo]:
    """ShardInfo objects, or ListShards dicts as boto3 returns them (older callers)."""
    out = []
    for s in shards:
        if isinstance(s, ShardInfo):
            out.append(s)
        else:
            out.append(ShardInfo(s["ShardId"], closed="EndingSequenceNumber" in
                                 s.get("SequenceNumberRange", {}),
                                 starting_hash_key=int(s["HashKeyRange"]["StartingHashKey"])))
    return out
