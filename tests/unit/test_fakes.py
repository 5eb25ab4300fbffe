"""The shared doubles (tests/fakes.py) behave like the services where tests lean on them."""
from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from tests.fakes import FakeKinesis, FakeS3

from shardline.kinesis import ShardMap, list_shards


def test_put_records_routes_keys_like_kinesis_and_the_producer_shard_map():
    k = FakeKinesis()
    ids = k.split_evenly(4)
    keys = [f"user-{i}" for i in range(400)]
    resp = k.put_records(StreamName="s", Records=[{"PartitionKey": key, "Data": b"x"}
                                                  for key in keys])
    assert resp["FailedRecordCount"] == 0
    shard_map = ShardMap(list_shards(k, "s"))
    assert [r["ShardId"] for r in resp["Records"]] == [ids[shard_map.slot(key)]
                                                        for key in keys]
    assert len({r["ShardId"] for r in resp["Records"]}) == 4  # 400 keys reach every shard
    assert sorted(k.stored()) == sorted((key, b"x") for key in keys)


def test_put_records_limits_faults_and_failed_entries():
    k = FakeKinesis()
    k.split_evenly(2)
    with pytest.raises(ClientError, match="ValidationException"):
        k.put_records(StreamName="s", Records=[{"PartitionKey": "k", "Data": b""}] * 501)
    with pytest.raises(ClientError, match="ValidationException"):
        k.put_records(StreamName="s", Records=[{"PartitionKey": "k", "Data": b"x" * 2 ** 20}])
    k.entry_errors = lambda call, i, entry: "ProvisionedThroughputExceededException" \
        if i % 2 else None
    resp = k.put_records(StreamName="s", Records=[{"PartitionKey": f"k{i}", "Data": b"d"}
                                                  for i in range(4)])
    assert resp["FailedRecordCount"] == 2 and len(k.stored()) == 2
    assert [("ErrorCode" in r) for r in resp["Records"]] == [False, True, False, True]


def test_fake_s3_one_bucket_paged_listing_and_missing_keys():
    s3 = FakeS3(page_size=2)
    for i in range(5):
        s3.put_object(Bucket="b", Key=f"p/{i}", Body=b"%d" % i)
    s3.put_object(Bucket="b", Key="q/x", Body=b"x")
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket="b", Prefix="p/"))
    assert [[o["Key"] for o in p["Contents"]] for p in pages] == [["p/0", "p/1"],
                                                                ["p/2", "p/3"], ["p/4"]]
    assert s3.get_object(Bucket="b", Key="p/3")["Body"].read() == b"3"
    with pytest.raises(ClientError, match="NoSuchKey"):
        s3.get_object(Bucket="b", Key="p/9")
    with pytest.raises(ClientError, match="NoSuchBucket"):
        s3.get_object(Bucket="other", Key="p/3")
    assert [k for _, k, _ in s3.puts] == ["p/0", "p/1", "p/2", "p/3", "p/4", "q/x"]


def test_put_records_stalls_on_the_gate_and_fails_while_down():
    import threading

    from botocore.exceptions import EndpointConnectionError

    k = FakeKinesis(shards=2, put_faults=[RuntimeError("once")])
    assert [s.shard_id for s in list_shards(k, "s")] == list(k.shards)
    with pytest.raises(RuntimeError, match="once"):
        k.put_records(StreamName="s", Records=[{"PartitionKey": "a", "Data": b"0"}])
    k.put_down = True
    with pytest.raises(EndpointConnectionError):
        k.put_records(StreamName="s", Records=[{"PartitionKey": "a", "Data": b"1"}])
    assert list_shards(k, "s")  # only PutRecords is down
    k.put_down = False
    k.put_gate.clear()
    t = threading.Thread(target=k.put_records, kwargs={
        "StreamName": "s", "Records": [{"PartitionKey": "a", "Data": b"2"}]})
    t.start()
    t.join(0.2)
    assert t.is_alive() and k.stored() == []  # stalled until the gate opens
    k.put_gate.set()
    t.join(5)
    assert k.stored() == [("a", b"2")]
    assert [[r["Data"] for r in b] for b in k.put_batches()] == [[b"0"], [b"1"], [b"2"]]
