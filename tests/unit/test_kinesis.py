"""shardline.kinesis: error classes by code (never by message), ListShards, timestamps."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from botocore.exceptions import ReadTimeoutError

from tests.fakes import FakeKinesis, client_error

from shardline import kinesis
from shardline.errors import ConfigError, IteratorExpired, ServiceUnavailable, ThrottledError
from shardline.kinesis import ShardInfo, list_shards


def test_error_mapping_by_code_not_message():
    assert isinstance(kinesis.classify(client_error("ProvisionedThroughputExceededException")),
                      ThrottledError)
    assert isinstance(kinesis.classify(client_error("ExpiredIteratorException")),
                      IteratorExpired)
    assert isinstance(kinesis.classify(client_error("Whatever", status=503)), ServiceUnavailable)
    assert isinstance(kinesis.classify(ReadTimeoutError(endpoint_url="http://x")),
                      ServiceUnavailable)
    assert kinesis.classify(client_error("ResourceNotFoundException")) is None
    assert kinesis.classify(ValueError("throttled")) is None


def test_call_maps_a_missing_stream_to_a_config_error_naming_the_code():
    def missing(**kw):
        raise client_error("ResourceNotFoundException", "ListShards")

    with pytest.raises(kinesis.StreamNotFound, match="ResourceNotFoundException") as info:
        kinesis.call(missing, StreamName="clicks")
    assert isinstance(info.value, ConfigError) and "'clicks'" in str(info.value)


def test_list_shards_gives_parents():
    k = FakeKinesis()
    k.add_shard("p", closed=True)
    k.add_shard("c1", parent="p")
    k.add_shard("c2", parent="p", adjacent_parent="q")
    shards = {s.shard_id: s for s in list_shards(k, "s")}
    assert shards["p"].closed and not shards["c1"].closed
    assert (shards["c2"].parent, shards["c2"].adjacent_parent) == ("p", "q")
    assert shards["c2"].parents == ("p", "q") and shards["c1"].parents == ("p",)


def test_list_shards_follows_next_token():
    fake = FakeKinesis(list_page_size=1)
    fake.add_shard("shardId-000000000000", closed=True)
    fake.add_shard("shardId-000000000001", parent="shardId-000000000000")
    shards = list_shards(fake, "clicks")
    assert shards == [ShardInfo("shardId-000000000000", closed=True),
                      ShardInfo("shardId-000000000001", parent="shardId-000000000000")]
    assert [kw for op, kw in fake.calls if op == "list_shards"] == [
        {"StreamName": "clicks"}, {"NextToken": "t1"}]


def test_list_shards_in_hash_key_order():
    fake = FakeKinesis()
    fake.add_shard("shardId-000000000002", hash_range=(2 ** 127, 2 ** 128 - 1))
    fake.add_shard("shardId-000000000001", hash_range=(0, 2 ** 127 - 1))
    assert [s.shard_id for s in kinesis.open_shards(fake, "s")] == [
        "shardId-000000000001", "shardId-000000000002"]


def test_raw_timestamps_keep_epoch_numbers_and_parse_the_rest():
    from botocore.utils import parse_timestamp

    for v in (1795674982.535, 0, 1700000000):
        assert kinesis._epoch_seconds(v) == v
        assert parse_timestamp(v).timestamp() == pytest.approx(v)  # the same instant
    assert kinesis._epoch_seconds("2026-01-01T00:00:00Z") == datetime(2026, 1, 1,
                                                                    tzinfo=timezone.utc)
