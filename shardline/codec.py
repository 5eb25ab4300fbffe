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
_FLAGS_SEQ = struct.Struct(">BB")  # decode: flags, sequence length
_FIXED_KEY = struct.Struct(">IQH")  # decode: sub_sequence, arrival_ms, partition key length


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


# decode fills Records through their slot descriptors: the same fields the frozen
# dataclass __init__ sets (via object.__setattr__), at a fraction of its cost (it was
# about half of decode's time). In Record field order.
_RECORD_SETTERS = tuple(getattr(Record, f).__set__ for f in
                        ("sequence_number", "sub_sequence_number", "partition_key", "data",
                         "arrival_ms", "flags"))


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
    data = bytes(payload)  # slices of bytes are the record data: no memoryview copies
    end = len(data)
    try:
        magic, version = _HEAD.unpack_from(data, 0)
        if magic != MAGIC:
            raise CodecError("not a shardline batch (bad magic)")
        if version != VERSION:
            raise CodecError(f"batch format version {version} is not supported (this is {VERSION})")
        pos = _HEAD.size
        stream, pos = _read_str(data, pos, _U16)
        shard_id, pos = _read_str(data, pos, _U16)
        (count,), pos = _U32.unpack_from(data, pos), pos + 4
        records: list[Record] = []
        append = records.append
        flags_seq, fixed_key, u32 = _FLAGS_SEQ.unpack_from, _FIXED_KEY.unpack_from, _U32.unpack_from
        new = object.__new__
        set_seq, set_sub, set_key, set_data, set_arrival, set_flags = _RECORD_SETTERS
        for _ in range(count):
            flags, size = flags_seq(data, pos)
            pos += 2
            if pos + size > end:
                raise CodecError("truncated batch payload")
            seq = data[pos:pos + size].decode("utf-8")
            pos += size
            sub, arrival, size = fixed_key(data, pos)
            pos += 14
            if pos + size > end:
                raise CodecError("truncated batch payload")
            key = data[pos:pos + size].decode("utf-8")
            pos += size
            (size,) = u32(data, pos)
            pos += 4
            if pos + size > end:
                raise CodecError("truncated batch payload")
            rec = new(Record)
            set_seq(rec, seq)
            set_sub(rec, sub)
            set_key(rec, key)
            set_data(rec, data[pos:pos + size])
            set_arrival(rec, arrival)
            set_flags(rec, flags)
            append(rec)
            pos += size
    except UnicodeDecodeError:
        raise CodecError("a header string is not UTF-8") from None
    except struct.error:
        raise CodecError("truncated batch payload") from None
    if pos != end:
        raise CodecError(f"{end - pos} trailing bytes after the last record")
    return Batch(stream, shard_id, records)


def _read_str(view: bytes, pos: int, width: struct.Struct) -> tuple[str, int]:
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


# -- reprocess jobs ------------------------------------------------------------------
# A reprocess stage job (``shardline reprocess``) is the batch payload behind a small header
# naming its run: b"SLR" | generation:str8 | batch payload. A consumer's job is the bare
# payload, so nothing changes for them; the stage worker reads both (``decode_job``).
REPROCESS_MAGIC = b"SLR"


def encode_job(batch: Batch, generation: str | None = None) -> bytes:
    """The Gearman payload of a stage job: a reprocess run's carries its generation."""
    payload = encode(batch)
    if not generation:
        return payload
    return REPROCESS_MAGIC + _str(generation, _U8) + payload


def decode_job(payload: bytes) -> tuple[str | None, Batch]:
    """-> (generation or None, batch) of a stage job payload."""
    data = bytes(payload)
    if data[:3] != REPROCESS_MAGIC:
        return None, decode(data)
    try:
        generation, pos = _read_str(data, 3, _U8)
    except struct.error:
        raise CodecError("truncated reprocess job header") from None
    return generation, decode(data[pos:])
