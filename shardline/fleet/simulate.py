"""The fleet at a size this box cannot hold, by simulation: ``python -m shardline.fleet.simulate``.

Runs the real ``Agent.step`` of every simulated host (each over an in-memory supervisord
that starts a program at once or after ``start_delay_s``) and simulated consumers that take,
renew and release their shard leases and checkpoint on the consumer's cadence, all against
ONE ``MemoryStore`` read through a simulated clock. It is a discrete-event loop: a heap of
(when, what) events, no sleeping and no threads, so an hour of a 4,096-shard fleet is a
minute of CPU. The store is wrapped to count every call and the items each read returns,
which is what DynamoDB on-demand bills (request units by item size, not by call).

It lives in the package, beside the agent it drives, rather than in bench/: it is typed and
checked with the agent (a change to the agent's interface breaks the lint, not a benchmark
nobody runs), and ``tests/unit/test_fleet_simulation.py`` runs it in ``make test``.

The loader is not simulated event by event: one loader per table polls the ledger every
``loader.poll_s`` whatever the fleet's size, so its cadence is arithmetic (``loader_figures``)
from the settings' defaults and the stated traffic assumptions.
"""
from __future__ import annotations

import argparse
import heapq
import itertools
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

from shardline.controlstore.base import Checkpoint, Host, Lease
from shardline.records.control import SHARD_END
from shardline.controlstore.memory import MemoryStore
from shardline.errors import LeaseHeld
from shardline.fleet.agent import Agent, IncludeFile
from shardline.fleet.assign import balance
from shardline.fleet.supervisor import RUNNING_STATES, Proc
from shardline.kinesis import ShardInfo
from shardline.logs import ContextLogger, get_logger
from shardline.settings import Settings

STREAM = "sim"
PREFIX = "consumer-"
EPOCH = 1_800_000_000.0  # simulated time starts here (any fixed instant: runs repeat exactly)

# DynamoDB on-demand list prices, us-east-1, as we know them (since November 2024): per
# million request units. A strongly consistent read is 1 RRU per 4 KB read (a Query or Scan
# rounds the whole page's size up), a write 1 WRU per 1 KB of item, a transactional write 2.
PRICE_PER_M_RRU = 0.125
PRICE_PER_M_WRU = 0.625
SECONDS_PER_MONTH = 30 * 86400
# Item sizes as the DynamoDB backend stores them (attribute names included), estimated.
ITEM_BYTES = {"hosts": 160, "assignments": 90, "leases": 150, "checkpoints": 200,
              "status": 400}
# A staged file's ledger item: written once (``record_file``: the item, its ``pending`` and
# ``staged`` index entries) and updated once (``mark_loaded``: the item, out of ``pending``,
# ``staged`` rewritten), each under 1 KB.
LEDGER_WRU_PER_FILE = 6
SHARD_ID_BYTES = 22  # "shardId-000000000000," in a host's info["running"]


def sid(i: int) -> str:
    return f"shardId-{i:012d}"


def host_name(i: int) -> str:
    return f"h{i:04d}"


# -- the counted store ----------------------------------------------------------------
@dataclass
class Op:
    calls: int = 0
    items: int = 0  # items returned (reads) or written (writes)
    units: float = 0.0  # DynamoDB request units this would have cost


