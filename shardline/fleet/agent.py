"""The per-host agent's loop: one consumer process per shard, across many hosts, unattended.

Every ``agent.poll_s`` an agent heartbeats its host into the control store (``heartbeat``
with ``info["stream"]``, so agents of other streams are not counted), reads the live hosts
of its stream, and the *leader* (the lowest live host id) lists the stream's shards, drops
those at SHARD_END, computes ``assign.balance`` and writes the changes to the control store.
Every agent, the leader included, then runs exactly the shards the store assigns to it.

Why a leader writes, rather than every agent computing its own part: agents see the
live hosts at slightly different moments (heartbeats expire at different instants for
each of them), so "everyone computes" would, for a moment, have two hosts that both
think a shard is theirs and start (and stop) consumers for it. With one writer the store
holds one assignment at a time; followers never act on their own view of the fleet. Two
leaders can only coexist while the old lowest id's heartbeat is about to expire; both
compute from the same stored assignment, so they write the same answer or converge within
one heartbeat TTL, and the leases keep even that moment safe. Leadership needs no election:
it follows from the heartbeats, and passes on when the leader's heartbeat expires. The
leader's heartbeat carries a digest of the assignment it wrote (``info["assigned"]``), and a
follower reads the assignment only when that digest changed: the fleet's reads then grow
with the hosts, not with shards x hosts (docs/scale.md).

Moving a shard gracefully: the old owner's agent sees the shard is no longer its own and
asks supervisord to stop that consumer (SIGTERM: stop reading, finish in-flight batches,
checkpoint, release the lease); the new owner's agent adds the program at once but starts
it only when (1) no other live host lists the shard among the consumers running there (each
heartbeat carries that list, ``info["running"]``, and an agent heartbeats at once when one
of its consumers has stopped) and (2) the shard's lease is free (released, or expired
because its host died). (1) covers an old consumer that is still starting and has not taken
the lease yet, or is between two restarts; (2) covers a host that died. So a moved shard
never has two consumer processes, and the new consumer never sits out a TTL behind a lease
that was released: a pending start is re-checked every ``HANDOFF_POLL_S``. Programs are
``autostart=false``, so a config re-read after a supervisord restart starts nothing the fleet
has since given to another host, and a consumer a person stopped (``supervisorctl stop``,
e.g. for a replay) stays stopped:
the agent only ever starts a program that supervisord has never started.

``step(now)`` never sleeps; it returns how long the caller may wait. Transient failures
(control store, warehouse, Kinesis, supervisord) are logged and retried at the next step:
the agent keeps its consumers as they are while it cannot see the fleet.

supervisord itself gone is not transient for this host: it puts every program in a process
group of its own, so when it dies alone (OOM killer, a crash) the consumers run on as
orphans that nothing restarts, and an agent that went on heartbeating would keep (and, as
leader, hand itself) shards it cannot start. So every poll the agent asks supervisord for
its state; once supervisord, having answered before, has not answered for
``SUPERVISORD_LOST_POLLS`` polls in a row, the agent winds down: it removes its host from the
control store (the leader, or the next lowest id, reassigns its shards at its next poll),
stops polling the fleet, sends the consumers supervisord last reported each one SIGTERM
(their graceful stop: finish in flight, checkpoint, release the lease, so the new owners
start without waiting out a lease), SIGKILLs the ones still there after their
``stopwaitsecs``, and then ``exit_code`` is set: the process exits with it, and a
supervisord started again begins from a clean host (programs are ``autostart=false``).
"""
from __future__ import annotations

import hashlib
import os
import signal
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Mapping, Protocol, Sequence

from shardline.records.control import Checkpoint, Lease
from shardline.controlstore.base import ControlStore
from shardline.errors import RetriableError
from shardline.exitcodes import ExitCode
from shardline.fleet.assign import balance
from shardline.fleet.supervisor import Proc, Unreachable
from shardline.kinesis import ShardInfo
from shardline.logs import ContextLogger, get_logger


