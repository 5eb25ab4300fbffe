"""KPL-aggregated records through real consumers: a stop mid-aggregate and a restart
neither skip nor repeat a sub-record."""
from __future__ import annotations

import signal
from collections import Counter

import pytest
from aws_kinesis_agg.aggregator import RecordAggregator

from tests.stub_stage import Rig
from shardline.devstack.fleet import wait_for

pytestmark = pytest.mark.integration

PER_AGGREGATE = 7


@pytest.fixture
def rig_settings() -> dict[str, str]:
    return {"SHARDLINE_CONSUMER_BATCH_MAX_RECORDS": "5",
            "SHARDLINE_CONSUMER_WINDOW_MAX_BATCHES": "2",
            "SHARDLINE_CONSUMER_GET_RECORDS_LIMIT": "20"}


def put_aggregates(rig: Rig, count: int) -> dict[tuple[str, int], bytes]:
    """``count`` KPL records of PER_AGGREGATE user records; {(sequence, sub): data}."""
    want: dict[tuple[str, int], bytes] = {}
    for a in range(count):
        agg = RecordAggregator()
        datas = [f"agg{a}-sub{i}".encode() + bytes([a % 256, i]) for i in range(PER_AGGREGATE)]
        for i, d in enumerate(datas):
            agg.add_user_record(f"pk-{a}-{i}", d)
        pk, ehk, data = agg.clear_and_get().get_contents()
        extra = {"ExplicitHashKey": ehk} if ehk else {}
        seq = rig.kinesis.put_record(StreamName=rig.stream, Data=data, PartitionKey=pk,
                                     **extra)["SequenceNumber"]
        want.update({(seq, i): d for i, d in enumerate(datas)})
    return want


def test_kpl_stop_mid_aggregate_and_restart_exactly_once(rig, tmp_path):
    (shard,) = rig.create_stream(1)
    want = put_aggregates(rig, 120)
    with rig.stage(delay_s=0.05, keep_data=True):
        first = rig.consumer(shard, tmp_path / "first.log")
        wait_for(lambda: rig.distinct_counts().get(shard, 0) > 100,
                 60, "first consumer mid-stream", every=0.1)
        first.send_signal(signal.SIGTERM)
        assert first.wait(30) == 0
        cp = rig.checkpoint(shard)
        assert cp is not None and len(rig.delivered(shard)) < len(want)
        second = rig.consumer(shard, tmp_path / "second.log")
        wait_for(lambda: len(rig.delivered(shard)) >= len(want), 60, "all sub-records", every=0.2)
        wait_for(lambda: rig.sql("SELECT max(last_seq) FROM stub_batches")[0][0] ==
                 max(want)[0] and rig.checkpoint(shard)[0] == max(want)[0],
                 30, "the checkpoint at the last record", every=0.2)
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    got = rig.sql("SELECT seq, sub, data FROM stub_records")
    counts = Counter((s, int(sub)) for s, sub, _ in got)
    assert set(counts) == set(want)  # nothing skipped
    assert max(counts.values()) == 1  # nothing repeated, across the stop and restart
    assert all(bytes(d) == want[(s, int(sub))] for s, sub, d in got)
    # the checkpoints did land inside aggregates (AT_SEQUENCE_NUMBER + skip on restart)
    mid = rig.csql("SELECT count(*) FROM checkpoint_history WHERE shard_id = %s "
                  "AND NOT closes_sequence", (shard,))[0][0]
    assert mid > 0