class CountingStore(MemoryStore):
    """The memory store, counting each call of the fleet's operations with the items and
    the DynamoDB request units it would cost."""

    def __init__(self, clock: Callable[[], float]):
        super().__init__(clock)
        self.ops: dict[str, Op] = {}

    def _count(self, name: str, items: int, units: float) -> None:
        op = self.ops.setdefault(name, Op())
        op.calls += 1
        op.items += items
        op.units += units

    def snapshot(self) -> dict[str, Op]:
        return {k: Op(v.calls, v.items, v.units) for k, v in self.ops.items()}

    @staticmethod
    def _read_units(n_bytes: int) -> float:
        return float(max(1, math.ceil(n_bytes / 4096)))

    def heartbeat(self, host_id: str, ttl_s: float,
                  info: Mapping[str, str] | None = None) -> None:
        running = (info or {}).get("running", "")
        size = ITEM_BYTES["hosts"] + len(running)
        self._count("write heartbeat", 1, math.ceil(size / 1024))
        super().heartbeat(host_id, ttl_s, info)

    def live_hosts(self) -> list[Host]:
        found = super().live_hosts()
        # a Scan reads every host item, expired ones too, before its filter
        size = sum(ITEM_BYTES["hosts"] + len(h.info.get("running", "")) for h in self.hosts())
        self._count("read live_hosts (scan)", len(found), self._read_units(size))
        return found

    def remove_host(self, host_id: str) -> None:
        self._count("write remove_host", 1, 1)
        super().remove_host(host_id)

    def assign(self, stream: str, shard_id: str, host_id: str | None) -> None:
        self._count("write assign", 1, 1)
        super().assign(stream, shard_id, host_id)

    def assignments(self, stream: str) -> dict[str, str]:
        found = super().assignments(stream)
        self._count("read assignments (query)", len(found),
                    self._read_units(len(found) * ITEM_BYTES["assignments"]))
        return found

    def leases(self, stream: str) -> list[Lease]:
        found = super().leases(stream)
        self._count("read leases (query)", len(found),
                    self._read_units(len(found) * ITEM_BYTES["leases"]))
        return found

    def get_lease(self, stream: str, shard_id: str) -> Lease | None:
        found = super().get_lease(stream, shard_id)
        self._count("read get_lease", 1 if found else 0, 1)
        return found

    def checkpoints(self, stream: str) -> dict[str, Checkpoint]:
        found = super().checkpoints(stream)
        self._count("read checkpoints (query)", len(found),
                    self._read_units(len(found) * ITEM_BYTES["checkpoints"]))
        return found

    def acquire_lease(self, stream: str, shard_id: str, owner: str, ttl_s: float) -> int:
        self._count("write acquire_lease", 1, 1)
        return super().acquire_lease(stream, shard_id, owner, ttl_s)

    def renew_lease(self, stream: str, shard_id: str, owner: str, token: int,
                    ttl_s: float) -> None:
        self._count("write renew_lease", 1, 1)
        super().renew_lease(stream, shard_id, owner, token, ttl_s)

    def release_lease(self, stream: str, shard_id: str, owner: str, token: int) -> None:
        self._count("write release_lease", 1, 1)
        super().release_lease(stream, shard_id, owner, token)

    def checkpoint(self, stream: str, shard_id: str, owner: str, token: int, ttl_s: float,
                   cp: Checkpoint, source: str = "consumer") -> int:
        # one transaction: lease renewal, checkpoint, history entry (2 WRU each), and the
        # history entry in its two indexes (1 WRU each)
        self._count("write checkpoint (transaction)", 3, 6 + 2)
        return super().checkpoint(stream, shard_id, owner, token, ttl_s, cp, source)

    def status_written(self) -> None:
        """A consumer's status row (``report_status``), counted without keeping the row:
        the simulation has no use for its values."""
        self._count("write report_status", 1, math.ceil(ITEM_BYTES["status"] / 1024))


# -- a host's supervisord, in memory ------------------------------------------------------
class MemoryInclude(IncludeFile):
    """The include file as the list of shards the agent last wrote (nothing on disk)."""

    def __init__(self) -> None:
        super().__init__("/nonexistent/sim-consumers.conf", lambda shards: "")
        self.shards: tuple[str, ...] = ()

    def write(self, shards: Sequence[str]) -> bool:
        new = tuple(sorted(shards))
        if new == self.shards:
            return False
        self.shards = new
        return True


@dataclass
class Group:
    state: str = "STOPPED"
    started: bool = False
    pid: int = 0


class SimSupervisor:
    """What the agent asks of supervisord, for consumer programs only: ``autostart=false``
    programs, a start that hands the consumer to the world (which plays its process), a
    stop that only asks (the consumer drains, then ``stopped``)."""

    def __init__(self, host: SimHost):
        self.host = host
        self.include = MemoryInclude()
        self.groups: dict[str, Group] = {}
        self.calls = 0

    def state(self) -> str:
        self.calls += 1
        return "RUNNING"

    def processes(self) -> dict[str, Proc]:
        self.calls += 1
        return {n: Proc(n, n, g.state, g.started, g.pid) for n, g in self.groups.items()}

    def reload(self) -> tuple[list[str], list[str], list[str]]:
        self.calls += 1
        configured = {PREFIX + s for s in self.include.shards}
        return (sorted(configured - set(self.groups)), [],
                sorted(set(self.groups) - configured))

    def add(self, group: str) -> None:
        self.calls += 1
        self.groups.setdefault(group, Group())

    def remove(self, group: str) -> bool:
        self.calls += 1
        g = self.groups.get(group)
        if g is not None and g.state in RUNNING_STATES:
            return False
        self.groups.pop(group, None)
        return True

    def start(self, group: str) -> None:
        self.calls += 1
        g = self.groups.get(group)
        if g is not None and g.state not in RUNNING_STATES:
            g.state, g.started, g.pid = "RUNNING", True, next(self.host.world.pids)
            self.host.world.consumer_started(self.host, group.removeprefix(PREFIX))

    def stop(self, group: str) -> None:
        self.calls += 1
        g = self.groups.get(group)
        if g is not None and g.state in RUNNING_STATES and g.state != "STOPPING":
            g.state = "STOPPING"
            self.host.world.consumer_stopping(self.host, group.removeprefix(PREFIX))


