"""The agent's step() with the memory control store, a fake supervisord and a fake clock.

A small world: several hosts, each an Agent over its own FakeSupervisor and include file,
one MemoryStore for heartbeats, assignments and the consumers' leases. The "consumers"
take the shard lease when supervisord starts them (a LeaseHeld there fails the test: two
consumers of one shard) and release it when their graceful stop ends. Agents are stepped
when the wait their last step returned is over, so the waits are tested too. A host's
supervisord can die alone: its consumers then live on as orphans in the host's process
table (``Orphans``), which only the agent can signal.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from shardline.records.control import SHARD_END, Checkpoint
from shardline.controlstore import MemoryStore
from shardline.errors import ServiceUnavailable
from shardline.exitcodes import ExitCode
from shardline.fleet.agent import (HANDOFF_POLL_S, SUPERVISORD_LOST_POLLS, Agent,
                                   HostProcesses, IncludeFile)
from shardline.kinesis import ShardInfo
from shardline.ops.supervisor_render import render_consumers
from shardline.settings import Settings
from tests.fake_supervisor import FakeSupervisor
from tests.fakes import Clock

STREAM = "clicks"
POLL_S, HEARTBEAT_TTL_S, LEASE_TTL_S = 1.0, 3.0, 6.0
STOP_WAIT_S = 4.0  # the consumer programs' stopwaitsecs
DT = 0.05


def sid(i: int) -> str:
    return f"shardId-{i:012d}"


class Orphans:
    """The consumers of a host whose supervisord died, as the agent's ``HostProcesses`` sees
    them: a SIGTERM starts a graceful stop (the host's ``drain_s``, then the lease is
    released), a SIGKILL ends one at once (its lease left to expire); a ``stubborn`` one
    ignores SIGTERM."""

    def __init__(self, host: "Host"):
        self.host = host
        self.pids: dict[int, str] = {}  # pid -> program name
        self.term_at: dict[int, float] = {}
        self.stubborn: set[str] = set()
        self.signals: list[tuple[float, int, int]] = []  # (when, pid, signal)

    def is_program(self, pid: int, shard: str) -> bool:
        return self.pids.get(pid) == f"consumer-{shard}"

    def signal(self, pid: int, signum: int) -> None:
        self.signals.append((self.host.world.clock(), pid, signum))
        name = self.pids.get(pid)
        if name is None:
            return
        if signum == signal.SIGKILL:
            del self.pids[pid]
            self.term_at.pop(pid, None)
            self.host.killed(name)
        elif signum == signal.SIGTERM and name not in self.stubborn:
            self.term_at.setdefault(pid, self.host.world.clock())

    def alive(self, pid: int) -> bool:
        return pid in self.pids

    def tick(self, now: float) -> None:
        for pid, since in list(self.term_at.items()):
            if now - since >= self.host.drain_s:
                del self.term_at[pid]
                self.host.stopped(self.pids.pop(pid))


class Host:
    def __init__(self, world: "World", host_id: str, stream: str = STREAM):
        self.world, self.host_id = world, host_id
        path = world.tmp_path / host_id / "agent-consumers.conf"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.sup = FakeSupervisor(path, on_start=self.started, on_stop=self.stopped)
        self.render_settings = Settings()
        self.include = IncludeFile(path, lambda shards: render_consumers(
            stream=stream, shards=shards, include=str(path), shardline_cmd=["/opt/sl"],
            settings=self.render_settings, host_id=host_id))
        self.procs = Orphans(self)
        self.agent = Agent(stream=stream, host_id=host_id, store=world.store,
                           leases=world.store, list_shards=lambda: list(world.shards),
                           supervisor=self.sup, include=self.include, poll_s=world.poll_s,
                           heartbeat_ttl_s=world.heartbeat_ttl_s, processes=self.procs,
                           stop_wait_s=STOP_WAIT_S)
        self.wake = 0.0
        self.dead = False
        self.drain_s = 0.0  # how long a graceful stop takes here
        self.lease_delay_s = 0.0  # how long a consumer starts before it has the lease
        self.slow: dict[str, float] = {}

    def started(self, name: str) -> None:
        if self.lease_delay_s:
            self.slow[name] = self.world.clock()  # still importing, no lease yet
            return
        self.take_lease(name)

    def take_lease(self, name: str) -> None:
        shard = name.removeprefix("consumer-")
        owner = f"{self.host_id}/{name}"
        token = self.world.store.acquire_lease(STREAM, shard, owner, LEASE_TTL_S)
        assert shard not in self.world.running, f"{shard} runs twice"
        self.world.running[shard] = (self.host_id, owner, token)
        self.world.starts.append((self.world.clock(), self.host_id, shard))

    def stopped(self, name: str) -> None:
        if self.slow.pop(name, None) is not None:
            return  # stopped before it took the lease
        shard = name.removeprefix("consumer-")
        host, owner, token = self.world.running.pop(shard)
        assert host == self.host_id
        self.world.store.release_lease(STREAM, shard, owner, token)
        self.world.stops.append((self.world.clock(), self.host_id, shard))

    def killed(self, name: str) -> None:
        """SIGKILLed: the lease is left to expire."""
        self.world.running.pop(name.removeprefix("consumer-"), None)

    def consumers(self) -> list[str]:
        return [n.removeprefix("consumer-") for n in self.sup.running()]


class World:
    def __init__(self, tmp_path, shards: int = 6, poll_s: float = POLL_S,
                 heartbeat_ttl_s: float = HEARTBEAT_TTL_S):
        self.tmp_path = tmp_path
        self.poll_s, self.heartbeat_ttl_s = poll_s, heartbeat_ttl_s
        self.clock = Clock(1_800_000_000.0)
        self.store = MemoryStore(clock=self.clock)
        self.shards = [ShardInfo(sid(i), starting_hash_key=i) for i in range(shards)]
        self.hosts: dict[str, Host] = {}
        self.running: dict[str, tuple[str, str, int]] = {}  # shard -> host, owner, token
        self.starts: list[tuple[float, str, str]] = []
        self.stops: list[tuple[float, str, str]] = []
        self.stopping_since: dict[tuple[str, str], float] = {}

    def add(self, host_id: str) -> Host:
        self.hosts[host_id] = Host(self, host_id)
        return self.hosts[host_id]

    def live(self) -> list[Host]:
        return [h for h in self.hosts.values() if not h.dead]

    def tick(self) -> None:
        now = self.clock()
        for host in self.live():
            if now >= host.wake and host.agent.exit_code is None:  # else the agent exited
                host.wake = now + host.agent.step(now)
            host.procs.tick(now)
            for name, g in host.sup.active.items():
                key = (host.host_id, name)
                if g["state"] == "STOPPING":
                    since = self.stopping_since.setdefault(key, now)
                    if now - since >= host.drain_s:
                        host.sup.finish_stops(only=name)
                        del self.stopping_since[key]
        for host in self.live():
            for name, since in list(host.slow.items()):
                if now - since >= host.lease_delay_s and host.sup.active.get(name, {}).get(
                        "state") == "RUNNING":
                    del host.slow[name]
                    host.take_lease(name)
        for shard, (host, owner, token) in list(self.running.items()):
            if not self.hosts[host].dead:  # live consumers renew their leases
                self.store.renew_lease(STREAM, shard, owner, token, LEASE_TTL_S)
        processes: dict[str, list[str]] = {}
        for host in self.live():
            for name in host.sup.running() + list(host.procs.pids.values()):
                processes.setdefault(name, []).append(host.host_id)
        assert all(len(h) == 1 for h in processes.values()), f"two processes: {processes}"
        self.clock.advance(DT)

    def run(self, seconds: float) -> None:
        end = self.clock() + seconds
        while self.clock() < end:
            self.tick()

    def run_until(self, predicate, timeout: float) -> float:
        start = self.clock()
        while not predicate():
            if self.clock() - start > timeout:
                raise AssertionError(f"not reached within {timeout}s: {self.layout()}")
            self.tick()
        return self.clock() - start

    def layout(self) -> dict[str, list[str]]:
        return {h.host_id: h.consumers() for h in self.live()}

    def counts(self) -> list[int]:
        return sorted(len(v) for v in self.layout().values())

    def kill(self, host_id: str) -> None:
        """The whole host dies: agent and consumers, leases left to expire."""
        host = self.hosts[host_id]
        host.dead = True
        for shard, (h, _, _) in list(self.running.items()):
            if h == host_id:
                del self.running[shard]

    def kill_supervisord(self, host_id: str) -> list[int]:
        """supervisord alone dies: its consumers run on as orphans (a graceful stop under
        way goes on), nothing answers on its socket. Returns the orphans' pids."""
        host = self.hosts[host_id]
        host.sup.down = True
        now = self.clock()
        for name, group in list(host.sup.active.items()):
            if name.startswith("consumer-") and group["state"] in ("RUNNING", "STOPPING"):
                host.procs.pids[group["pid"]] = name
                if group["state"] == "STOPPING":
                    host.procs.term_at[group["pid"]] = self.stopping_since.pop(
                        (host_id, name), now)
                del host.sup.active[name]
        return sorted(host.procs.pids)

    def finish(self, shard: str) -> None:
        """The shard's consumer reaches SHARD_END: checkpoint, exit 0."""
        host, owner, token = self.running[shard]
        self.store.checkpoint(STREAM, shard, owner, token, LEASE_TTL_S,
                              Checkpoint(SHARD_END, 0, True), source="shard_end")
        self.hosts[host].sup.exit(f"consumer-{shard}")

    def split(self, i: int, children: tuple[int, int]) -> tuple[str, str, str]:
        parent = sid(i)
        self.shards = [ShardInfo(s.shard_id, s.parent, s.adjacent_parent,
                                 s.closed or s.shard_id == parent, s.starting_hash_key)
                       for s in self.shards]
        self.shards += [ShardInfo(sid(c), parent, None, False, 100 + c) for c in children]
        return parent, sid(children[0]), sid(children[1])