def assignment_digest(assignment: Mapping[str, str]) -> str:
    """A short content hash of a stream's assignment (shard -> host): equal digests, equal
    assignments, whoever computed them."""
    text = "\n".join(f"{shard}={host}" for shard, host in sorted(assignment.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]

HANDOFF_POLL_S = 0.5  # re-check a start that waits for the previous owner's lease
# Polls in a row without an answer from supervisord before the agent winds down: one miss
# could be a moment's hiccup, two mean supervisord has been gone for a whole poll.
SUPERVISORD_LOST_POLLS = 2
# A start that waits re-reads the leases it waits for every HANDOFF_POLL_S on every waiting
# host: up to this many one by one, more as the stream's whole lease table (a cold start).
# Reading the whole table for the one or two shards a host takes over from a lost one made
# a failover's reads grow with shards x hosts (docs/scale.md).
LEASE_GETS_MAX = 8


class LeaseView(Protocol):
    """The consumers' leases and checkpoints as the agent reads them: the control store's
    methods of these names (a ``ControlStore`` in production)."""

    def leases(self, stream: str) -> list[Lease]: ...
    def get_lease(self, stream: str, shard_id: str) -> Lease | None: ...
    def checkpoints(self, stream: str) -> dict[str, Checkpoint]: ...
    def now(self) -> datetime: ...


class Programs(Protocol):
    """This host's supervisord as the agent drives it (``shardline.fleet.supervisor``)."""

    def state(self) -> str: ...
    def processes(self) -> dict[str, Proc]: ...
    def reload(self) -> tuple[list[str], list[str], list[str]]: ...
    def add(self, group: str) -> None: ...
    def remove(self, group: str) -> bool: ...
    def start(self, group: str) -> None: ...
    def stop(self, group: str) -> None: ...


class IncludeFile:
    """The supervisord include file holding this host's consumer programs."""

    def __init__(self, path: str | os.PathLike[str], render: Callable[[list[str]], str]):
        self.path = Path(path)
        self.render = render

    def write(self, shards: Sequence[str]) -> bool:
        """Write the programs for ``shards``; False if the file already says exactly that."""
        text = self.render(sorted(shards))
        try:
            if self.path.read_text(encoding="utf-8") == text:
                return False
        except FileNotFoundError:
            pass
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path)
        return True


