"""What the campaign does when: a pure, seeded plan (so a failing seed replays the same run).

Kills come every ``kill_every_s`` on average (0.5x-1.5x jitter) and rotate over the
process kinds (``kinds``: the three of the fleet, plus the lake loader when the lake is on)
in shuffled rounds, so each kind gets its share. The
infrastructure faults come in rounds (one per ``infra_round_s``, at least one): a
gearmand restart, a PostgreSQL outage and an S3 outage, each at a jittered point of its
round; S3 outages alternate between "refuse" (the S3 relay resets connections) and
"freeze" (the S3 server is SIGSTOPped: requests hang). Kinesis fault storms (every call
of a kind faulted for a few seconds) come every ``storm_every_s`` on average.

The sources beside the producer (``source_kinds``: the tailer, the relay) are SIGKILLed
every ``source_kill_every_s`` on average, in rounds of their own drawn from a random
stream of their own, so the fleet's kills keep their times and shares.

One ``reprocess`` action at ``reprocess_at`` of the run (None: none): the campaign deploys
another transform to the running fleet and runs ``shardline reprocess --all-shards
--trim-horizon`` while the kills and faults go on.

With several hosts (``--hosts``, agent mode) ``host_crash_every_s`` adds whole-host crashes:
one host's supervisord and everything under it SIGKILLed, booted again ``seconds`` later. They
draw from a random stream of their own, so every other action keeps its time.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

KILL_KINDS = ("consumer", "stage-worker", "loader")
STORM_KINDS = ("throttled", "expired", "500", "drop", "slow")


@dataclass(frozen=True, order=True)
class Action:
    at_s: float
    # kill | gearmand_restart | postgres_down | postgres_up | s3_down | s3_up | storm |
    # host_crash | reprocess
    what: str
    arg: str = ""        # kill: process kind; s3_down: refuse | freeze; storm: fault kind
    seconds: float = 0.0  # storm length, gearmand downtime, host downtime


def plan(seed: int, duration_s: float, *, kill_every_s: float = 3.0,
         outage_s: tuple[float, float] = (3.0, 6.0), infra_round_s: float = 150.0,
         storm_every_s: float = 20.0, host_crash_every_s: float = 0.0,
         host_down_s: tuple[float, float] = (5.0, 15.0),
         reprocess_at: float | None = 0.55,
         kinds: tuple[str, ...] = KILL_KINDS, source_kinds: tuple[str, ...] = (),
         source_kill_every_s: float = 6.0) -> list[Action]:
    """Every action of a campaign of ``duration_s`` seconds, sorted by time."""
    rng = random.Random(f"chaos-plan-{seed}")
    actions: list[Action] = []

    t, todo = 0.0, []
    while True:
        t += kill_every_s * rng.uniform(0.5, 1.5)
        if t >= duration_s:
            break
        if not todo:
            todo = list(kinds)
            rng.shuffle(todo)
        actions.append(Action(round(t, 3), "kill", todo.pop()))

    rounds = max(1, int(duration_s // infra_round_s))
    width = duration_s / rounds
    s3_modes = ("refuse", "freeze")
    for r in range(rounds):
        start = r * width
        at = start + width * rng.uniform(0.15, 0.25)
        actions.append(Action(round(at, 3), "gearmand_restart", seconds=rng.uniform(0.5, 2.0)))
        at = start + width * rng.uniform(0.45, 0.55)
        down = rng.uniform(*outage_s)
        actions += [Action(round(at, 3), "postgres_down"),
                    Action(round(at + down, 3), "postgres_up")]
        at = start + width * rng.uniform(0.7, 0.8)
        down = rng.uniform(*outage_s)
        actions += [Action(round(at, 3), "s3_down", s3_modes[r % 2]),
                    Action(round(at + down, 3), "s3_up", s3_modes[r % 2])]

    t = 0.0
    while True:
        t += storm_every_s * rng.uniform(0.5, 1.5)
        if t >= duration_s:
            break
        actions.append(Action(round(t, 3), "storm", rng.choice(STORM_KINDS),
                              seconds=round(rng.uniform(2.0, 4.0), 3)))

    hosts_rng = random.Random(f"chaos-plan-hosts-{seed}")
    t = 0.0
    while host_crash_every_s > 0:
        t += host_crash_every_s * hosts_rng.uniform(0.5, 1.5)
        if t >= duration_s:
            break
        actions.append(Action(round(t, 3), "host_crash",
                              seconds=round(hosts_rng.uniform(*host_down_s), 3)))
    sources_rng = random.Random(f"chaos-plan-sources-{seed}")
    t, todo = 0.0, []
    while source_kinds:
        t += source_kill_every_s * sources_rng.uniform(0.5, 1.5)
        if t >= duration_s:
            break
        if not todo:
            todo = list(source_kinds)
            sources_rng.shuffle(todo)
        actions.append(Action(round(t, 3), "kill", todo.pop()))
    if reprocess_at is not None:
        actions.append(Action(round(duration_s * reprocess_at, 3), "reprocess"))
    return sorted(actions)