@pytest.fixture
def world(tmp_path) -> World:
    return World(tmp_path)


def all_read_once(world: World) -> bool:
    open_ids = {s.shard_id for s in world.shards if s.is_open}
    return open_ids <= set(world.running)


def test_three_hosts_spread_two_each(world):
    for h in ("h1", "h2", "h3"):
        world.add(h)
    world.run_until(lambda: world.counts() == [2, 2, 2], timeout=5)
    assert sorted(world.running) == [sid(i) for i in range(6)]
    assert world.store.assignments(STREAM) == {sid(i): f"h{i % 3 + 1}" for i in range(6)}
    text = world.hosts["h1"].path.read_text()
    assert "[program:consumer-shardId-000000000000]" in text and "autostart=false" in text
    assert "[program:consumer-shardId-000000000001]" not in text


def test_dead_host_shards_taken_over_after_its_leases_expire(world):
    for h in ("h1", "h2", "h3"):
        world.add(h)
    world.run_until(lambda: world.counts() == [2, 2, 2], timeout=5)
    lost = world.hosts["h1"].consumers()
    world.kill("h1")  # the leader
    killed_at = world.clock()
    took = world.run_until(lambda: world.counts() == [3, 3] and len(world.running) == 6,
                           timeout=LEASE_TTL_S + 15)
    assert took <= LEASE_TTL_S + POLL_S + 1, took
    # the new consumers started only once the dead ones' leases had expired
    for t, _host, shard in world.starts:
        if shard in lost and t > killed_at:
            assert t >= killed_at + LEASE_TTL_S - 2 * DT, (t - killed_at, shard)
    assert world.hosts["h2"].agent.leader == "h2"


