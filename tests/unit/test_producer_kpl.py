"""KPL aggregates from ``shardline.producer.kpl.pack``, decoded with the library's
deaggregator: every record once, each shard's records in order, each aggregate within
1 MB and on one shard, ``max_records`` kept, records too big to wrap sent plain."""
from __future__ import annotations

from shardline.kinesis import ShardMap
from shardline.producer.kpl import AGG_MAX_BYTES, _as_info, pack
from tests.fakes import FakeKinesis
from tests.producer_kit import user_records

SHARDS = ShardMap(_as_info(FakeKinesis(shards=4).list_shards("s")["Shards"]))


def records(n: int, keys: list[str], size: int) -> list[tuple]:
    return [(i, 0, keys[i % len(keys)], b"%07d-" % i + b"x" * size) for i in range(n)]


def check(records_in: list[tuple], max_records: int) -> tuple[list, list]:
    entries, users, ordered, spans, nbytes = pack(records_in, SHARDS.slot, max_records)
    assert sorted(ordered) == sorted(records_in) and sum(users) == len(records_in)
    assert nbytes == sum(len(e["Data"]) + len(e["PartitionKey"]) for e in entries)
    for entry, n, (a, b) in zip(entries, users, spans, strict=True):
        key, data = entry["PartitionKey"], entry["Data"]
        assert b - a == n
        assert user_records([(key, data)]) == [(r[2], r[3]) for r in ordered[a:b]]
        assert ordered[a][2] == key  # put with its first record's key: lands on its shard
        assert {SHARDS.slot(r[2]) for r in ordered[a:b]} == {SHARDS.slot(key)}
        if n > 1:
            assert len(data) + len(key.encode()) <= AGG_MAX_BYTES
            assert not max_records or n <= max_records
    for slot in range(len(SHARDS)):  # a shard's records keep their order
        mine = [r for r in ordered if SHARDS.slot(r[2]) == slot]
        assert mine == sorted(mine)
    return entries, users


def test_aggregates_fill_up_to_the_limit_and_a_record_too_big_to_wrap_goes_plain():
    recs = records(14_000, [f"s-{k:03d}" for k in range(61)], 400)
    big = (3_500, 0, "s-007", b"B" * (AGG_MAX_BYTES - 600))
    recs[3_500] = big
    entries, users = check(recs, 0)
    plain = [e for e in entries if not e["Data"].startswith(b"\xf3\x89\x9a\xc2")]
    assert [e["Data"] for e in plain] == [big[3]]
    full = [len(e["Data"]) for e, n in zip(entries, users, strict=True) if n > 1]
    assert max(full) > 0.99 * AGG_MAX_BYTES  # aggregates are filled, not cut early


def test_max_records_and_keys_that_are_not_ascii():
    keys = ["sé-ß-日本", "k", "ключ-1", "x" * 256]
    entries, users = check(records(500, keys, 50), 7)
    assert max(users) == 7
