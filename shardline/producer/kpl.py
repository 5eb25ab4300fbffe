"""KPL aggregated records: many user records in one Kinesis record, grouped by shard.

The format is the KPL's (``aws_kinesis_agg.MAGIC`` ``f3 89 9a c2``, a protobuf
``AggregatedRecord``, its MD5). Encoding is written out here instead of going
through ``aws_kinesis_agg.RecordAggregator``: that class costs ~13 µs per user
record on this machine (a protobuf message object per record), a quarter of the
producer's budget at 50,000 events/s; the wire format below costs ~1.5 µs. The
library stays the reference: the consumer de-aggregates with it and the tests
decode every aggregate built here with its deaggregator.

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
from typing import Any, Callable, Iterable, Iterator

from shardline.kinesis import ShardInfo, ShardMap

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


class Aggregate:
    """One aggregated record being filled; ``add`` says whether the user record fit."""

    __slots__ = ("max_bytes", "max_records", "keys", "table", "parts", "size", "count",
                 "first_key")

    def __init__(self, max_bytes: int = AGG_MAX_BYTES, max_records: int = 0):
        self.max_bytes, self.max_records = max_bytes, max_records
        self.keys: dict[str, int] = {}
        self.table: list[bytes] = []  # partition_key_table entries
        self.parts: list[bytes] = []  # records entries
        self.size = len(MAGIC) + DIGEST_BYTES  # bytes of the finished record so far
        self.count = 0
        self.first_key = ""

    def add(self, key: str, data: bytes) -> bool:
        """Append one user record; False (nothing added) when it would not fit."""
        if self.max_records and self.count >= self.max_records:
            return False
        index = self.keys.get(key)
        grow = 0
        entry = b""
        if index is None:
            kb = key.encode("utf-8")
            index = len(self.keys)
            entry = b"\x0a" + _varint(len(kb)) + kb
            grow += len(entry)
        body = b"\x08" + _varint(index) + b"\x1a" + _varint(len(data))
        rec_len = len(body) + len(data)
        head = b"\x1a" + _varint(rec_len)
        grow += len(head) + rec_len
        first = not self.count
        key_bytes = len((key if first else self.first_key).encode("utf-8"))
        if self.count and self.size + grow + key_bytes > self.max_bytes:
            return False
        if first:
            self.first_key = key
        if entry:
            self.keys[key] = index
            self.table.append(entry)
        self.parts += (head, body, data)
        self.size += grow
        self.count += 1
        return True

    def finish(self) -> tuple[str, bytes, int]:
        """(partition key, data, user records) of the finished aggregate (table first,
        as the KPL writes it)."""
        body = b"".join(self.table) + b"".join(self.parts)
        return self.first_key, MAGIC + body + hashlib.md5(body).digest(), self.count


def pack(records: list[tuple], slot_of: Callable[[str], int], max_records: int = 0
         ) -> tuple[list[dict], list[int], list[tuple], list[tuple[int, int]], int]:
    """One PutRecords call's entries from the producer's records ``(seq, t, key, data)``.

    Records are grouped by shard slot, each group packed into aggregates (a record too
    big to wrap goes plain). Returns (entries, user records per entry, the records in
    entry order, each entry's slice of them, bytes of the entries)."""
    groups: dict[int, list] = {}
    for rec in records:
        groups.setdefault(slot_of(rec[2]), []).append(rec)
    entries: list[dict] = []
    users: list[int] = []
    ordered: list[tuple] = []
    spans: list[tuple[int, int]] = []
    nbytes = 0

    def close(agg: Aggregate, start: int) -> int:
        nonlocal nbytes
        if agg.count:
            key, data, n = agg.finish()
            entries.append({"Data": data, "PartitionKey": key})
            users.append(n)
            spans.append((start, len(ordered)))
            nbytes += len(data) + len(key)
        return len(ordered)

    for slot in sorted(groups):
        agg = Aggregate(AGG_MAX_BYTES, max_records)
        start = len(ordered)
        for rec in groups[slot]:
            big = len(rec[3]) + len(rec[2]) > AGG_MAX_BYTES - 1024
            if big or not agg.add(rec[2], rec[3]):
                start = close(agg, start)
                agg = Aggregate(AGG_MAX_BYTES, max_records)
                if big:  # sent as a plain record
                    entries.append({"Data": rec[3], "PartitionKey": rec[2]})
                    users.append(1)
                    ordered.append(rec)
                    spans.append((start, start + 1))
                    nbytes += len(rec[3]) + len(rec[2])
                    start += 1
                    continue
                agg.add(rec[2], rec[3])
            ordered.append(rec)
        close(agg, start)
    return entries, users, ordered, spans, nbytes


def aggregate(records: Iterable[tuple[str, bytes]], per_record: int,
              shards: Iterable[ShardInfo | dict]) -> Iterator[tuple[str, bytes, int]]:
    """Pack up to ``per_record`` user records per Kinesis record (KPL aggregated format).

    Like the KPL, user records are grouped by the shard their partition key maps to,
    and each aggregated record is put with its first user record's key, so it lands
    on that shard and one session's records stay in order. Yields
    ``(partition_key, data, user_records)``.
    """
    shard_map = ShardMap(_as_info(shards))
    open_aggs: dict[int, Aggregate] = {}
    for key, data in records:
        slot = shard_map.slot(key)
        agg = open_aggs.get(slot)
        if agg is None:
            agg = open_aggs[slot] = Aggregate(max_records=per_record)
        if not agg.add(key, data):
            yield agg.finish()
            agg = open_aggs[slot] = Aggregate(max_records=per_record)
            agg.add(key, data)
    for slot in sorted(open_aggs):
        if open_aggs[slot].count:
            yield open_aggs[slot].finish()


def _as_info(shards: Iterable[Any]) -> list[ShardInfo]:
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