def test_a_restarted_leader_reassigns_a_dead_hosts_shards_at_once(tmp_path):
    world = World(tmp_path, heartbeat_ttl_s=6.0)
    for h in ("h1", "h2", "h3"):
        world.add(h)
    world.run_until(lambda: world.counts() == [2, 2, 2], timeout=10)
    world.kill("h3")
    world.run(5)
    h1 = world.hosts["h1"]  # the leader's agent restarts (its consumers keep running)
    h1.agent = Agent(stream=STREAM, host_id="h1", store=world.store, leases=world.store,
                     list_shards=lambda: list(world.shards), supervisor=h1.sup,
                     include=h1.include, poll_s=POLL_S, heartbeat_ttl_s=6.0)
    h1.wake = 0.0
    took = 5 + world.run_until(lambda: world.counts() == [3, 3] and len(world.running) == 6,
                               timeout=20)
    assert took <= LEASE_TTL_S + POLL_S + 1.5, took


def test_joining_host_gets_its_share_by_graceful_handoff(world):
    for h in ("h1", "h2", "h3"):
        world.add(h)
    world.shards.extend(ShardInfo(sid(i), starting_hash_key=i) for i in (6, 7))
    world.run_until(lambda: world.counts() == [2, 3, 3], timeout=5)
    for host in world.live():
        host.drain_s = 1.3  # the old owner's graceful stop
    before = {shard: host for shard, (host, _, _) in world.running.items()}
    joined = world.clock()
    world.add("h4")
    took = world.run_until(lambda: world.counts() == [2, 2, 2, 2] and len(world.running) == 8,
                           timeout=10)
    # poll to notice, the old owner's drain, and a handoff re-check: far from a lease TTL
    assert took < 2 * POLL_S + 1.3 + HANDOFF_POLL_S + 0.5, took
    moved = [s for s, (host, _, _) in world.running.items() if before[s] != host]
    assert len(moved) == 2 and all(world.running[s][0] == "h4" for s in moved)
    for t, host, shard in world.starts:
        if t > joined:
            assert host == "h4" and shard in moved
            # the old agent sees the stop end, heartbeats; the new one re-checks: 2 handoff polls
            released = max(t0 for t0, _, s in world.stops if s == shard)
            assert released <= t <= released + 2 * HANDOFF_POLL_S + DT, (released, t)