class HostProcesses:
    """This host's processes, for the consumers a dead supervisord can no longer stop."""

    def is_program(self, pid: int, shard: str) -> bool:
        """Is ``pid`` still the consumer of ``shard`` that supervisord started? supervisord
        makes each program the leader of a process group of its own, and its command line
        names the shard: a pid reused since is unlikely to be both."""
        try:
            if os.getpgid(pid) != pid:
                return False
            return shard.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
        except ProcessLookupError:
            return False
        except OSError:  # no /proc here: the process group has to do
            return True

    def signal(self, pid: int, signum: int) -> None:
        """Signal the program's process group, as supervisord does (``stopasgroup``)."""
        try:
            os.killpg(pid, signum)
        except ProcessLookupError:
            pass

    def alive(self, pid: int) -> bool:
        """False once it exited, also while it waits as a zombie for init to reap it."""
        try:
            os.kill(pid, 0)
            stat = Path(f"/proc/{pid}/stat").read_text()
        except ProcessLookupError:
            return False
        except OSError:
            return True
        return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class Agent:
    """One host's agent for one stream. ``store``: the control store (heartbeats,
    assignments); ``leases``: where consumers keep leases and checkpoints (``leases(stream)``,
    ``checkpoints(stream)``, ``now()``: the same control store in production; a separate
    object only in tests); ``list_shards``: ListShards of the stream;
    ``supervisor``: this host's supervisord (``shardline.fleet.supervisor.Supervisor``);
    ``stop_wait_s``: the consumer programs' ``stopwaitsecs`` and ``processes``: this host's
    processes, both for stopping the consumers of a supervisord that died; ``on_lost``:
    called then, before the one line saying so (to log somewhere else than its pipe)."""

    def __init__(self, *, stream: str, host_id: str, store: ControlStore, leases: LeaseView,
                 list_shards: Callable[[], list[ShardInfo]], supervisor: Programs,
                 include: IncludeFile, poll_s: float, heartbeat_ttl_s: float,
                 consumer_prefix: str = "consumer-", log: ContextLogger | None = None,
                 stop_wait_s: float = 30.0, processes: HostProcesses | None = None,
                 on_lost: Callable[[], None] | None = None):
        self.stream, self.host_id = stream, host_id
        self.store, self.leases, self.list_shards = store, leases, list_shards
        self.supervisor, self.include = supervisor, include
        self.poll_s, self.heartbeat_ttl_s = poll_s, heartbeat_ttl_s
        self.prefix = consumer_prefix
        self.log = log or get_logger("agent", stream=stream, host=host_id)
        self.mine: list[str] | None = None  # None until the first assignment read
        self.leader: str | None = None
        # The leader publishes a digest of the assignment it wrote in its heartbeat
        # (``info["assigned"]``); a follower re-reads the assignment only when that digest
        # differs from the one it read last. Every agent reading every shard's assignment
        # every poll was the fleet's largest control-store read (S x H items per poll).
        self.assigned: str | None = None  # as leader: the digest of what the store holds
        self.read: str | None = None  # as follower: the leader's digest when we last read
        self.next_poll: float | None = None
        # On a cold start (nothing assigned yet) a new leader waits one heartbeat TTL: by
        # then every host started with it has heartbeated, so the first host up does not
        # take every shard only to hand most of them over again. With an assignment in the
        # store it leads at once (a dead host's shards must not wait for a fresh leader).
        self.started_at: float | None = None
        self.now = 0.0
        self.published: list[str] | None = None  # running consumers in our last heartbeat
        self.running: list[str] = []  # shards whose consumer may hold or take the lease
        self.unsettled = False  # a group is still stopping or could not be removed yet
        self._waiting_for: dict[str, str] = {}  # group -> what it waits for (log once)
        self.stop_wait_s = stop_wait_s
        self.processes = processes or HostProcesses()
        self.on_lost = on_lost
        self.seen: dict[str, Proc] = {}  # our groups as supervisord last reported them
        self.supervisord_answered = False  # has it ever? (before that nothing of ours runs)
        self.unanswered_polls = 0  # polls in a row since supervisord last answered
        self.unanswered = ""  # why the last poll got no answer
        self.lost_at: float | None = None  # when we gave supervisord up and began winding down
        self.orphans: dict[int, str] = {}  # pid -> shard of the consumers left running
        self.killed = False  # SIGKILL sent to the orphans that outlived their stop wait
        self.deregistered = False
        self.exit_code: ExitCode | None = None  # set when the process should exit with it

    # -- the loop ---------------------------------------------------------------
    def step(self, now: float) -> float:
        """One turn; returns how long the caller may sleep before the next."""
        self.now = now
        if self.started_at is None:
            self.started_at = now
        if self.lost_at is not None:
            return self._wind_down()
        if self.next_poll is None or now >= self.next_poll:
            self.next_poll = now + self.poll_s
            if self._supervisord_lost():
                return self._wind_down()
            try:
                self._poll()
            except RetriableError as exc:
                self.log.warning("fleet poll failed, will retry: %s", exc)
        busy = False
        if self.mine is not None:
            try:
                busy = self._reconcile()
            except RetriableError as exc:
                self.log.warning("could not update this host's consumers, will retry: %s", exc)
        wait = max(0.0, self.next_poll - now)
        return min(wait, HANDOFF_POLL_S) if busy else wait

    def leave(self) -> None:
        """On SIGTERM. If supervisord is shutting down too (it stops the consumers itself),
        deregister so the others take the shards over as soon as the leases are released;
        if only the agent restarts, keep the registration (it lapses after the TTL anyway)
        so a quick restart moves nothing."""
        try:
            state = self.supervisor.state()
        except RetriableError:
            state = "UNREACHABLE"
        if state == "RUNNING":
            self.log.info("stopping; supervisord keeps running, so the consumers stay")
            return
        try:
            self.store.remove_host(self.host_id)
            self.log.info("stopping with supervisord (%s): host removed from the fleet", state)
        except RetriableError as exc:
            self.log.warning("could not remove the host (its heartbeat expires in %.0fs): %s",
                             self.heartbeat_ttl_s, exc)

    # -- supervisord gone ----------------------------------------------------------
    def _supervisord_lost(self) -> bool:
        """Ask supervisord for its state (once a poll, so that an agent with nothing to
        reconcile notices too); True once it stayed silent ``SUPERVISORD_LOST_POLLS`` polls in
        a row after having answered before. One that never answered started nothing of
        ours, so the agent only keeps retrying (e.g. run outside supervisord, started first)."""
        try:
            self.supervisor.state()
        except Unreachable as exc:
            if not self.supervisord_answered:
                return False
            self.unanswered_polls += 1
            self.unanswered = str(exc)
            return self.unanswered_polls >= SUPERVISORD_LOST_POLLS
        except RetriableError:
            pass  # a fault is an answer: supervisord is there
        self.supervisord_answered = True
        self.unanswered_polls = 0
        return False

    def _wind_down(self) -> float:
        """Leave the fleet and stop the orphaned consumers; ``exit_code`` once they are gone.
        Returns how long the caller may wait (never sleeps: the orphans are polled)."""
        if self.exit_code is not None:
            return self.poll_s
        if self.lost_at is None:
            self.lost_at = self.now
            if self.on_lost is not None:
                self.on_lost()
            # pids from supervisord's last report rather than from the leases: a lease owner
            # names the machine (not this agent's host id, and several hosts may share one),
            # and a consumer still starting or backing off holds no lease yet but will take one
            self.orphans = {p.pid: g.removeprefix(self.prefix) for g, p in self.seen.items()
                            if p.running and p.pid
                            and self.processes.is_program(p.pid, g.removeprefix(self.prefix))}
            self.log.error(
                "supervisord has not answered for %d polls (%s): this host leaves the fleet, "
                "stops its %d orphaned consumer(s) (SIGTERM%s, SIGKILL after %.0fs) and exits %d",
                self.unanswered_polls, self.unanswered, len(self.orphans),
                "".join(f" {s}:{pid}" for pid, s in sorted(self.orphans.items(),
                                                           key=lambda o: o[1])),
                self.stop_wait_s, ExitCode.UNAVAILABLE)
            for pid, shard in sorted(self.orphans.items(), key=lambda o: o[1]):
                # a consumer supervisord was already stopping has had its SIGTERM: a second
                # one would force it out without its checkpoint
                if self.seen[self.prefix + shard].state != "STOPPING":
                    self.processes.signal(pid, signal.SIGTERM)
        if not self.deregistered:
            # at once rather than letting the heartbeat lapse: the others reassign our shards
            # at their next poll, and each new consumer starts when ours releases its lease
            try:
                self.store.remove_host(self.host_id)
                self.deregistered = True
            except RetriableError:
                pass  # retried next step; our heartbeat lapses after its TTL regardless
        left = [pid for pid in self.orphans if self.processes.alive(pid)]
        if left and not self.killed and self.now - self.lost_at >= self.stop_wait_s:
            for pid in left:  # what supervisord does after stopwaitsecs (killasgroup)
                self.processes.signal(pid, signal.SIGKILL)
            self.killed = True
            self.log.error("consumer(s) %s still running %.0fs after SIGTERM: SIGKILL",
                           ", ".join(self.orphans[p] for p in left), self.stop_wait_s)
        if left:
            return HANDOFF_POLL_S
        self.exit_code = ExitCode.UNAVAILABLE
        return 0.0

    # -- the fleet --------------------------------------------------------------
    def _heartbeat(self) -> None:
        """Register this host; ``info["running"]`` lists the shards whose consumer runs here
        (or starts, backs off, stops): a new owner starts nothing while it is listed."""
        running = list(self.running)
        info = {"stream": self.stream, "pid": str(os.getpid()), "running": ",".join(running)}
        if self.assigned is not None:
            info["assigned"] = self.assigned
        self.store.heartbeat(self.host_id, self.heartbeat_ttl_s, info)
        self.published = running

    def _poll(self) -> None:
        self._heartbeat()
        live = [h for h in self.store.live_hosts() if h.info.get("stream") == self.stream]
        hosts = sorted({h.host_id for h in live} | {self.host_id})
        if hosts[0] != self.leader:
            self.log.info("leader is %s (live hosts: %s)",
                          "this host" if hosts[0] == self.host_id else hosts[0], ", ".join(hosts))
            self.leader = hosts[0]
        leading = self.leader == self.host_id
        if not leading:
            self.assigned = None  # a former leader's digest no longer vouches for the store
            advertised = next((h.info.get("assigned") for h in live
                               if h.host_id == self.leader), None)
            if advertised is not None and advertised == self.read and self.mine is not None:
                return  # the assignment we read last is still the leader's
            self.read = advertised
        current = self.store.assignments(self.stream)
        fresh = self.now - (self.started_at or self.now) < self.heartbeat_ttl_s
        if leading and (current or not fresh):
            current = self._lead(hosts, current)
            digest = assignment_digest(current)
            if digest != self.assigned:
                self.assigned = digest
                self._heartbeat()  # the followers re-read at their next poll, not one later
        mine = sorted(s for s, h in current.items() if h == self.host_id)
        if mine != self.mine:
            self.log.info("assigned %d shard(s): %s", len(mine), ", ".join(mine) or "-")
            self.mine = mine

    def _lead(self, hosts: list[str], current: dict[str, str]) -> dict[str, str]:
        """Write the balanced assignment; returns it."""
        shards = self.list_shards()
        finished = {s for s, cp in self.leases.checkpoints(self.stream).items() if cp.shard_end}
        # a closed shard keeps a consumer until it reached SHARD_END; a child gets one at
        # once (its consumer waits for the parents itself)
        needing = [s.shard_id for s in shards if s.is_open or s.shard_id not in finished]
        closed = {s.shard_id for s in shards if s.closed}
        target = balance(hosts, needing, current, prefer_keep=closed)
        for shard in sorted(set(current) | set(target)):
            new = target.get(shard)
            if current.get(shard) != new:
                self.store.assign(self.stream, shard, new)
                self.log.info("shard %s: %s -> %s", shard, current.get(shard) or "-",
                              new or "- (at SHARD_END or gone)")
        return target

    # -- this host's supervisord ------------------------------------------------
    def _groups(self) -> dict[str, Proc]:
        groups = {g: p for g, p in self.supervisor.processes().items() if g.startswith(self.prefix)}
        self.seen = groups  # what to stop should supervisord die: its programs outlive it
        return groups

    def _ours(self, names: Iterable[str]) -> list[str]:
        return sorted(n for n in names if n.startswith(self.prefix))

    def _reconcile(self) -> bool:
        """Make supervisord run this host's shards; True while something is still moving."""
        want = {self.prefix + s: s for s in self.mine or ()}
        rewritten = self.include.write(list(want.values()))
        groups = self._groups()
        if rewritten or self.unsettled or set(groups) != set(want):
            self._apply(groups)
            groups = self._groups()
        self.running = sorted(g.removeprefix(self.prefix) for g, p in groups.items() if p.running)
        if self.published is not None and set(self.published) - set(self.running):
            self._heartbeat()  # a consumer stopped here: tell its new owner now, not next poll
        return self._start_free(want, groups) or self.unsettled

    def _apply(self, groups: dict[str, Proc]) -> None:
        """What ``supervisorctl update`` does for our groups, without blocking on a stop."""
        added, changed, removed = self.supervisor.reload()
        self.unsettled = False
        for name in self._ours(added):
            self.supervisor.add(name)
            self.log.info("added %s (starts once the shard's lease is free)", name)
        for name in self._ours(removed) + self._ours(changed):
            proc = groups.get(name)
            if proc is not None and proc.running:
                if proc.state != "STOPPING":
                    self.supervisor.stop(name)
                    self.log.info("stopping %s (SIGTERM: drain, checkpoint, release the lease)",
                                  name)
                self.unsettled = True
            elif self.supervisor.remove(name):
                self.log.info("removed %s", name)
            else:
                self.unsettled = True

    def _start_free(self, want: dict[str, str], groups: dict[str, Proc]) -> bool:
        """Start the programs supervisord never started whose shard lease is free; True if
        one still waits for the previous owner."""
        new = [n for n in sorted(want) if n in groups and groups[n].state == "STOPPED"
               and not groups[n].started]
        if not new:
            self._waiting_for.clear()
            return False
        elsewhere = {shard: h.host_id for h in self.store.live_hosts()
                     if h.host_id != self.host_id and h.info.get("stream") == self.stream
                     for shard in filter(None, h.info.get("running", "").split(","))}
        if len(new) <= LEASE_GETS_MAX:
            leases = {want[n]: lease for n in new
                      if (lease := self.leases.get_lease(self.stream, want[n])) is not None}
        else:
            leases = {lease.shard_id: lease for lease in self.leases.leases(self.stream)}
        now = self.leases.now()
        waiting = False
        free: list[str] = []
        for name in new:
            shard = want[name]
            lease = leases.get(shard)
            holder = None
            if shard in elsewhere:
                holder = f"a consumer still running on host {elsewhere[shard]}"
            elif lease is not None and lease.live(now):
                holder = f"{lease.owner} (lease until {lease.expires_at:%H:%M:%S} UTC)"
            if holder is not None:
                if self._waiting_for.get(name) != holder:
                    self.log.info("%s waits: shard %s is held by %s", name, shard, holder)
                    self._waiting_for[name] = holder
                waiting = True
                continue
            free.append(name)
        if free:
            # listed as running here before they start, so that a host this shard moves to
            # next waits for them (a move in the instant between the two is left to the lease)
            self.running = sorted(set(self.running) | {want[n] for n in free})
            self._heartbeat()
        for name in free:
            self.supervisor.start(name)
            self._waiting_for.pop(name, None)
            self.log.info("started %s", name)
        if free:
            self._groups()  # their pids, should supervisord die before the next poll
        return waiting