# -- the world ------------------------------------------------------------------------
@dataclass(frozen=True)
class Params:
    """The fleet's settings (the defaults are ``Settings()``'s) and the simulation's own."""

    shards: int
    hosts: int
    poll_s: float = field(default_factory=lambda: Settings().agent.poll_s)
    heartbeat_ttl_s: float = field(default_factory=lambda: Settings().agent.heartbeat_ttl_s)
    lease_ttl_s: float = field(default_factory=lambda: Settings().consumer.lease_ttl_s)
    lease_renew_s: float = field(default_factory=lambda: Settings().consumer.lease_renew_s)
    checkpoint_s: float = field(
        default_factory=lambda: Settings().consumer.checkpoint_interval_s)
    report_s: float = field(default_factory=lambda: Settings().consumer.report_interval_s)
    start_delay_s: float = 0.0  # supervisord start -> the consumer holds its lease
    drain_s: float = 1.0  # SIGTERM -> lease released (in-flight batches finished)
    boot_spread_s: float = 1.0  # hosts of a cold start come up within this long
    traffic: bool = True  # consumers checkpoint every checkpoint_s (else only renew)


@dataclass
class Consumer:
    host: SimHost
    shard: str
    owner: str
    token: int | None = None
    renewed_at: float = 0.0
    stopping: bool = False
    gen: int = 0  # bumped when it ends: its pending events then do nothing


class SimHost:
    def __init__(self, world: World, host_id: str):
        self.world, self.host_id = world, host_id
        self.sup = SimSupervisor(self)
        p = world.params
        self.agent = Agent(stream=STREAM, host_id=host_id, store=world.store,
                           leases=world.store, list_shards=world.list_shards,
                           supervisor=self.sup, include=self.sup.include, poll_s=p.poll_s,
                           heartbeat_ttl_s=p.heartbeat_ttl_s, consumer_prefix=PREFIX,
                           log=world.log)
        self.dead = False
        self.steps = 0