def test_a_handoff_does_not_wait_for_either_agents_next_poll(tmp_path):
    world = World(tmp_path, poll_s=3.0, heartbeat_ttl_s=6.0)
    for h in ("h1", "h2"):
        world.add(h).drain_s = 0.7
    world.run_until(lambda: world.counts() == [3, 3], timeout=15)
    joined = world.clock()
    world.add("h3")
    world.run_until(lambda: world.counts() == [2, 2, 2], timeout=15)
    moved = [(t, s) for t, h, s in world.starts if t > joined]
    assert len(moved) == 2
    for t, shard in moved:
        released = max(t0 for t0, _, s in world.stops if s == shard)
        # the old agent sees the stop end and heartbeats at once; the new one re-checks
        assert t - released <= 2 * HANDOFF_POLL_S + DT, (t - released, shard)


def test_a_shard_moving_while_its_consumer_starts_waits_for_that_process(world):
    h1 = world.add("h1")
    h1.lease_delay_s = 2.0  # a slow start: the lease is taken 2 s after the process started
    h1.drain_s = 0.5
    world.run(HEARTBEAT_TTL_S + 0.6)  # h1 leads, its six consumers are starting
    assert len(h1.consumers()) == 6 and world.running == {}
    world.add("h2")
    # the tick's invariant (never one shard's process on two hosts) is the check here
    world.run_until(lambda: world.counts() == [3, 3] and len(world.running) == 6, timeout=10)


