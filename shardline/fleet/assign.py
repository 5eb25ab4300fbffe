"""Which host runs which shard's consumer: balanced, sticky, deterministic.

``balance(hosts, shards, current)`` gives every shard that needs a consumer exactly one of
the live hosts so that each host holds ⌊S/N⌋ or ⌈S/N⌉ shards, moving as few shards as
possible away from the host they are on now. It is a pure function of its inputs (sorted
internally, ties broken by id), so any agent computing it from the same store contents
gets the same answer.

Why it moves the fewest shards: a balanced assignment gives ``S mod N`` hosts room for
⌈S/N⌉ and the rest ⌊S/N⌋. A host over its room must give up the excess and nothing else
has to move, so the moves are Σ max(0, kept − room); handing the larger rooms to the hosts
that hold the most already minimises that sum. Shards without a live holder (new shards,
children of a reshard, shards of a host that died) and the excess then go, one at a time
in id order, to the least-loaded host with room (lowest id on ties).

``prefer_keep`` names shards a host should keep rather than give up when it is over its
room, e.g. closed parents still draining: moving one would only cost a second drain.
"""
from __future__ import annotations

import heapq
from typing import Collection, Iterable, Mapping


def room(hosts: Iterable[str], shards: int, kept: Mapping[str, int]) -> dict[str, int]:
    """host -> how many shards it may hold: ⌈S/N⌉ for the ``S mod N`` hosts holding the
    most now (lowest id on ties), ⌊S/N⌋ for the others."""
    order = sorted(set(hosts), key=lambda h: (-kept.get(h, 0), h))
    if not order:
        return {}
    base, extra = divmod(shards, len(order))
    return {h: base + (1 if i < extra else 0) for i, h in enumerate(order)}


def balance(hosts: Iterable[str], shards: Iterable[str], current: Mapping[str, str],
            prefer_keep: Collection[str] = ()) -> dict[str, str]:
    """shard -> host for every shard in ``shards`` (empty when there is no host).

    ``current`` is the assignment in force (shard -> host); entries naming a host that is
    not live, or a shard that needs no consumer any more, are ignored.
    """
    live = sorted(set(hosts))
    wanted = sorted(set(shards))
    if not live:
        return {}
    held: dict[str, list[str]] = {h: [] for h in live}
    for shard in wanted:
        host = current.get(shard)
        if host in held:
            held[host].append(shard)
    rooms = room(live, len(wanted), {h: len(s) for h, s in held.items()})
    keep_first = set(prefer_keep)
    out: dict[str, str] = {}
    free: list[str] = [s for s in wanted if current.get(s) not in held]
    for host in live:
        mine = sorted(held[host], key=lambda s: (s not in keep_first, s))
        for shard in mine[:rooms[host]]:
            out[shard] = host
        free.extend(mine[rooms[host]:])
    # the least-loaded host with room, lowest id on ties, from a heap: scanning every host
    # for every free shard made a cold start O(S x H) (0.5 s at 4,096 x 200, 7 s at
    # 16,384 x 1,000, in the leader's loop; docs/scale.md)
    with_room = [(min(len(held[h]), rooms[h]), h) for h in live if len(held[h]) < rooms[h]]
    heapq.heapify(with_room)
    for shard in sorted(free):
        load, host = heapq.heappop(with_room)
        out[shard] = host
        if load + 1 < rooms[host]:
            heapq.heappush(with_room, (load + 1, host))
    return out


def moves(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """Shards that had a host in ``before`` and another one in ``after`` (new ones not counted)."""
    return sorted(s for s, h in after.items() if s in before and before[s] != h)