class World:
    """One control store, one stream, many hosts. ``run_until`` advances simulated time
    event by event; ``wall_agent_s`` is the CPU-side wall time spent in agents' steps."""

    def __init__(self, params: Params, log: ContextLogger | None = None):
        self.params = params
        self.t = EPOCH
        self.store = CountingStore(clock=lambda: self.t)
        self.log = log or _quiet_logger()
        self.shards = [ShardInfo(sid(i), starting_hash_key=i) for i in range(params.shards)]
        self.hosts: dict[str, SimHost] = {}
        self.consumers: dict[str, Consumer] = {}  # shard -> the consumer holding or taking it
        self.events: list[tuple[float, int, Callable[[], None]]] = []
        self.seq = itertools.count()
        self.pids = itertools.count(1000)
        self.wall_agent_s = 0.0
        self.wall_lead_s = 0.0
        self.agent_steps = 0
        self.leader_polls = 0
        self.double_starts = 0

    # -- events --------------------------------------------------------------------
    def at(self, when: float, what: Callable[[], None]) -> None:
        heapq.heappush(self.events, (when, next(self.seq), what))

    def run_until(self, done: Callable[[], bool], timeout_s: float,
                  check_every_s: float = 0.5) -> float | None:
        """Advance until ``done()`` (checked every ``check_every_s``); the simulated seconds
        it took, or None past ``timeout_s``."""
        start = self.t
        next_check = start
        while True:
            if self.t >= next_check:
                if done():
                    return self.t - start
                next_check = self.t + check_every_s
            if self.t - start > timeout_s:
                return None
            when = self.events[0][0] if self.events else math.inf
            if when > next_check:
                self.t = next_check
                continue
            _, _, what = heapq.heappop(self.events)
            self.t = max(self.t, when)
            what()

    def run_for(self, seconds: float) -> None:
        end = self.t + seconds
        self.run_until(lambda: self.t >= end, seconds + 1)

    # -- hosts -----------------------------------------------------------------------
    def list_shards(self) -> list[ShardInfo]:
        return list(self.shards)

    def add_host(self, host_id: str, after_s: float = 0.0) -> SimHost:
        host = SimHost(self, host_id)
        self.hosts[host_id] = host
        self.at(self.t + after_s, lambda: self._step(host))
        return host

    def _step(self, host: SimHost) -> None:
        if host.dead or host.agent.exit_code is not None:
            return
        leader_before = host.agent.leader == host.host_id
        t0 = time.perf_counter()
        wait = host.agent.step(self.t)
        spent = time.perf_counter() - t0
        self.wall_agent_s += spent
        if leader_before or host.agent.leader == host.host_id:
            self.wall_lead_s += spent
            self.leader_polls += 1
        self.agent_steps += 1
        host.steps += 1
        self.at(self.t + max(wait, 0.01), lambda: self._step(host))

    def kill_host(self, host_id: str) -> None:
        """The whole machine dies: agent and consumers; leases and heartbeat lapse."""
        host = self.hosts[host_id]
        host.dead = True
        for shard, c in list(self.consumers.items()):
            if c.host is host:
                c.gen += 1
                del self.consumers[shard]

    def revive_host(self, host_id: str) -> SimHost:
        """The dead machine boots again: its supervisord reads the include file the agent
        wrote before, so the old programs are there, stopped (``autostart=false``)."""
        old = self.hosts[host_id]
        host = self.add_host(host_id)
        host.sup.include.shards = old.sup.include.shards
        host.sup.groups = {PREFIX + s: Group() for s in old.sup.include.shards}
        return host

    def live_hosts(self) -> list[SimHost]:
        return [h for h in self.hosts.values() if not h.dead]

    # -- consumers -------------------------------------------------------------------
    def consumer_started(self, host: SimHost, shard: str) -> None:
        if shard in self.consumers:
            self.double_starts += 1  # two processes for one shard: what the agent prevents
        c = Consumer(host, shard, f"{host.host_id}:{shard}")
        self.consumers[shard] = c
        self.at(self.t + self.params.start_delay_s, lambda: self._take(c, c.gen))

    def _take(self, c: Consumer, gen: int) -> None:
        if gen != c.gen or c.stopping:
            return
        try:
            c.token = self.store.acquire_lease(STREAM, c.shard, c.owner, self.params.lease_ttl_s)
            c.renewed_at = self.t
        except LeaseHeld:
            self.at(self.t + 1.0, lambda: self._take(c, gen))  # the consumer retries
            return
        self._tick(c, gen, first=True)

    def _tick(self, c: Consumer, gen: int, first: bool = False) -> None:
        """The consumer's control-store cadence: a checkpoint (which renews the lease) every
        ``checkpoint_s`` under traffic, else a renewal every ``lease_renew_s``; a status row
        every ``report_s`` (one event at the shorter period keeps the heap small)."""
        if gen != c.gen or c.stopping or c.token is None:
            return
        p = self.params
        every = min(p.report_s, p.checkpoint_s if p.traffic else p.lease_renew_s)
        if not first:
            self.store.status_written()
            if p.traffic:
                self.store.checkpoint(STREAM, c.shard, c.owner, c.token, p.lease_ttl_s,
                                      Checkpoint(str(int(self.t)), 0, False))
            elif self.t - c.renewed_at >= p.lease_renew_s:
                self.store.renew_lease(STREAM, c.shard, c.owner, c.token, p.lease_ttl_s)
                c.renewed_at = self.t
        self.at(self.t + every, lambda: self._tick(c, gen))

    def consumer_stopping(self, host: SimHost, shard: str) -> None:
        c = self.consumers.get(shard)
        if c is None or c.host is not host:
            return
        c.stopping = True
        self.at(self.t + self.params.drain_s, lambda: self._stopped(c))

    def _stopped(self, c: Consumer) -> None:
        if c.host.dead:
            return
        if c.token is not None:
            self.store.release_lease(STREAM, c.shard, c.owner, c.token)
        c.gen += 1
        if self.consumers.get(c.shard) is c:
            del self.consumers[c.shard]
        group = c.host.sup.groups.get(PREFIX + c.shard)
        if group is not None:
            group.state, group.pid = "STOPPED", 0

    # -- what is owned ---------------------------------------------------------------
    def open_shards(self) -> list[str]:
        return [s.shard_id for s in self.shards if s.is_open]

    def owned(self) -> dict[str, str]:
        """shard -> host whose consumer holds its lease."""
        return {s: c.host.host_id for s, c in self.consumers.items()
                if c.token is not None and not c.stopping}

    def all_owned(self, shards: Iterable[str] | None = None) -> bool:
        owned = self.owned()
        return all(s in owned for s in (self.open_shards() if shards is None else shards))

    def split_all(self) -> list[str]:
        """Every open shard splits in two (UpdateShardCount to double). Returns the children."""
        return self.split(self.open_shards())

    def split_one(self, parent: str) -> list[str]:
        return self.split([parent])

    def split(self, parents: Sequence[str]) -> list[str]:
        """Each of ``parents`` splits: it closes and keeps its consumer until SHARD_END,
        which comes once its last records are read (``drain_s`` later); its two children are
        new shards (ids after the highest so far). Returns the children."""
        n, splitting = len(self.shards), set(parents)
        self.shards = [ShardInfo(s.shard_id, s.parent, s.adjacent_parent, True,
                                 s.starting_hash_key) if s.shard_id in splitting else s
                       for s in self.shards]
        children: list[str] = []
        for parent in parents:
            for _ in (0, 1):
                child = sid(n + len(children))
                self.shards.append(ShardInfo(child, parent, None, False, n + len(children)))
                children.append(child)
            self.at(self.t + self.params.drain_s, self._shard_end_of(parent))
        return children

    def _shard_end_of(self, shard: str) -> Callable[[], None]:
        return lambda: self._shard_end(shard)

    def _shard_end(self, shard: str) -> None:
        """The parent's consumer read to SHARD_END: checkpoint, exit 0 (EXITED)."""
        c = self.consumers.get(shard)
        if c is None or c.token is None:
            self.at(self.t + 1.0, lambda: self._shard_end(shard))
            return
        self.store.checkpoint(STREAM, shard, c.owner, c.token, self.params.lease_ttl_s,
                              Checkpoint(SHARD_END, 0, True), source="shard_end")
        self.store.release_lease(STREAM, shard, c.owner, c.token)
        c.gen += 1
        del self.consumers[shard]
        group = c.host.sup.groups.get(PREFIX + shard)
        if group is not None:
            group.state, group.pid = "EXITED", 0


