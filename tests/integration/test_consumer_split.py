"""SplitShard mid-stream: the parent is drained to SHARD_END before its children are read."""
from __future__ import annotations

import signal

import pytest

from shardline.positions import position as pos
from shardline.devstack.fleet import wait_for

pytestmark = pytest.mark.integration


def test_split_parent_drained_to_shard_end_then_children(rig, tmp_path):
    (parent,) = rig.create_stream(1)
    before = rig.put(3000)[parent]
    with rig.stage(threads=3):
        # the parent reads slowly (100 records a call) so the split lands mid-stream
        p_proc = rig.consumer(parent, tmp_path / "parent.log",
                              SHARDLINE_CONSUMER_GET_RECORDS_LIMIT="100")
        wait_for(lambda: rig.distinct_counts().get(parent, 0) > 300,
                 60, "parent reading", every=0.2)
        rig.kinesis.split_shard(StreamName=rig.stream, ShardToSplit=parent,
                                NewStartingHashKey=str(2 ** 127))
        wait_for(lambda: rig.kinesis.describe_stream_summary(StreamName=rig.stream)
                 ["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE",
                 10, "the stream ACTIVE after the split", every=0.1)
        shards = {s["ShardId"]: s for s in
                  rig.kinesis.list_shards(StreamName=rig.stream)["Shards"]}
        children = sorted(s for s, d in shards.items() if d.get("ParentShardId") == parent)
        assert len(children) == 2
        after = rig.put(2000, start=3000)
        assert parent not in after and set(after) == set(children)
        c_procs = [rig.consumer(c, tmp_path / f"{c}.log") for c in children]
        assert rig.distinct_counts().get(parent, 0) < len(before), "parent finished too early"

        assert p_proc.wait(90) == 0  # closed parent: SHARD_END, then exit 0
        assert rig.checkpoint(parent) == ("SHARD_END", 0, True)
        want = {parent: len(before), **{c: len(after[c]) for c in children}}
        wait_for(lambda: rig.distinct_counts() == want, 60, "every record", every=0.3)
        for c in children:
            wait_for(lambda c=c: (rig.checkpoint(c) or ("",))[0] == after[c][-1],
                     30, f"the checkpoint of {c} at its last record", every=0.3)
        for p in c_procs:
            p.send_signal(signal.SIGTERM)
        assert [p.wait(30) for p in c_procs] == [0, 0]

    got = rig.delivered()
    assert sorted(q for q, _ in got) == sorted(before + after[children[0]] + after[children[1]])
    # children read nothing before the parent's SHARD_END checkpoint
    (end_at,), = rig.csql("SELECT created_at FROM checkpoint_history WHERE shard_id = %s "
                         "AND sequence_number = 'SHARD_END'", (parent,))
    (parent_last,), = rig.sql("SELECT max(received_at) FROM stub_batches WHERE shard_id = %s",
                              (parent,))
    (child_first,), = rig.sql("SELECT min(received_at) FROM stub_batches WHERE shard_id <> %s",
                              (parent,))
    assert child_first > parent_last
    for c in children:  # they started while the parent was still being read, and waited
        assert "waiting for parent shards" in (tmp_path / f"{c}.log").read_text()
    status = dict(rig.csql("SELECT shard_id, state FROM shard_status"))
    assert status[parent] == "shard_end"
    assert rig.csql("SELECT count(*) FROM checkpoint_history WHERE shard_id = %s AND "
                   "source = 'shard_end'", (parent,)) == [(1,)]
    assert end_at is not None and pos(before[-1]) > pos(before[0])
