"""Leases, fenced checkpoints and history against the real PostgreSQL."""
from __future__ import annotations

import pytest

from shardline import migrate
from shardline.control import SHARD_END, Checkpoint, Control
from shardline.errors import LeaseHeld, LeaseLost

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self, t: float = 1_800_000_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def control(pg_conn, warehouse_connect):
    migrate.migrate(pg_conn, "postgres")
    pg_conn.autocommit = True
    clock = Clock()
    made = []

    def make() -> Control:
        c = Control(warehouse_connect, "postgres", clock)
        made.append(c)
        return c

    yield make, clock
    for c in made:
        c.close()


def test_one_owner_at_a_time_and_takeover_after_expiry(control):
    make, clock = control
    a, b = make(), make()
    token_a = a.acquire_lease("s", "shard-0", "host:1:a", ttl_s=30)
    with pytest.raises(LeaseHeld, match="host:1:a"):
        b.acquire_lease("s", "shard-0", "host:2:b", ttl_s=30)
    clock.t += 31
    token_b = b.acquire_lease("s", "shard-0", "host:2:b", ttl_s=30)
    assert token_b == token_a + 1
    # the old owner is fenced off: it may neither renew nor checkpoint
    with pytest.raises(LeaseLost):
        a.renew_lease("s", "shard-0", "host:1:a", token_a, 30)
    with pytest.raises(LeaseLost):
        a.checkpoint("s", "shard-0", "host:1:a", token_a, 30, Checkpoint("100", 0, True))
    assert a.get_checkpoint("s", "shard-0") is None
    b.checkpoint("s", "shard-0", "host:2:b", token_b, 30, Checkpoint("200", 0, True))
    assert b.get_checkpoint("s", "shard-0").sequence_number == "200"


def test_an_expired_lease_cannot_checkpoint_even_if_nobody_took_it(control):
    make, clock = control
    a = make()
    token = a.acquire_lease("s", "shard-1", "me", ttl_s=10)
    clock.t += 11
    with pytest.raises(LeaseLost):
        a.checkpoint("s", "shard-1", "me", token, 10, Checkpoint("1", 0, True))


def test_checkpoints_keep_history_and_release_frees_the_shard(control):
    make, clock = control
    a = make()
    token = a.acquire_lease("s", "shard-2", "me", ttl_s=30)
    for seq in ("10", "20", SHARD_END):
        clock.t += 1
        a.checkpoint("s", "shard-2", "me", token, 30, Checkpoint(seq, 0, True))
    assert a.get_checkpoint("s", "shard-2").shard_end
    hist = a.history("s", "shard-2")
    assert [h.sequence_number for h in hist] == [SHARD_END, "20", "10"]
    assert all(h.lease_token == token and h.source == "consumer" for h in hist)
    a.release_lease("s", "shard-2", "me", token)
    assert make().acquire_lease("s", "shard-2", "other", 30) == token + 1


def test_replay_refuses_a_live_lease_and_records_its_reason(control):
    make, clock = control
    a = make()
    token = a.acquire_lease("s", "shard-3", "me", ttl_s=30)
    a.checkpoint("s", "shard-3", "me", token, 30, Checkpoint("500", 0, True))
    with pytest.raises(LeaseHeld, match="me"):
        a.move_checkpoint("s", "shard-3", Checkpoint("100", 0, True), "fix bad transform")
    a.release_lease("s", "shard-3", "me", token)
    a.move_checkpoint("s", "shard-3", Checkpoint("100", 0, True), "fix bad transform")
    assert a.get_checkpoint("s", "shard-3").sequence_number == "100"
    latest = a.history("s", "shard-3")[0]
    assert (latest.source, latest.reason) == ("replay", "fix bad transform")
    assert a.history_entry(latest.id).sequence_number == "100"
    a.move_checkpoint("s", "shard-3", None, "from the start")
    assert a.get_checkpoint("s", "shard-3") is None


def test_status_rows_upsert(control):
    make, _ = control
    a = make()
    a.report_status("s", "shard-4", owner="me", records_per_s=12.5, state="reading")
    a.report_status("s", "shard-4", inflight_batches=3)
    with a.tx() as cur:
        cur.execute("SELECT owner, records_per_s, inflight_batches, state FROM shard_status")
        assert cur.fetchall() == [("me", 12.5, 3, "reading")]
    with pytest.raises(TypeError):
        a.report_status("s", "shard-4", bogus=1)