def _quiet_logger() -> ContextLogger:
    """The agents' own log lines (one per shard moved) would dwarf the figures."""
    log = get_logger("fleet_sim")
    log.logger.setLevel(logging.WARNING)
    return log


# -- the scenarios ----------------------------------------------------------------------
@dataclass
class Rates:
    """Control-store traffic per second over a window, by operation."""

    seconds: float
    ops: dict[str, Op]

    def per_s(self, name: str) -> float:
        return self.ops[name].calls / self.seconds if name in self.ops else 0.0

    @property
    def reads_per_s(self) -> float:
        return sum(o.calls for k, o in self.ops.items() if k.startswith("read")) / self.seconds

    @property
    def writes_per_s(self) -> float:
        return sum(o.calls for k, o in self.ops.items() if k.startswith("write")) / self.seconds

    @property
    def rru_per_s(self) -> float:
        return sum(o.units for k, o in self.ops.items() if k.startswith("read")) / self.seconds

    @property
    def wru_per_s(self) -> float:
        return sum(o.units for k, o in self.ops.items() if k.startswith("write")) / self.seconds

    @property
    def cost_per_month(self) -> float:
        return (self.rru_per_s * PRICE_PER_M_RRU + self.wru_per_s * PRICE_PER_M_WRU) \
            * SECONDS_PER_MONTH / 1e6


def rates(before: Mapping[str, Op], after: Mapping[str, Op], seconds: float) -> Rates:
    ops = {k: Op(v.calls - before.get(k, Op()).calls, v.items - before.get(k, Op()).items,
                 v.units - before.get(k, Op()).units) for k, v in after.items()}
    return Rates(seconds, {k: v for k, v in ops.items() if v.calls})


@dataclass
class Figures:
    shards: int
    hosts: int
    cold_start_s: float | None = None
    lost_hosts: list[str] = field(default_factory=list)
    failover_s: float | None = None
    split_s: float | None = None
    steady: Rates | None = None
    steady_after_split: Rates | None = None
    during_failover: Rates | None = None  # from the loss until every shard is owned again
    spread: tuple[int, int] = (0, 0)  # fewest and most shards on a host after the cold start
    balanced: bool = False
    double_starts: int = 0
    wall_s: float = 0.0
    wall_per_poll_ms: float = 0.0  # the whole fleet's agents' CPU per poll_s, steady state
    wall_leader_poll_ms: float = 0.0  # the leader's step, steady state
    wall_failover_leader_ms: float = 0.0  # the leader's poll that rebalanced after the loss


