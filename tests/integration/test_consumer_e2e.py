"""50,000 records over 4 shards through real consumer processes; a SIGKILL and restart."""
from __future__ import annotations

import signal

import pytest

from shardline.positions import position as pos
from tests.stub_stage import Rig
from shardline.devstack.fleet import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def rig(stack_env, pg_schema, pg_conn, stream_name, kinesis):
    r = Rig(stack_env, pg_schema, pg_conn, stream_name, kinesis,
            SHARDLINE_CONSUMER_GET_RECORDS_LIMIT="2000")
    yield r
    r.cleanup()


def test_50k_records_4_shards_dispatched_checkpointed_and_kill_restart_resumes(rig, tmp_path):
    shards = rig.create_stream(4)
    put = rig.put(50_000, size=120)
    assert sum(map(len, put.values())) == 50_000 and set(put) == set(shards)
    victim, others = shards[0], shards[1:]
    with rig.stage(threads=4):
        procs = {s: rig.consumer(s, tmp_path / f"{s}.log") for s in others}
        # the victim reads slowly so that the kill lands mid-stream
        slow = {"SHARDLINE_CONSUMER_GET_RECORDS_LIMIT": "150",
                "SHARDLINE_CONSUMER_BATCH_MAX_RECORDS": "50",
                "SHARDLINE_CONSUMER_LEASE_TTL_S": "3"}  # short: the restart waits it out
        first = rig.consumer(victim, tmp_path / f"{victim}.log", **slow)
        wait_for(lambda: rig.checkpoint(victim) and rig.distinct_counts().get(victim, 0) > 1500,
                 60, "victim mid-stream", every=0.2)
        first.send_signal(signal.SIGKILL)
        assert first.wait(10) == -signal.SIGKILL
        cp = rig.checkpoint(victim)
        assert cp is not None and cp[0] != put[victim][-1], "kill did not land mid-stream"
        rig.wait_lease_expired(victim)
        before_restart = rig.sql("SELECT clock_timestamp()")[0][0]
        procs[victim] = rig.consumer(victim, tmp_path / f"{victim}.restart.log")

        want = {s: len(put[s]) for s in shards}
        wait_for(lambda: rig.distinct_counts() == want, 120, "every record", every=0.3)
        for s in shards:  # every checkpoint reaches the end
            wait_for(lambda s=s: (rig.checkpoint(s) or ("",))[0] == put[s][-1],
                     30, f"final checkpoint of {s}", every=0.3)
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        assert [p.wait(30) for p in procs.values()] == [0, 0, 0, 0]

    for s in shards:  # every sequence number arrived
        assert {q for q, _ in rig.delivered(s)} == set(put[s])
    for s in others:  # no kill: each record exactly once
        got = rig.delivered(s)
        assert len(got) == len(set(got)) == len(put[s])
    # after the restart the victim resubmitted only from its checkpoint on
    resubmitted = rig.sql("SELECT first_seq, first_sub FROM stub_batches WHERE shard_id = %s "
                          "AND received_at > %s", (victim, before_restart))
    assert resubmitted
    first_after = min(pos(q, sub) for q, sub in resubmitted)
    assert first_after > pos(cp[0], cp[1])
    next_seq = put[victim][put[victim].index(cp[0]) + 1]
    assert first_after == pos(next_seq, 0)
    got = rig.delivered(victim)
    assert {q for q, _ in got} == set(put[victim])  # none skipped
    dup = [q for q in {q for q, _ in got} if sum(1 for x, _ in got if x == q) > 1]
    assert all(pos(q) > pos(cp[0], cp[1]) for q in dup)  # repeats only past the checkpoint
