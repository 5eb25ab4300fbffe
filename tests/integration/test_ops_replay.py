"""`shardline replay` against the real PostgreSQL (and kinesalite for --at-timestamp)."""
from __future__ import annotations

import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from shardline import migrate
from shardline.records.control import Checkpoint
from tests.pipeline import wait_active

pytestmark = pytest.mark.integration

SHARD = "shardId-000000000000"
SEQ_1 = "49656215286911442018427376489937437429617402736049487874"
SEQ_2 = "49656215286911442018427376489937437429617402736049489999"


def _replay(env, *args):
    return subprocess.run([sys.executable, "-m", "shardline.cli", "replay", *args], env=env,
                          stdin=subprocess.DEVNULL, text=True, capture_output=True, timeout=60)


@pytest.fixture
def setup(stack_env, pg_schema, pg_conn, control_store):
    migrate.migrate(pg_conn, "postgres")
    pg_conn.commit()
    env = {**stack_env, "SHARDLINE_WAREHOUSE_SCHEMA": pg_schema}
    yield env, control_store


def _row(control, stream):
    cp = control.get_checkpoint(stream, SHARD)
    return None if cp is None else (cp.sequence_number, cp.sub_sequence_number,
                                    cp.closes_sequence)


def test_replay_moves_checkpoint_with_history_and_respects_leases(setup, stream_name):
    env, control = setup
    owner = "host-a:1:u"
    token = control.acquire_lease(stream_name, SHARD, owner, ttl_s=30)
    control.checkpoint(stream_name, SHARD, owner, token, 30, Checkpoint(SEQ_1, 0, True))
    control.checkpoint(stream_name, SHARD, owner, token, 30, Checkpoint(SEQ_2, 4, True))
    first_id = control.history(stream_name, SHARD)[-1].id

    # a live consumer holds the lease: refused, exit 75, nothing written
    move = ["--stream", stream_name, "--shard", SHARD, "--at-sequence", SEQ_1,
            "--reason", "reprocess after transform fix", "--yes"]
    proc = _replay(env, *move)
    assert proc.returncode == 75, proc.stdout + proc.stderr
    assert "held by live consumer host-a:1:u" in proc.stderr
    assert _row(control, stream_name) == (SEQ_2, 4, True)
    assert len(control.history(stream_name, SHARD)) == 2

    control.release_lease(stream_name, SHARD, owner, token)

    # --at-sequence N: AT N, skipping nothing (no terminal: --yes is not needed)
    proc = _replay(env, *move[:-1])
    assert proc.returncode == 0, proc.stderr
    assert _row(control, stream_name) == (SEQ_1, -1, False)
    latest = control.history(stream_name, SHARD, limit=1)[0]
    assert (latest.source, latest.reason, latest.lease_token) == \
        ("replay", "reprocess after transform fix", None)
    assert (latest.sequence_number, latest.sub_sequence_number, latest.closes_sequence) == \
        (SEQ_1, -1, False)

    # --to-checkpoint ID: the exact position of an older entry
    proc = _replay(env, "--stream", stream_name, "--shard", SHARD, "--to-checkpoint",
                   str(first_id), "--reason", "back to the first checkpoint", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert _row(control, stream_name) == (SEQ_1, 0, True)

    # an entry of another shard is refused
    proc = _replay(env, "--stream", stream_name, "--shard", "shardId-000000000009",
                   "--to-checkpoint", str(first_id), "--reason", "x", "--yes")
    assert proc.returncode == 64 and "belongs to" in proc.stderr

    # --trim-horizon: no checkpoint at all
    proc = _replay(env, "--stream", stream_name, "--shard", SHARD, "--trim-horizon",
                   "--reason", "full re-read", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert _row(control, stream_name) is None

    # --list: every move, newest first, with reasons; sequences shortened
    proc = _replay(env, "--list", "--stream", stream_name, "--shard", SHARD)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("ID")
    assert len(lines) == 1 + 5
    assert "TRIM_HORIZON" in lines[1] and "full re-read" in lines[1]
    assert "back to the first checkpoint" in lines[2]
    assert "reprocess after transform fix" in lines[3] and ".." + SEQ_1[-10:] in lines[3]
    assert "consumer" in lines[4] and "consumer" in lines[5]
    assert SEQ_1 not in proc.stdout
    assert SEQ_1 in _replay(env, "--list", "--stream", stream_name, "--full").stdout


def test_replay_at_timestamp(setup, stream_name, kinesis):
    env, control = setup
    kinesis.create_stream(StreamName=stream_name, ShardCount=1)
    wait_active(kinesis, stream_name)
    kinesis.put_record(StreamName=stream_name, Data=b"before", PartitionKey="k")
    time.sleep(1.1)
    middle = datetime.now(timezone.utc)
    time.sleep(1.1)
    second = kinesis.put_record(StreamName=stream_name, Data=b"after", PartitionKey="k")
    kinesis.put_record(StreamName=stream_name, Data=b"later", PartitionKey="k")

    proc = _replay(env, "--stream", stream_name, "--shard", SHARD, "--at-timestamp",
                   middle.isoformat(), "--reason", "since the incident", "--yes")
    assert proc.returncode == 0, proc.stderr
    assert _row(control, stream_name) == (second["SequenceNumber"], -1, False)

    # "nothing at/after T" is covered by the unit tests: kinesalite never answers
    # GetShardIterator AT_TIMESTAMP when no record is at/after T (real Kinesis does).

    # a timestamp in the future is refused by Kinesis itself: usage error, nothing moved
    proc = _replay(env, "--stream", stream_name, "--shard", SHARD, "--at-timestamp",
                   "2100-01-01T00:00:00Z", "--reason", "future", "--yes")
    assert proc.returncode == 64, proc.stderr
    assert "InvalidArgumentException" in proc.stderr
    assert _row(control, stream_name) == (second["SequenceNumber"], -1, False)
