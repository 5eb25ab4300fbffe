# Reference copy of shardline/codec.py at d89c0d2 (see __init__.py); do not edit.
"""The batch job payload: what a consumer hands a stage worker through Gearman.

A compact, versioned binary format that carries each record's data bytes
exactly (no base64, no JSON escaping), so any byte sequence survives:

    header  = b"SLB" version:u8 | stream:str16 | shard_id:str16 | count:u32
    record  = flags:u8 | sequence:str8 | sub_sequence:u32 | arrival_ms:u64
              | partition_key:str16 | data:bytes32
    strN    = length:uN big-endian + UTF-8 bytes (bytesN: raw bytes)

flags: bit 0 = the record came from a KPL aggregate, bit 1 = it is the last
sub-record of its aggregate (a checkpoint there may use AFTER_SEQUENCE_NUMBER).
A decoder rejects unknown versions instead of guessing.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterable, Sequence

from shardline import layout
from shardline.positions import position

MAGIC = b"SLB"
VERSION = 1
AGGREGATED = 0x01
LAST_SUB = 0x02

_HEAD = struct.Struct(">3sB")
_U8, _U16, _U32 = struct.Struct(">B"), struct.Struct(">H"), struct.Struct(">I")
_REC_FIXED = struct.Struct(">IQ")  # sub_sequence, arrival_ms


class CodecError(ValueError):
    """The payload is not a batch this version can read."""


@dataclass(frozen=True, slots=True)
class Record:
    sequence_number: str
    sub_sequence_number: int
    partition_key: str
    data: bytes
    arrival_ms: int
    flags: int = LAST_SUB

    @property
    def position(self) -> tuple[int, str, int]:
        """Sort key in Kinesis order (``shardline.positions``)."""
        return position(self.sequence_number, self.sub_sequence_number)

    @property
    def closes_sequence(self) -> bool:
        """True when no later sub-record shares this sequence number."""
        return bool(self.flags & LAST_SUB)


@dataclass(frozen=True, slots=True)
class Batch:
    stream: str
    shard_id: str
    records: Sequence[Record]

    @property
    def first(self) -> Record:
        return self.records[0]

    @property
    def last(self) -> Record:
        return self.records[-1]

    @property
    def data_bytes(self) -> int:
        return sum(len(r.data) for r in self.records)

    @property
    def batch_id(self) -> str:
        """Deterministic name: same records, same id (Gearman unique id, S3 keys)."""
        return layout.batch_name(self)


def _str(text: str, width: struct.Struct) -> bytes:
    raw = text.encode("utf-8")
    return width.pack(len(raw)) + raw


def encode(batch: Batch) -> bytes:
    if not batch.records:
        raise CodecError("a batch needs at least one record")
    parts: list[bytes] = [_HEAD.pack(MAGIC, VERSION), _str(batch.stream, _U16),
                          _str(batch.shard_id, _U16), _U32.pack(len(batch.records))]
    for r in batch.records:
        parts += [_U8.pack(r.flags), _str(r.sequence_number, _U8),
                  _REC_FIXED.pack(r.sub_sequence_number, r.arrival_ms),
                  _str(r.partition_key, _U16), _U32.pack(len(r.data)), r.data]
    return b"".join(parts)


def decode(payload: bytes) -> Batch:
    view = memoryview(payload)
    try:
        magic, version = _HEAD.unpack_from(view, 0)
        if magic != MAGIC:
            raise CodecError("not a shardline batch (bad magic)")
        if version != VERSION:
            raise CodecError(f"batch format version {version} is not supported (this is {VERSION})")
        pos = _HEAD.size
        stream, pos = _read_str(view, pos, _U16)
        shard_id, pos = _read_str(view, pos, _U16)
        (count,), pos = _U32.unpack_from(view, pos), pos + 4
        records = []
        for _ in range(count):
            (flags,), pos = _U8.unpack_from(view, pos), pos + 1
            seq, pos = _read_str(view, pos, _U8)
            sub, arrival = _REC_FIXED.unpack_from(view, pos)
            pos += _REC_FIXED.size
            key, pos = _read_str(view, pos, _U16)
            (size,), pos = _U32.unpack_from(view, pos), pos + 4
            if pos + size > len(view):
                raise CodecError("truncated batch payload")
            records.append(Record(seq, sub, key, bytes(view[pos:pos + size]), arrival, flags))
            pos += size
    except struct.error:
        raise CodecError("truncated batch payload") from None
    if pos != len(view):
        raise CodecError(f"{len(view) - pos} trailing bytes after the last record")
    return Batch(stream, shard_id, records)


def _read_str(view: memoryview, pos: int, width: struct.Struct) -> tuple[str, int]:
    (size,) = width.unpack_from(view, pos)
    pos += width.size
    if pos + size > len(view):
        raise CodecError("truncated batch payload")
    try:
        return bytes(view[pos:pos + size]).decode("utf-8"), pos + size
    except UnicodeDecodeError:
        raise CodecError("a header string is not UTF-8") from None


def encoded_size(records: Iterable[Record]) -> int:
    """Payload bytes the records will take (for the window's byte budget)."""
    return sum(24 + len(r.sequence_number) + len(r.partition_key.encode()) + len(r.data)
               for r in records)
