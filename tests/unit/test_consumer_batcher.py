"""Batcher: close by records, bytes, age; never reorders or drops."""
from shardline.consumers.batcher import Batcher
from shardline.codec import Record


def recs(n: int, size: int = 10, start: int = 0) -> list[Record]:
    return [Record(str(10 ** 55 + i), 0, "k", b"x" * size, 0) for i in range(start, start + n)]


def test_closes_by_record_count():
    b = Batcher("s", "sh", 3, 10_000, 1.0)
    b.add(recs(7), 0.0)
    out = b.take(0.0)
    assert [len(x.records) for x in out] == [3, 3]
    assert len(b) == 1


def test_closes_by_bytes_without_exceeding():
    b = Batcher("s", "sh", 1000, 1000, 1.0)
    b.add(recs(5, size=300), 0.0)
    out = b.take(0.0)
    assert [len(x.records) for x in out] == [3]  # 900 bytes; the 4th would pass 1000
    assert all(x.data_bytes <= 1000 for x in out)


def test_single_oversized_record_is_its_own_batch():
    b = Batcher("s", "sh", 1000, 1000, 1.0)
    b.add(recs(1, size=5000), 0.0)
    assert [len(x.records) for x in b.take(0.0)] == [1]


def test_closes_by_age_and_flush():
    b = Batcher("s", "sh", 1000, 100_000, 1.0)
    b.add(recs(2), 10.0)
    assert b.take(10.5) == []
    assert b.age_s(10.5) == 0.5
    assert [len(x.records) for x in b.take(11.0)] == [2]
    b.add(recs(1, start=5), 20.0)
    assert [len(x.records) for x in b.take(20.0, flush=True)] == [1]


def test_order_kept_across_batches():
    b = Batcher("s", "sh", 4, 100_000, 1.0)
    b.add(recs(10), 0.0)
    out = b.take(0.0, flush=True)
    seqs = [r.sequence_number for x in out for r in x.records]
    assert seqs == [r.sequence_number for r in recs(10)]
