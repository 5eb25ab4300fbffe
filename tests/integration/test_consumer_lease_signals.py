"""Leases (a second consumer exits 75; a stolen lease stops the first without a
checkpoint) and signals (SIGTERM drains and checkpoints; a second signal exits at once)."""
from __future__ import annotations

import signal
import time

import pytest

from shardline.devstack.fleet import wait_for

from shardline.exitcodes import ExitCode

pytestmark = pytest.mark.integration


def test_second_consumer_exits_75_naming_owner_and_stolen_lease_stops_first(rig, tmp_path):
    (shard,) = rig.create_stream(1)
    seqs = rig.put(500)[shard]
    with rig.stage():
        first = rig.consumer(shard, tmp_path / "first.log")
        wait_for(lambda: (rig.checkpoint(shard) or ("",))[0] == seqs[-1],
                 60, "the checkpoint at the last record", every=0.2)
        owner = rig.lease_owner(shard)
        assert owner and owner.count(":") == 2  # host:pid:uuid
        second = rig.consumer(shard, tmp_path / "second.log")
        assert second.wait(60) == ExitCode.LEASE_HELD
        text = (tmp_path / "second.log").read_text()
        assert owner in text and "held by" in text
        assert first.poll() is None  # the first one keeps running

        # someone takes the lease (as after a long pause): the first must stop, never checkpoint
        rig.csql("UPDATE shard_leases SET owner = 'thief:1:x', token = token + 1, "
                "expires_at = (now() AT TIME ZONE 'UTC') + interval '1 hour' "
                "WHERE shard_id = %s", (shard,))
        (history_before,), = rig.csql("SELECT count(*) FROM checkpoint_history")
        rig.put(300, start=500)
        assert first.wait(30) == ExitCode.LEASE_LOST
        assert "lease lost" in (tmp_path / "first.log").read_text()
        assert rig.csql("SELECT count(*) FROM checkpoint_history") == [(history_before,)]
        assert rig.checkpoint(shard)[0] == seqs[-1]
        assert rig.lease_owner(shard) == "thief:1:x"


def test_sigterm_finishes_in_flight_checkpoints_releases_and_exits_0(rig, tmp_path):
    (shard,) = rig.create_stream(1)
    seqs = rig.put(3000)[shard]
    env = {"SHARDLINE_CONSUMER_BATCH_MAX_RECORDS": "100",
           "SHARDLINE_CONSUMER_CHECKPOINT_INTERVAL_S": "600",  # only the shutdown checkpoints
           "SHARDLINE_CONSUMER_CHECKPOINT_EVERY_RECORDS": "100000",
           "SHARDLINE_CONSUMER_SHUTDOWN_TIMEOUT_S": "15"}
    with rig.stage(delay_s=0.5, threads=2):
        proc = rig.consumer(shard, tmp_path / "c.log", **env)
        wait_for(lambda: rig.sql("SELECT count(*) FROM stub_batches")[0][0] >= 2,
                 60, "two batches staged", every=0.1)
        assert rig.checkpoint(shard) is None
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        took = time.monotonic() - t0
    assert took < 15 + 5
    cp = rig.checkpoint(shard)
    assert cp is not None
    got = sorted({q for q, _ in rig.delivered(shard)}, key=lambda q: (len(q), q))
    # every submitted batch finished, and the checkpoint is the end of what was staged
    assert got == seqs[:len(got)] and got[-1] == cp[0]
    assert len(got) < len(seqs)  # it stopped reading instead of draining the shard
    assert rig.lease_owner(shard) is None
    assert "stopped; checkpoint" in (tmp_path / "c.log").read_text()


def test_second_signal_exits_at_once_without_checkpoint(rig, tmp_path):
    (shard,) = rig.create_stream(1)
    rig.put(2000)
    env = {"SHARDLINE_CONSUMER_BATCH_MAX_RECORDS": "100",
           "SHARDLINE_CONSUMER_CHECKPOINT_INTERVAL_S": "600",
           "SHARDLINE_CONSUMER_CHECKPOINT_EVERY_RECORDS": "100000",
           "SHARDLINE_CONSUMER_SHUTDOWN_TIMEOUT_S": "30"}
    with rig.stage(delay_s=3.0, threads=1):  # jobs outlast the test
        proc = rig.consumer(shard, tmp_path / "c.log", **env)
        wait_for(lambda: (rig.csql("SELECT max(inflight_batches) FROM shard_status")[0][0]
                          or 0) > 0, 60, "batches in flight", every=0.1)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None  # still draining
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == ExitCode.FORCED_STOP
        assert time.monotonic() - t0 < 3
    assert rig.checkpoint(shard) is None
    assert rig.lease_owner(shard) is not None  # not released: the forced path does nothing more