def test_split_children_get_consumers_and_the_finished_parent_is_removed(world):
    for h in ("h1", "h2", "h3"):
        world.add(h)
    world.run_until(lambda: world.counts() == [2, 2, 2], timeout=5)
    parent_host = world.running[sid(0)][0]
    parent, c1, c2 = world.split(0, (6, 7))
    world.run_until(lambda: {c1, c2} <= set(world.running), timeout=5)
    assert world.running[parent][0] == parent_host, "the draining parent stayed put"
    world.finish(parent)
    world.run_until(lambda: parent not in world.store.assignments(STREAM)
                    and f"consumer-{parent}" not in world.hosts[parent_host].sup.active,
                    timeout=5)
    world.run(3)
    assert world.counts() == [2, 2, 3] and all_read_once(world)
    assert f"consumer-{parent}" not in world.hosts[parent_host].path.read_text()


def test_merge_child_gets_a_consumer_and_both_finished_parents_are_removed(world):
    for h in ("h1", "h2", "h3"):
        world.add(h)
    world.run_until(lambda: world.counts() == [2, 2, 2], timeout=5)
    a, b, child = sid(1), sid(2), sid(6)
    world.shards = [ShardInfo(s.shard_id, s.parent, s.adjacent_parent,
                              s.closed or s.shard_id in (a, b), s.starting_hash_key)
                    for s in world.shards] + [ShardInfo(child, a, b, False, 101)]
    world.run_until(lambda: child in world.running, timeout=5)
    for parent in (a, b):
        world.finish(parent)
    world.run_until(lambda: set(world.store.assignments(STREAM)) == {
        sid(0), sid(3), sid(4), sid(5), child}, timeout=5)
    world.run(3)
    assert world.counts() == [1, 2, 2] and all_read_once(world)
    for host in world.live():
        assert not {f"consumer-{a}", f"consumer-{b}"} & set(host.sup.active)


def test_a_program_a_person_stopped_stays_stopped(world):
    host = world.add("h1")
    world.run_until(lambda: len(world.running) == 6, timeout=5)
    host.sup.human_stop(f"consumer-{sid(3)}")  # e.g. before a replay
    world.run(5)
    assert sid(3) not in world.running
    assert host.sup.active[f"consumer-{sid(3)}"]["state"] == "STOPPED"


def test_stale_include_after_a_reboot_starts_nothing_given_away(world, tmp_path):
    _, h2 = world.add("h1"), world.add("h2")
    world.run_until(lambda: world.counts() == [3, 3], timeout=5)
    # h2 reboots while h1 takes everything: its include still lists its old shards
    world.kill("h2")
    world.run_until(lambda: world.counts() == [6], timeout=LEASE_TTL_S + 5)
    h2.dead = False
    h2.sup = FakeSupervisor(h2.path, on_start=h2.started, on_stop=h2.stopped)
    h2.sup.reload()
    for name in [n for n in h2.sup.configured if n.startswith("consumer-")]:
        h2.sup.add(name)  # what supervisord does at boot: nothing runs (autostart=false)
    assert h2.sup.running() == []
    h2.agent = Agent(stream=STREAM, host_id="h2", store=world.store, leases=world.store,
                     list_shards=lambda: list(world.shards), supervisor=h2.sup,
                     include=h2.include, poll_s=POLL_S, heartbeat_ttl_s=HEARTBEAT_TTL_S)
    h2.wake = 0.0
    world.run_until(lambda: world.counts() == [3, 3], timeout=10)
    assert len(world.running) == 6


def test_leave_deregisters_only_when_supervisord_shuts_down(world):
    host = world.add("h1")
    world.run_until(lambda: len(world.running) == 6, timeout=5)
    host.agent.leave()
    assert [h.host_id for h in world.store.live_hosts()] == ["h1"]
    host.sup.mood = "SHUTDOWN"
    host.agent.leave()
    assert world.store.live_hosts() == []


def test_hosts_of_another_stream_are_not_counted(world, tmp_path):
    world.add("h1")
    world.store.heartbeat("other", 60, {"stream": "another-stream"})
    world.run_until(lambda: len(world.running) == 6, timeout=5)
    assert set(world.store.assignments(STREAM).values()) == {"h1"}


def test_supervisord_down_is_retried_and_nothing_is_lost(world):
    host = world.add("h1")
    host.sup.down = True
    world.run(HEARTBEAT_TTL_S + 1)
    assert world.running == {}
    assert world.store.assignments(STREAM)  # the fleet part went on
    host.sup.down = False
    world.run_until(lambda: len(world.running) == 6, timeout=5)