def assignment_ok(world: World) -> tuple[bool, tuple[int, int]]:
    """Does the stored assignment give every open shard a live host, ⌊S/N⌋ or ⌈S/N⌉ each
    (what ``balance`` promises), and equal ``balance`` of the store's own inputs?"""
    stored = dict(world.store._assignments)  # read past the counting: not the fleet's traffic
    current = {shard: h for (_, shard), h in stored.items()}
    live = sorted(h.host_id for h in world.live_hosts())
    needing = world.open_shards()
    counts = {h: 0 for h in live}
    for shard in needing:
        host = current.get(shard)
        if host in counts:
            counts[host] += 1
    s, n = len(needing), len(live)
    lo, hi = min(counts.values()), max(counts.values())
    fair = lo >= s // n and hi <= -(-s // n) and sum(counts.values()) == s
    stable = balance(live, needing, current) == {k: current[k] for k in needing if k in current}
    return fair and stable, (lo, hi)


def simulate(params: Params, steady_window_s: float = 60.0, bound_s: float = 600.0,
             split: bool = True) -> Figures:
    """Cold start, steady state, losing 10% of the hosts (the leader among them), doubling
    the shards; the figures of each."""
    wall0 = time.perf_counter()
    world = World(params)
    fig = Figures(params.shards, params.hosts)
    for i in range(params.hosts):
        world.add_host(host_name(i), after_s=params.boot_spread_s * i / max(1, params.hosts))
    fig.cold_start_s = world.run_until(lambda: world.all_owned(), bound_s)
    world.run_for(params.poll_s * 2)  # the last starts heartbeat; the counts settle
    fig.balanced, fig.spread = assignment_ok(world)

    before, agent_wall, lead_wall, lead_polls = (world.store.snapshot(), world.wall_agent_s,
                                                 world.wall_lead_s, world.leader_polls)
    world.run_for(steady_window_s)
    fig.steady = rates(before, world.store.snapshot(), steady_window_s)
    polls = steady_window_s / params.poll_s
    fig.wall_per_poll_ms = (world.wall_agent_s - agent_wall) / polls * 1000
    fig.wall_leader_poll_ms = (world.wall_lead_s - lead_wall) / max(
        1, world.leader_polls - lead_polls) * 1000

    # every tenth host, from the first: the leader (lowest id) is among them
    lose = max(1, round(params.hosts / 10))
    fig.lost_hosts = [host_name(i) for i in range(0, params.hosts, params.hosts // lose)][:lose]
    for h in fig.lost_hosts:
        world.kill_host(h)
    lead_wall, lead_polls = world.wall_lead_s, world.leader_polls
    before, t0 = world.store.snapshot(), world.t
    fig.failover_s = world.run_until(lambda: world.all_owned(), bound_s)
    fig.during_failover = rates(before, world.store.snapshot(), max(world.t - t0, 1e-9))
    fig.wall_failover_leader_ms = (world.wall_lead_s - lead_wall) / max(
        1, world.leader_polls - lead_polls) * 1000

    if split:
        children = world.split_all()
        fig.split_s = world.run_until(lambda: world.all_owned(children), bound_s)
        world.run_for(params.poll_s * 2)
        before = world.store.snapshot()
        world.run_for(steady_window_s)
        fig.steady_after_split = rates(before, world.store.snapshot(), steady_window_s)
    fig.double_starts = world.double_starts
    fig.wall_s = time.perf_counter() - wall0
    return fig


# -- the loader's cadence, by arithmetic --------------------------------------------------
@dataclass(frozen=True)
class Traffic:
    """Assumptions for the loader figures (none of them measured here)."""

    events_per_s: float = 1_000_000.0
    staged_bytes_per_event: float = 60.0  # gzipped CSV of a ~300 B JSON event (5:1)
    tables: int = 1  # tables each event lands in (page_views)
    slices: int = 8  # a typical cluster: 2 x ra3.4xlarge, 4 slices a node


@dataclass
class LoaderFigures:
    shards: int
    files_per_s: float  # staged files per second per table (one per batch)
    bytes_per_s: float
    trigger: str  # what fires the loads at this traffic
    load_every_s: float
    files_per_load: float
    mb_per_load: float
    mb_per_slice: float  # COPY bytes per slice per load
    kb_per_file: float
    commits_per_hour: float  # per table
    idle_commits_per_hour: float  # per table, when traffic is too low for the byte trigger
    ledger_wru_per_s: float  # the staged-file ledger in the control store, per table

    @property
    def ledger_cost_per_month(self) -> float:
        return self.ledger_wru_per_s * PRICE_PER_M_WRU * SECONDS_PER_MONTH / 1e6


def loader_figures(shards: int, traffic: Traffic = Traffic(),
                   settings: Settings | None = None) -> LoaderFigures:
    s = settings or Settings()
    c, lc = s.consumer, s.loader
    per_shard = traffic.events_per_s / shards
    # a batch closes at batch_max_records, batch_max_bytes or batch_max_age_s, whichever
    # comes first; each batch stages one file per table
    batches_per_shard = max(1 / c.batch_max_age_s, per_shard / c.batch_max_records,
                            per_shard * traffic.staged_bytes_per_event / c.batch_max_bytes)
    files_per_s = shards * batches_per_shard
    bytes_per_s = traffic.events_per_s * traffic.staged_bytes_per_event
    unit = lc.slices * 1024 * 1024  # the byte trigger is rounded up to slices x 1 MB
    min_bytes = -(-lc.min_bytes // unit) * unit
    by_bytes = min_bytes / bytes_per_s
    by_cap = lc.max_files_per_load / files_per_s  # the manifest fills up first?
    every = min(by_bytes, lc.max_interval_s, by_cap)
    trigger = ("max_files_per_load" if every == by_cap else
               "min_bytes" if every == by_bytes else "max_interval_s")
    files = files_per_s * every
    mb = bytes_per_s * every / 1e6
    return LoaderFigures(shards, files_per_s, bytes_per_s, trigger, every, files, mb,
                         mb / traffic.slices, mb * 1000 / files, 3600 / every * traffic.tables,
                         3600 / lc.max_interval_s * traffic.tables,
                         files_per_s * LEDGER_WRU_PER_FILE)


# -- the report ---------------------------------------------------------------------------
def _s(v: float | None) -> str:
    return "not within the bound" if v is None else f"{v:.1f} s"


def report(figs: Sequence[Figures], traffic: Traffic = Traffic(),
           p: Params = Params(0, 0)) -> str:
    """The figures as the Markdown tables of docs/scale.md; ``p``: the settings they ran with."""
    out: list[str] = []
    cols = " | ".join(f"{f.shards} shards × {f.hosts} hosts" for f in figs)
    rule = "|---" * (len(figs) + 1) + "|"

    def row(name: str, cells: Iterable[str]) -> None:
        out.append(f"| {name} | " + " | ".join(cells) + " |")

    out += ["### Time until every shard is owned (simulated seconds)", "",
            f"| scenario | {cols} |", rule]
    row("cold start (all hosts boot within 1 s)", (_s(f.cold_start_s) for f in figs))
    row("losing 10% of hosts, the leader among them", (
        f"{_s(f.failover_s)} ({len(f.lost_hosts)} lost)" for f in figs))
    row("doubling the shards by splits (every child owned)", (_s(f.split_s) for f in figs))
    row("shards per host after the cold start (fewest–most)",
        (f"{f.spread[0]}–{f.spread[1]}" for f in figs))
    row("assignment as `balance` promises", ("yes" if f.balanced else "NO" for f in figs))
    row("a shard with two consumer processes", (str(f.double_starts) for f in figs))
    out += ["", f"Defaults: agent.poll_s {p.poll_s:g}, agent.heartbeat_ttl_s "
            f"{p.heartbeat_ttl_s:g}, consumer.lease_ttl_s {p.lease_ttl_s:g}, "
            f"consumer.checkpoint_interval_s {p.checkpoint_s:g}, report_interval_s "
            f"{p.report_s:g}; a consumer holds its lease {p.start_delay_s:g} s after "
            f"supervisord starts it and releases it {p.drain_s:g} s after SIGTERM.", ""]

    for title, picked in (("steady state", [(f, f.steady) for f in figs]),
                          ("while taking over 10% of hosts",
                           [(f, f.during_failover) for f in figs]),
                          ("steady state after doubling the shards",
                           [(f, f.steady_after_split) for f in figs])):
        out += [f"### Control store, {title} (per second)", "",
                f"| operation | {cols} |", rule]
        names = sorted({n for _, r in picked if r for n in r.ops})
        for name in names:
            row(f"{name} (calls/s, RU/s)", (
                f"{r.per_s(name):,.1f}, {r.ops[name].units / r.seconds:,.0f}"
                if r and name in r.ops else "–" for _, r in picked))
        row("**reads/s, read request units/s**", (
            f"{r.reads_per_s:,.0f}, {r.rru_per_s:,.0f}" if r else "–" for _, r in picked))
        row("**writes/s, write request units/s**", (
            f"{r.writes_per_s:,.0f}, {r.wru_per_s:,.0f}" if r else "–" for _, r in picked))
        row("**DynamoDB on-demand, per month**", (
            f"${r.cost_per_month:,.0f}" if r else "–" for _, r in picked))
        out.append("")

    out += ["### Simulation cost (wall time of our code per simulated poll)", "",
            f"| | {cols} |", rule]
    row("all agents' steps per poll_s, steady state", (f"{f.wall_per_poll_ms:.1f} ms"
                                                      for f in figs))
    row("the leader's step, steady state", (f"{f.wall_leader_poll_ms:.2f} ms" for f in figs))
    row("the leader's steps while taking over 10% of hosts",
        (f"{f.wall_failover_leader_ms:.2f} ms" for f in figs))
    row("whole simulation", (f"{f.wall_s:.1f} s" for f in figs))
    out.append("")

    loads = [(f, loader_figures(f.shards, _traffic_for(f.shards, traffic))) for f in figs]
    out += ["### Loader, per table", "", f"| | {cols} |", rule]
    row("events/s (a shard takes at most 1,000 records/s)",
        (f"{_traffic_for(f.shards, traffic).events_per_s:,.0f}" for f, _ in loads))
    row("staged files/s (one per batch)", (f"{lf.files_per_s:,.0f}" for _, lf in loads))
    row("staged MB/s", (f"{lf.bytes_per_s / 1e6:,.1f}" for _, lf in loads))
    row("what fires a load", (f"`{lf.trigger}`" for _, lf in loads))
    row("a load (a COPY and its commit) every", (f"{lf.load_every_s:.1f} s" for _, lf in loads))
    row("files per load", (f"{lf.files_per_load:,.0f}" for _, lf in loads))
    row("average staged file", (f"{lf.kb_per_file:,.1f} KB" for _, lf in loads))
    row(f"COPY size per slice ({traffic.slices} slices)",
        (f"{lf.mb_per_slice:,.1f} MB" for _, lf in loads))
    row("warehouse commits per hour", (f"{lf.commits_per_hour:,.0f}" for _, lf in loads))
    row("... at low traffic (`max_interval_s`)",
        (f"{lf.idle_commits_per_hour:,.0f}" for _, lf in loads))
    row("the ledger in DynamoDB: write units/s, per month",
        (f"{lf.ledger_wru_per_s:,.0f}, ${lf.ledger_cost_per_month:,.0f}" for _, lf in loads))
    out.append("")
    return "\n".join(out)


def _traffic_for(shards: int, traffic: Traffic) -> Traffic:
    """1 M events/s, or what the stream can take: Kinesis accepts 1,000 records/s a shard."""
    return Traffic(min(traffic.events_per_s, shards * 1000.0), traffic.staged_bytes_per_event,
                   traffic.tables, traffic.slices)


def _size(text: str) -> tuple[int, int]:
    shards, _, hosts = text.partition("x")
    return int(shards), int(hosts)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m shardline.fleet.simulate",
                                 description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--size", action="append", type=_size, metavar="SHARDSxHOSTS",
                    help="fleet size (repeatable); default: 64x4 and 4096x200")
    ap.add_argument("--start-delay", type=float, default=0.0,
                    help="seconds from supervisord's start to the consumer's lease")
    ap.add_argument("--steady-window", type=float, default=60.0,
                    help="simulated seconds of steady state to count over")
    args = ap.parse_args(argv)
    sizes: list[tuple[int, int]] = args.size or [(64, 4), (4096, 200)]
    figs = []
    for shards, hosts in sizes:
        print(f"simulating {shards} shards x {hosts} hosts ...", file=sys.stderr, flush=True)
        figs.append(simulate(Params(shards, hosts, start_delay_s=args.start_delay),
                             steady_window_s=args.steady_window))
    print(report(figs, p=Params(0, 0, start_delay_s=args.start_delay)))
    return 0 if all(f.balanced and not f.double_starts for f in figs) else 1


if __name__ == "__main__":
    sys.exit(main())
