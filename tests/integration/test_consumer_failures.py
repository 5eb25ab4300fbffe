"""A batch that keeps failing: the checkpoint never passes it and the consumer exits 70."""
from __future__ import annotations


import pytest

from shardline.positions import position as pos
from shardline.devstack.fleet import wait_for

from shardline.exitcodes import ExitCode

pytestmark = pytest.mark.integration


@pytest.fixture
def rig_settings() -> dict[str, str]:
    return {"SHARDLINE_CONSUMER_BATCH_MAX_RECORDS": "100",
            "SHARDLINE_CONSUMER_JOB_MAX_ATTEMPTS": "3",
            "SHARDLINE_CONSUMER_GET_RECORDS_LIMIT": "500"}


def test_failing_batch_holds_checkpoint_and_exits_70(rig, tmp_path):
    (shard,) = rig.create_stream(1)
    seqs = rig.put(3000)[shard]
    poison = seqs[1234]
    log = tmp_path / "consumer.log"
    with rig.stage(fail=lambda b: any(r.sequence_number == poison for r in b.records)):
        proc = rig.consumer(shard, log)
        assert proc.wait(90) == ExitCode.BATCH_FAILED
    text = log.read_text()
    assert "failed after 3 attempts" in text
    attempts = rig.sql("SELECT batch_id, first_seq, count(*) FROM stub_batches WHERE NOT ok "
                       "GROUP BY batch_id, first_seq")
    assert len(attempts) == 1 and attempts[0][2] == 3  # resubmitted up to job_max_attempts
    first_of_poison = attempts[0][1]
    cp = rig.checkpoint(shard)
    assert cp is not None, "the staged prefix before the poison batch is checkpointed"
    assert pos(cp[0], cp[1]) < pos(first_of_poison)
    # everything up to the checkpoint was staged; the poison record never was
    delivered = {q for q, _ in rig.delivered(shard)}
    assert poison not in delivered
    assert set(s for s in seqs if pos(s) <= pos(cp[0])) <= delivered
    history = rig.csql("SELECT sequence_number FROM checkpoint_history WHERE shard_id = %s",
                      (shard,))
    assert all(pos(h) < pos(first_of_poison) for (h,) in history)
    assert rig.lease_owner(shard) is None  # released: supervisord's restart starts at once

    # restarted with a healthy stage, it resumes from the checkpoint and finishes
    with rig.stage():
        proc = rig.consumer(shard, log)
        wait_for(lambda: rig.distinct_counts().get(shard) == len(seqs),
                 60, "all records after restart", every=0.3)
        wait_for(lambda: (rig.checkpoint(shard) or ("",))[0] == seqs[-1],
                 30, "the checkpoint at the last record", every=0.3)
        proc.terminate()
        assert proc.wait(30) == 0


def test_missing_stream_is_a_config_error_and_a_missing_shard_a_crash(rig, tmp_path):
    """Both at start, before any lease: the stream through shardline.kinesis (exit 78,
    naming the stream and the AWS code), the shard through the consumer (exit 1)."""
    log = tmp_path / "no-stream.log"
    proc = rig.consumer("shardId-000000000000", log)  # the rig's stream was never created
    assert proc.wait(60) == ExitCode.CONFIG
    text = log.read_text()
    assert "ResourceNotFoundException" in text and repr(rig.stream) in text
    assert "Traceback" not in text
    rig.create_stream(1)
    log = tmp_path / "no-shard.log"
    proc = rig.consumer("shardId-000000000009", log)
    assert proc.wait(60) == ExitCode.CRASH
    assert "ShardNotFound: shard shardId-000000000009 is not in stream" in log.read_text()
    assert rig.lease_owner("shardId-000000000009") is None
