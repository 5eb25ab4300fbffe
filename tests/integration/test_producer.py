"""``shardline create-stream`` / ``shardline produce`` against the real kinesalite, read back
with plain boto3; and ``put_events``' retry logic against a scripted fake client
(``tests.fakes.FakeKinesis``)."""
from __future__ import annotations

import base64
import collections
import datetime as dt
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from shardline import producer
from shardline.sample import events
from shardline.errors import ConfigError, FatalError, ThrottledError
from shardline.exitcodes import ExitCode
from tests.fakes import FakeKinesis

SHARDLINE = str(Path(sys.executable).parent / "shardline")
START = "2026-11-26T06:30:00+00:00"


def run(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([SHARDLINE, *args], env=env, text=True, capture_output=True,
                          timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"shardline {' '.join(args)} exited {proc.returncode}:\n"
                             f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc


def read_stream(kinesis: Any, stream: str) -> dict[str, list[dict]]:
    """Every record of every shard, TRIM_HORIZON to the end, with plain boto3."""
    out: dict[str, list[dict]] = {}
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        sid = shard["ShardId"]
        it = kinesis.get_shard_iterator(StreamName=stream, ShardId=sid,
                                        ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        records: list[dict] = []
        while it:
            page = kinesis.get_records(ShardIterator=it, Limit=10000)
            records += page["Records"]
            if not page["Records"]:
                break
            it = page.get("NextShardIterator")
        out[sid] = records
    return out


def produce(env: dict, stream: str, tmp_path: Path, *args: str) -> tuple[dict, list[str]]:
    summary, ids = tmp_path / "summary.json", tmp_path / "ids.txt"
    proc = run(env, "produce", "--stream", stream, "--summary-json", str(summary),
               "--ids-file", str(ids), "--quiet", *args)
    assert proc.stdout.startswith("produced ")
    return json.loads(summary.read_text()), ids.read_text().split()


# ---------------------------------------------------------------------------
# Against kinesalite
# ---------------------------------------------------------------------------

@pytest.mark.integration
def test_create_stream_prints_shards_and_is_idempotent(stack_env, stream_name, kinesis):
    first = run(stack_env, "create-stream", "--stream", stream_name, "--shards", "4")
    lines = first.stdout.split("\n")
    assert "created" in lines[0] and "ACTIVE" in lines[0]
    shard_ids = [line for line in lines[1:] if line]
    assert shard_ids == sorted(s["ShardId"] for s in
                               kinesis.list_shards(StreamName=stream_name)["Shards"])
    assert len(shard_ids) == 4
    again = run(stack_env, "create-stream", "--stream", stream_name, "--shards", "4")
    assert "already exists" in again.stdout
    other = run(stack_env, "create-stream", "--stream", stream_name, "--shards", "3",
                check=False)
    assert other.returncode == ExitCode.CONFIG
    assert "already exists with 4" in other.stderr


@pytest.mark.integration
def test_produce_10000_over_4_shards(stack_env, stream_name, kinesis, tmp_path):
    run(stack_env, "create-stream", "--stream", stream_name, "--shards", "4")
    summary, ids = produce(stack_env, stream_name, tmp_path, "--count", "10000",
                           "--bad-fraction", "0.03", "--seed", "11", "--start-time", START)
    assert summary["generated"] == summary["user_records_put"] == 10_000
    assert summary["bad"] == 300 and summary["good"] == 9_700
    assert sum(summary["bad_kinds"].values()) == 300
    assert set(summary["bad_kinds"]) == set(events.BAD_KINDS)

    shards = read_stream(kinesis, stream_name)
    assert len(shards) == 4
    assert sum(map(len, shards.values())) == 10_000
    assert {sid: len(recs) for sid, recs in shards.items()} == summary["shards"]
    assert all(len(recs) > 1500 for recs in shards.values())  # spread over all 4

    good: dict[str, dict] = {}
    bad = 0
    session_order: dict[str, list[str]] = collections.defaultdict(list)
    for recs in shards.values():
        for rec in recs:
            try:
                event = events.check(rec["Data"])
            except ValueError:
                bad += 1
                continue
            assert rec["PartitionKey"] == event["session_id"]
            good[event["event_id"]] = event
            session_order[event["session_id"]].append(event["event_id"])
    assert bad == summary["bad"] and len(good) == summary["good"]
    assert set(ids) == set(good) and len(ids) == len(good)
    # One session lives on one shard, in the order it was produced.
    position = {event_id: i for i, event_id in enumerate(ids)}
    for session, seen in session_order.items():
        assert seen == sorted(seen, key=position.__getitem__), session

    # Same seed and start time: the same events, byte for byte.
    again = events.generate(10_000, 0.03, 11, start=dt.datetime.fromisoformat(START),
                            spacing_s=0.0001)
    expected = sorted(data for _, _, data in again)
    assert sorted(r["Data"] for recs in shards.values() for r in recs) == expected


@pytest.mark.integration
def test_kpl_aggregated_produce_deaggregates_to_the_same_user_records(
        stack_env, stream_name, kinesis, tmp_path):
    from aws_kinesis_agg.deaggregator import iter_deaggregate_records

    run(stack_env, "create-stream", "--stream", stream_name, "--shards", "4")
    summary, ids = produce(stack_env, stream_name, tmp_path, "--count", "3000",
                           "--bad-fraction", "0.05", "--seed", "5", "--start-time", START,
                           "--kpl-aggregate", "25", "--duplicate-fraction", "0.02")
    assert summary["kpl_aggregate"] == 25
    assert summary["duplicates"] > 20
    assert summary["user_records_put"] == 3000 + summary["duplicates"]

    shards = read_stream(kinesis, stream_name)
    raw = [r for recs in shards.values() for r in recs]
    assert len(raw) == summary["kinesis_records_put"]
    assert len(raw) < 3000 / 10  # really aggregated
    users = []
    starts = {s["ShardId"]: (int(s["HashKeyRange"]["StartingHashKey"]),
                             int(s["HashKeyRange"]["EndingHashKey"]))
              for s in kinesis.list_shards(StreamName=stream_name)["Shards"]}
    for sid, recs in shards.items():
        lo, hi = starts[sid]
        for rec in recs:
            subs = list(iter_deaggregate_records(rec, data_format="Boto3"))
            assert [u["kinesis"]["subSequenceNumber"] for u in subs] == list(range(len(subs)))
            for u in subs:
                # grouped like the KPL: every user record belongs to the shard it is on
                h = int.from_bytes(hashlib.md5(u["kinesis"]["partitionKey"].encode()).digest(),
                                   "big")
                assert lo <= h <= hi
                users.append(base64.b64decode(u["kinesis"]["data"]))  # the library re-encodes
    assert len(users) == summary["user_records_put"]

    generated = [data for _, _, data in events.generate(
        3000, 0.05, 5, start=dt.datetime.fromisoformat(START), spacing_s=0.0001)]
    extra = collections.Counter(users) - collections.Counter(generated)
    assert not collections.Counter(generated) - collections.Counter(users)  # none lost
    assert sum(extra.values()) == summary["duplicates"]
    for data in extra:  # duplicates are good events, byte for byte
        assert events.check(data)["event_id"] in set(ids)


@pytest.mark.integration
def test_produce_paces_to_the_rate(stack_env, stream_name, tmp_path):
    run(stack_env, "create-stream", "--stream", stream_name, "--shards", "2")
    t0 = time.monotonic()
    summary, _ = produce(stack_env, stream_name, tmp_path, "--count", "3000", "--rate", "2000")
    assert summary["user_records_put"] == 3000
    assert 1.2 <= summary["elapsed_s"] <= 10.0  # lower bound: paced; upper: a loaded box
    assert time.monotonic() - t0 >= 1.2


@pytest.mark.integration
def test_produce_to_a_missing_stream_is_a_config_error(stack_env, stream_name):
    proc = run(stack_env, "produce", "--stream", stream_name + "-nope", "--count", "10",
               check=False)
    assert proc.returncode == ExitCode.CONFIG
    assert "does not exist" in proc.stderr and "create-stream" in proc.stderr


# ---------------------------------------------------------------------------
# put_events against a scripted fake (no stack needed)
# ---------------------------------------------------------------------------

def _client_error(code: str, status: int = 400) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "PutRecords")


def _records(n: int, keys: int = 50) -> list[tuple[str, bytes]]:
    return [(f"k{i % keys}", f"record-{i}".encode()) for i in range(n)]


def test_put_events_retries_only_the_failed_entries():
    sleeps: list[float] = []
    # every 3rd entry of the first call is throttled once
    fake = FakeKinesis(shards=4, entry_errors=lambda call, i, e:
                       "ProvisionedThroughputExceededException"
                       if call == 1 and i % 3 == 0 else None)
    stats = producer.put_events(fake, "s", _records(300), threaded=False, sleep=sleeps.append)
    assert len(fake.put_batches()) == 2
    first, retry = fake.put_batches()
    assert [e["Data"] for e in retry] == [e["Data"] for e in first[::3]]
    assert sorted(fake.stored()) == sorted(_records(300))
    assert stats.records == stats.user_records == 300
    assert stats.retried_entries == 100 and stats.calls == 2
    assert len(sleeps) == 1 and 0 < sleeps[0] <= 5


def test_put_events_retries_a_failed_call_then_gives_up():
    fake = FakeKinesis(shards=4, put_faults=[_client_error("InternalFailure", 500)] * 2)
    stats = producer.put_events(fake, "s", _records(10), threaded=False, sleep=lambda s: None)
    assert stats.records == 10 and stats.retried_calls == 2 and len(fake.put_batches()) == 3

    always = FakeKinesis(shards=4, entry_errors=lambda call, i, e:
                         "ProvisionedThroughputExceededException")
    with pytest.raises(ThrottledError, match="still failing"):
        producer.put_events(always, "s", _records(5), threaded=False, max_attempts=4,
                            sleep=lambda s: None)
    assert len(always.put_batches()) == 4


def test_put_events_errors_that_are_not_retried():
    missing = FakeKinesis(shards=4, put_faults=[_client_error("ResourceNotFoundException")])
    with pytest.raises(ConfigError, match="create-stream"):
        producer.put_events(missing, "s", _records(5), threaded=False)
    invalid = FakeKinesis(shards=4, put_faults=[_client_error("ValidationException")])
    with pytest.raises(FatalError):
        producer.put_events(invalid, "s", _records(5), threaded=False)
    with pytest.raises(FatalError, match="over the Kinesis limit"):
        producer.put_events(FakeKinesis(shards=4), "s", [("k", b"x" * (1024 * 1024))],
                            threaded=False)


def test_put_events_splits_calls_by_count_and_bytes():
    fake = FakeKinesis(shards=4)
    big = [(f"k{i}", b"x" * 900_000) for i in range(12)]
    stats = producer.put_events(fake, "s", _records(1234) + big, threaded=False)
    assert stats.records == 1246 and stats.calls == len(fake.put_batches())
    assert [len(c) for c in fake.put_batches()[:2]] == [500, 500]
    assert max(sum(len(e["Data"]) for e in c) for c in fake.put_batches()) <= 5 * 1024 * 1024


def test_put_events_lanes_keep_each_keys_order():
    fake = FakeKinesis(shards=4, entry_errors=lambda call, i, e: "InternalFailure"
                       if call % 5 == 0 and i % 7 == 0 else None)
    records = _records(20_000, keys=300)
    stats = producer.put_events(fake, "s", records, senders=3, sleep=lambda s: None)
    assert stats.records == 20_000
    # Retried entries land after their call's successes; without failures per-key order
    # holds exactly, so check it on a clean run too.
    clean = FakeKinesis(shards=4)
    producer.put_events(clean, "s", records, senders=3)
    by_key: dict[str, list[bytes]] = collections.defaultdict(list)
    for key, data in clean.stored():
        by_key[key].append(data)
    expected: dict[str, list[bytes]] = collections.defaultdict(list)
    for key, data in records:
        expected[key].append(data)
    assert by_key == expected


def test_aggregate_groups_by_shard_and_counts_user_records():
    from aws_kinesis_agg.deaggregator import iter_deaggregate_records

    shards = FakeKinesis(shards=4).list_shards("s")["Shards"]
    records = _records(1000, keys=97)
    out = list(producer.aggregate(records, 40, shards))
    assert sum(n for _, _, n in out) == 1000
    assert all(n <= 40 for _, _, n in out)
    back = []
    for key, data, n in out:
        subs = list(iter_deaggregate_records(
            {"Data": data, "PartitionKey": key, "SequenceNumber": "1",
             "ApproximateArrivalTimestamp": 0}, data_format="Boto3"))
        assert len(subs) == n and subs[0]["kinesis"]["partitionKey"] == key
        back += [(u["kinesis"]["partitionKey"], base64.b64decode(u["kinesis"]["data"]))
                 for u in subs]
    assert sorted(back) == sorted(records)