def heartbeating(world: World) -> list[str]:
    return [h.host_id for h in world.store.live_hosts()]


def test_supervisord_dying_alone_the_agent_leaves_stops_its_orphans_and_exits(world):
    h1, h2 = world.add("h1"), world.add("h2")
    for host in (h1, h2):
        host.drain_s = 0.7
    world.run_until(lambda: world.counts() == [3, 3], timeout=10)
    assert h1.agent.leader == "h1"  # the leader: it would keep handing itself shards
    lost = set(h1.consumers())
    orphans = world.kill_supervisord("h1")
    died = world.clock()

    # within SUPERVISORD_LOST_POLLS polls: off the fleet, a SIGTERM to each orphan
    noticed = world.run_until(lambda: h1.procs.signals, timeout=10)
    assert noticed <= SUPERVISORD_LOST_POLLS * POLL_S + 2 * DT, noticed
    assert heartbeating(world) == ["h2"]
    assert sorted((pid, sig) for _, pid, sig in h1.procs.signals) == [
        (pid, signal.SIGTERM) for pid in orphans]
    assert h1.agent.exit_code is None, "exits only once its consumers are gone"

    # the orphans drain and release their leases; h2 leads, takes all, starts each at once
    took = world.run_until(lambda: world.counts() == [0, 6] and len(world.running) == 6
                           and h1.agent.exit_code is not None, timeout=LEASE_TTL_S + 5)
    took += noticed
    assert took <= (SUPERVISORD_LOST_POLLS + 1) * POLL_S + HANDOFF_POLL_S + 2 * DT, took
    assert took < LEASE_TTL_S, "nobody waited for a lease to expire"
    assert h1.agent.exit_code == ExitCode.UNAVAILABLE
    assert {s for _, h, s in world.stops if h == "h1"} == lost  # each released its lease
    assert all(world.running[s][0] == "h2" for s in lost)
    assert all(t - died <= took for t, h, s in world.starts if s in lost)
    assert not [sig for _, _, sig in h1.procs.signals if sig != signal.SIGTERM]
    world.run(HEARTBEAT_TTL_S)
    assert heartbeating(world) == ["h2"], "an exited agent never heartbeats again"
    assert set(world.store.assignments(STREAM).values()) == {"h2"}


def test_an_orphan_deaf_to_sigterm_is_killed_after_its_stop_wait(world):
    h1 = world.add("h1")
    world.add("h2")
    world.run_until(lambda: world.counts() == [3, 3], timeout=10)
    deaf = f"consumer-{h1.consumers()[0]}"
    h1.procs.stubborn.add(deaf)
    # one consumer was already stopping (a person's `supervisorctl stop`): its graceful
    # stop goes on, and a second SIGTERM would force it out without its checkpoint
    stopping = f"consumer-{h1.consumers()[1]}"
    h1.drain_s = 3.0  # below the stop wait
    h1.sup.stop(stopping)
    world.run(POLL_S + 0.1)  # the agent has seen it stopping
    orphans = world.kill_supervisord("h1")
    pid = {name: pid for pid, name in h1.procs.pids.items()}
    world.run_until(lambda: h1.agent.exit_code is not None, timeout=STOP_WAIT_S + 5)
    assert h1.agent.exit_code == ExitCode.UNAVAILABLE
    sent = {(p, sig) for _, p, sig in h1.procs.signals}
    assert sent == {(p, signal.SIGTERM) for p in orphans if p != pid[stopping]} | {
        (pid[deaf], signal.SIGKILL)}
    term = min(t for t, _, _ in h1.procs.signals)
    kill = next(t for t, _, sig in h1.procs.signals if sig == signal.SIGKILL)
    assert STOP_WAIT_S <= kill - term <= STOP_WAIT_S + HANDOFF_POLL_S + DT
    # the killed one's lease expires; then h2 has everything
    world.run_until(lambda: world.counts() == [0, 6] and len(world.running) == 6,
                    timeout=LEASE_TTL_S + 5)


