"""The batch job payload keeps every byte and refuses what it cannot read."""
from __future__ import annotations

import random

import pytest

from shardline import codec
from shardline.codec import AGGREGATED, LAST_SUB, Batch, CodecError, Record

SEQ = "49590338271490256608559692538361571095921575989136588898"


def rec(i: int, data: bytes, **kw) -> Record:
    return Record(kw.pop("seq", str(int(SEQ) + i)), kw.pop("sub", 0), kw.pop("pk", f"pk-{i}"),
                  data, kw.pop("arrival", 1_700_000_000_000 + i), **kw)


ODD = [b"", b"\x00", bytes(range(256)), b"\xff\xfe\xfd", "emoji 🚀 ü".encode(),
       b"\n\r\t\"',\\", b"x" * 1_000_000]


def test_round_trip_keeps_odd_bytes_exactly():
    batch = Batch("stream-é", "shardId-000000000007", [rec(i, d) for i, d in enumerate(ODD)])
    out = codec.decode(codec.encode(batch))
    assert out.stream == batch.stream and out.shard_id == batch.shard_id
    assert [r.data for r in out.records] == ODD
    assert list(out.records) == list(batch.records)


def test_round_trip_random_records():
    rnd = random.Random(5)
    records = [Record(str(rnd.randrange(10**55, 10**56)), rnd.randrange(0, 2**32),
                      "k" * rnd.randrange(0, 256), rnd.randbytes(rnd.randrange(0, 3000)),
                      rnd.randrange(0, 2**63), rnd.choice([0, AGGREGATED, LAST_SUB,
                                                           AGGREGATED | LAST_SUB]))
               for _ in range(300)]
    batch = Batch("s", "shardId-1", records)
    assert list(codec.decode(codec.encode(batch)).records) == records


def test_flags_and_positions():
    a = rec(0, b"a", sub=1, flags=AGGREGATED)
    b = rec(0, b"b", sub=2, flags=AGGREGATED | LAST_SUB)
    assert not a.closes_sequence and b.closes_sequence
    assert a.position < b.position
    # longer sequence numbers sort later even when their text sorts earlier
    assert rec(0, b"", seq="9").position < rec(0, b"", seq="10").position


def test_batch_id_is_deterministic():
    records = [rec(i, b"x") for i in range(3)]
    one, two = Batch("s", "shard-1", records), Batch("s", "shard-1", list(records))
    assert one.batch_id == two.batch_id
    assert one.batch_id.startswith("shard-1/")
    assert Batch("s", "shard-1", records[:2]).batch_id != one.batch_id


@pytest.mark.parametrize("mutate, message", [
    (lambda p: b"XYZ" + p[3:], "bad magic"),
    (lambda p: p[:3] + bytes([9]) + p[4:], "version 9"),
    (lambda p: p[:-1], "truncated"),
    (lambda p: p + b"\x00", "trailing"),
    (lambda p: p[:10], "truncated"),
])
def test_decode_rejects_damaged_payloads(mutate, message):
    payload = codec.encode(Batch("s", "shard", [rec(0, b"hello")]))
    with pytest.raises(CodecError, match=message):
        codec.decode(mutate(payload))


def test_empty_batch_is_refused():
    with pytest.raises(CodecError):
        codec.encode(Batch("s", "shard", []))


def test_encoded_size_estimate_is_close():
    records = [rec(i, b"x" * 300) for i in range(100)]
    actual = len(codec.encode(Batch("s", "shard", records)))
    assert abs(codec.encoded_size(records) - actual) < actual * 0.05
