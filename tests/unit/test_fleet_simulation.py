"""The fleet simulation (shardline.fleet.simulate) at the size this box can check for real.

64 shards over 4 hosts: every shard owned within a bound after a cold start and after losing
a host, the assignment what ``balance`` promises, never two consumers of one shard. Then the
real three-host test's story (tests/integration/test_agent_hosts.py) with its host ids and
its six shards: the simulation must reach the same layouts that test waits for, and the
same assignment ``balance`` gives for those inputs.
"""
from __future__ import annotations

import time

from shardline.fleet.assign import balance
from shardline.fleet.simulate import STREAM, Params, World, simulate, sid

LEASE_TTL_S, HEARTBEAT_TTL_S, POLL_S = 30.0, 20.0, 5.0  # the defaults the bounds follow from


def test_64_shards_over_4_hosts():
    fig = simulate(Params(64, 4), steady_window_s=30.0)
    assert fig.balanced and fig.spread == (16, 16)
    assert fig.double_starts == 0
    # a cold start waits one heartbeat TTL for every host, then one poll to start
    assert fig.cold_start_s is not None and fig.cold_start_s <= HEARTBEAT_TTL_S + 2 * POLL_S
    # the lost host's leases lapse after their TTL; the new owners start within a poll
    assert fig.lost_hosts == ["h0000"]  # the leader: leadership moves too
    assert fig.failover_s is not None and fig.failover_s <= LEASE_TTL_S + 2 * POLL_S
    assert fig.split_s is not None and fig.split_s <= 2 * POLL_S
    steady = fig.steady
    assert steady is not None
    # every consumer checkpoints and reports every 5 s; every agent heartbeats every poll
    assert steady.per_s("write checkpoint (transaction)") == 64 / 5
    assert steady.per_s("write heartbeat") == 4 / POLL_S
    # only the leader reads the assignment while it does not change: the followers see its
    # digest in the leader's heartbeat (a read of every shard by every host each poll was
    # the fleet's largest read)
    assert steady.per_s("read assignments (query)") == 1 / POLL_S
    assert steady.cost_per_month > 0
    # the survivors each wait for a few leases, and read those, not the stream's every lease
    failover = fig.during_failover
    assert failover is not None and failover.per_s("read get_lease") > 0
    assert failover.per_s("read leases (query)") == 0


def layout(world: World) -> dict[str, set[str]]:
    """host -> shards whose lease its consumer holds."""
    out: dict[str, set[str]] = {h.host_id: set() for h in world.live_hosts()}
    for shard, host in world.owned().items():
        out[host].add(shard)
    return out


def counts(world: World) -> list[int]:
    return sorted(len(s) for s in layout(world).values())


def stored(world: World) -> dict[str, str]:
    return world.store.assignments(STREAM)


def test_the_real_three_host_story():
    # the integration test's timings: poll 0.5 s, heartbeat TTL 3 s; its lease TTL is FAST's
    world = World(Params(6, 3, poll_s=0.5, heartbeat_ttl_s=3.0, lease_ttl_s=6.0,
                         lease_renew_s=2.0))
    for h in ("h1", "h2", "h3"):
        world.add_host(h)
    six = [sid(i) for i in range(6)]
    assert world.run_until(lambda: counts(world) == [2, 2, 2] and world.all_owned(), 60)
    spread = layout(world)
    # what test_agent_step asserts for the same inputs, and what balance computes
    assert stored(world) == {sid(i): f"h{i % 3 + 1}" for i in range(6)}
    assert stored(world) == balance(["h1", "h2", "h3"], six, {})

    world.kill_host("h1")
    assert world.run_until(lambda: counts(world) == [3, 3] and world.all_owned(), 6.0 + 15)
    after = layout(world)
    assert all(spread[h] <= after[h] for h in after), "a survivor's shard moved"
    assert stored(world) == balance(["h2", "h3"], six, {s: h for h in spread for s in spread[h]})

    children = world.split_one(six[0])
    seven = sorted(set(world.open_shards()))
    assert world.run_until(lambda: counts(world) == [3, 4] and world.all_owned(children), 60)
    assert six[0] not in world.owned()

    world.add_host("h4")
    assert world.run_until(lambda: counts(world) == [2, 2, 3] and world.all_owned(), 60)

    world.revive_host("h1")
    assert world.run_until(lambda: counts(world) == [1, 2, 2, 2] and world.all_owned(), 60)
    assert sorted(stored(world)) == seven
    assert world.double_starts == 0


def test_balance_is_not_shards_times_hosts():
    # a cold start of 20,000 shards over 2,000 hosts: ~0.1 s with the heap; scanning every
    # host for every shard took minutes
    hosts = [f"h{i:04d}" for i in range(2000)]
    shards = [sid(i) for i in range(20000)]
    t = time.perf_counter()
    assignment = balance(hosts, shards, {})
    assert time.perf_counter() - t < 3.0
    per_host: dict[str, int] = {}
    for host in assignment.values():
        per_host[host] = per_host.get(host, 0) + 1
    assert len(assignment) == 20000 and set(per_host.values()) == {10}