def test_the_agent_command_exits_69_once_its_supervisord_is_gone(world):
    from shardline.fleet.main import run

    h1 = world.add("h1")
    world.add("h2")
    world.run_until(lambda: world.counts() == [3, 3], timeout=10)
    world.kill_supervisord("h1")
    h1.wake = float("inf")  # stepped by run() below, not by the world

    class Ticking:  # the stop event; its waits move the world on
        def is_set(self) -> bool:
            return False

        def wait(self, seconds: float) -> bool:
            world.run(max(seconds, DT))
            return False

    assert run(h1.agent, Ticking(), clock=world.clock) == ExitCode.UNAVAILABLE
    assert world.counts() == [0, 6] and heartbeating(world) == ["h2"]


def test_supervisord_missing_one_poll_changes_nothing(world):
    host = world.add("h1")
    world.run_until(lambda: len(world.running) == 6, timeout=5)
    # a moment's hiccup: supervisord misses exactly one poll
    world.run_until(lambda: host.agent.next_poll - world.clock() < POLL_S / 2, timeout=2)
    host.sup.down = True
    world.run(POLL_S)
    assert host.agent.unanswered_polls == 1
    host.sup.down = False
    world.run(3 * POLL_S)
    assert host.agent.exit_code is None and host.procs.signals == []
    assert len(world.running) == 6 and heartbeating(world) == ["h1"]


def test_host_processes_stops_a_real_program_in_its_own_group():
    procs = HostProcesses()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                              "shardId-000000000007"], start_new_session=True)
    try:
        for _ in range(100):  # until the child runs its own command line
            if procs.is_program(child.pid, "shardId-000000000007"):
                break
            time.sleep(0.05)
        assert procs.is_program(child.pid, "shardId-000000000007")
        assert not procs.is_program(child.pid, "shardId-000000000008")
        assert procs.alive(child.pid)
        procs.signal(child.pid, signal.SIGTERM)
        for _ in range(100):
            if not procs.alive(child.pid):  # a zombie counts as gone: init reaps orphans
                break
            time.sleep(0.05)
        assert not procs.alive(child.pid)
        assert child.wait(5) == -signal.SIGTERM
        assert not procs.is_program(child.pid, "shardId-000000000007")
        procs.signal(child.pid, signal.SIGTERM)  # gone: not an error
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


class FlakyStore:
    """The control store unreachable while ``down``."""

    def __init__(self, store):
        self.store, self.down = store, False

    def __getattr__(self, name):
        attr = getattr(self.store, name)
        if not callable(attr):
            return attr

        def call(*a, **kw):
            if self.down:
                raise ServiceUnavailable("control store: connection refused")
            return attr(*a, **kw)

        return call


def test_control_store_outage_keeps_the_consumers_running(world):
    host = world.add("h1")
    flaky = FlakyStore(world.store)
    host.agent.store = flaky
    world.run_until(lambda: len(world.running) == 6, timeout=5)
    flaky.down = True
    world.run(HEARTBEAT_TTL_S * 2)
    assert len(world.running) == 6, "an outage must not stop consumers"
    flaky.down = False
    world.run(2)
    assert len(world.running) == 6


def test_a_changed_program_is_restarted_gracefully(world):
    host = world.add("h1")
    world.run_until(lambda: len(world.running) == 6, timeout=5)
    pids = {n: g["pid"] for n, g in host.sup.active.items() if n.startswith("consumer-")}
    host.render_settings = Settings().replace(**{"consumer.shutdown_timeout_s": "30"})
    world.run_until(lambda: len(world.running) == 6 and all(
        host.sup.active[n]["pid"] != pid for n, pid in pids.items()), timeout=10)
    assert "stopwaitsecs=40" in host.path.read_text()


def test_step_waits_until_the_next_poll_when_nothing_moves(world):
    host = world.add("h1")
    world.run_until(lambda: len(world.running) == 6, timeout=5)
    world.run(POLL_S)
    now = world.clock()
    wait = host.agent.step(now)
    assert 0 < wait <= POLL_S
    assert host.agent.step(now + wait) == pytest.approx(POLL_S)


@pytest.fixture
def no_settings(monkeypatch, tmp_path):
    """No SHARDLINE_* variables and no shardline.ini; the agent's signal handlers undone."""
    import os
    import signal

    for name in list(os.environ):
        if name.startswith("SHARDLINE_") or name == "SUPERVISOR_SERVER_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield monkeypatch
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("env, key", [
    ({}, "agent.include_file"),
    ({"SHARDLINE_AGENT_INCLUDE_FILE": "/tmp/x.conf"}, "control.dsn"),
    ({"SHARDLINE_AGENT_INCLUDE_FILE": "/tmp/x.conf", "SHARDLINE_CONTROL_DSN": "host=x"},
     "agent.serverurl"),
    ({"SHARDLINE_AGENT_POLL_S": "20"}, "agent.heartbeat_ttl_s"),
])
def test_agent_command_bad_config_exits_78_naming_the_key(no_settings, capsys, env, key):
    from shardline import cli

    for name, value in env.items():
        no_settings.setenv(name, value)
    assert cli.main(["agent", "--stream", "clicks"]) == 78
    assert key in capsys.readouterr().err


class OneStepAgent:
    """An agent whose step sends this process a signal, as supervisord would mid-step."""

    poll_s = 1.0
    heartbeat_ttl_s = 3.0
    exit_code = None  # supervisord still answers

    def __init__(self, signum: int):
        import logging

        self.log = logging.getLogger("test-agent")
        self.signum = signum
        self.steps = 0
        self.left = False

    def step(self, now: float) -> float:
        import os

        self.steps += 1
        if self.steps == 1:
            os.kill(os.getpid(), self.signum)
        return 30.0  # a long wait the stop has to cut short

    def leave(self) -> None:
        self.left = True


def test_agent_signals_first_graceful_second_forced(no_settings):
    import os
    import signal
    import time

    from shardline.fleet import main as agent_main
    from shardline.lifecycle import ForcedStop, StopSignals

    stop = agent_main.stop_requested()
    # lifecycle's handler only counts; no Event is set inside the signal handler
    assert isinstance(stop, StopSignals)
    assert signal.getsignal(signal.SIGTERM) == stop.handler
    assert signal.getsignal(signal.SIGINT) == stop.handler

    agent = OneStepAgent(signal.SIGTERM)
    t0 = time.monotonic()
    assert agent_main.run(agent, stop) == 0  # type: ignore[arg-type]
    assert agent.steps == 1 and agent.left
    assert time.monotonic() - t0 < 5  # the step's 30 s wait was cut short

    with pytest.raises(KeyboardInterrupt) as forced:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises in this (the main) thread before this ends
    assert forced.type is ForcedStop and stop.forced


REATTACH = """
import sys
from shardline.fleet.main import reattach_stderr
reattach_stderr(sys.argv[1])
print("after", file=sys.stderr, flush=True)
"""


def test_the_agent_moves_its_stderr_off_a_pipe_to_its_log_file(tmp_path):
    log = tmp_path / "agent.err.log"
    log.write_text("before\n")
    # stderr a pipe (supervisord's, here still read): the last lines go to the log file
    child = subprocess.run([sys.executable, "-c", REATTACH, str(log)], capture_output=True,
                           text=True, timeout=30)
    assert child.returncode == 0 and child.stderr == ""
    assert log.read_text() == "before\nafter\n"
    # stderr not a pipe (a terminal, a file, the journal's socket): left as it is
    with open(tmp_path / "own.txt", "w") as own:
        subprocess.run([sys.executable, "-c", REATTACH, str(log)], stderr=own, timeout=30,
                       check=True)
    assert (tmp_path / "own.txt").read_text() == "after\n"
    assert log.read_text() == "before\nafter\n"
