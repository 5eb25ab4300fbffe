"""The assignment of shards to hosts: balanced, sticky, every shard once, deterministic.

Property-style: many random cases (fixed seeds), checked against an exhaustive search of
every balanced assignment for the small ones, so "fewest moves" is measured, not assumed.
"""
from __future__ import annotations

import itertools
import random

import pytest

from shardline.fleet.assign import balance, moves, room

SHARDS = [f"shardId-{i:012d}" for i in range(40)]
HOSTS = [f"h{i}" for i in range(8)]


def counts(assignment: dict[str, str], hosts) -> dict[str, int]:
    out = {h: 0 for h in hosts}
    for h in assignment.values():
        out[h] += 1
    return out


def check_balanced(assignment, hosts, shards) -> None:
    assert sorted(assignment) == sorted(set(shards)), "every shard exactly once"
    assert set(assignment.values()) <= set(hosts), "only live hosts"
    if hosts:
        lo, hi = divmod(len(set(shards)), len(set(hosts)))
        hi = lo + (1 if hi else 0)
        assert all(lo <= n <= hi for n in counts(assignment, set(hosts)).values()), \
            counts(assignment, set(hosts))


def kept(before, after) -> int:
    return sum(1 for s, h in after.items() if before.get(s) == h)


def best_kept(hosts, shards, current) -> int:
    """Exhaustive: the most shards any balanced assignment leaves where they are."""
    best = -1
    lo, rem = divmod(len(shards), len(hosts))
    for combo in itertools.product(hosts, repeat=len(shards)):
        c = {h: 0 for h in hosts}
        for h in combo:
            c[h] += 1
        if all(lo <= n <= lo + (1 if rem else 0) for n in c.values()):
            best = max(best, sum(1 for s, h in zip(shards, combo, strict=True)
                                 if current.get(s) == h))
    return best


def random_case(rnd: random.Random, max_hosts=8, max_shards=40):
    hosts = rnd.sample(HOSTS, rnd.randint(1, max_hosts))
    shards = rnd.sample(SHARDS, rnd.randint(0, max_shards))
    anyone = HOSTS + ["dead-1", "dead-2"]
    current = {s: rnd.choice(anyone) for s in rnd.sample(SHARDS, rnd.randint(0, max_shards))}
    return hosts, shards, current


def test_spread_from_nothing_is_even_and_in_id_order():
    out = balance(["h2", "h1", "h3"], SHARDS[:6], {})
    assert counts(out, ["h1", "h2", "h3"]) == {"h1": 2, "h2": 2, "h3": 2}
    assert out == {SHARDS[0]: "h1", SHARDS[1]: "h2", SHARDS[2]: "h3",
                   SHARDS[3]: "h1", SHARDS[4]: "h2", SHARDS[5]: "h3"}


def test_no_hosts_no_assignment():
    assert balance([], SHARDS[:3], {SHARDS[0]: "h1"}) == {}


def test_host_dies_only_its_shards_move_and_to_the_survivors():
    before = balance(["h1", "h2", "h3"], SHARDS[:6], {})
    after = balance(["h2", "h3"], SHARDS[:6], before)
    assert counts(after, ["h2", "h3"]) == {"h2": 3, "h3": 3}
    for shard, host in before.items():
        if host != "h1":
            assert after[shard] == host, "a survivor's shard moved"


def test_host_joins_takes_its_share_only_from_the_others():
    before = balance(["h1", "h2", "h3"], SHARDS[:8], {})
    after = balance(["h1", "h2", "h3", "h4"], SHARDS[:8], before)
    assert counts(after, ["h1", "h2", "h3", "h4"]) == {"h1": 2, "h2": 2, "h3": 2, "h4": 2}
    moved = moves(before, after)
    assert len(moved) == 2 and all(after[s] == "h4" for s in moved)


def test_split_children_are_assigned_and_finished_parent_dropped():
    six = SHARDS[:6]
    before = balance(["h1", "h2", "h3"], six, {})
    parent, children = six[0], SHARDS[6:8]
    during = balance(["h1", "h2", "h3"], six + children, before, prefer_keep={parent})
    assert during[parent] == before[parent], "the draining parent stays with its host"
    check_balanced(during, ["h1", "h2", "h3"], six + children)
    after = balance(["h1", "h2", "h3"], six[1:] + children, during)
    assert parent not in after
    assert moves(during, after) == [], "dropping a finished parent moves nothing"


def test_prefer_keep_decides_which_shard_an_overloaded_host_gives_up():
    current = {s: "h1" for s in SHARDS[:4]}
    out = balance(["h1", "h2"], SHARDS[:4], current, prefer_keep={SHARDS[2], SHARDS[3]})
    assert {s for s, h in out.items() if h == "h1"} == {SHARDS[2], SHARDS[3]}


def test_room_gives_the_extra_slots_to_the_fullest_hosts():
    assert room(["a", "b", "c"], 7, {"c": 5, "b": 1}) == {"c": 3, "a": 2, "b": 2}
    assert room(["a", "b", "c"], 7, {}) == {"a": 3, "b": 2, "c": 2}


@pytest.mark.parametrize("seed", range(300))
def test_properties_on_random_cases(seed):
    rnd = random.Random(seed)
    hosts, shards, current = random_case(rnd)
    out = balance(hosts, shards, current)
    check_balanced(out, hosts, shards)
    # deterministic whatever the input order
    shuffled_hosts, shuffled_shards = hosts[:], shards[:]
    rnd.shuffle(shuffled_hosts)
    rnd.shuffle(shuffled_shards)
    assert balance(shuffled_hosts, shuffled_shards, dict(reversed(current.items()))) == out
    # a fixed point: balancing a balanced assignment moves nothing
    assert balance(hosts, shards, out) == out
    # sticky: a shard on a live host only moves off a host that holds more than its room
    live_kept = {h: sum(1 for s in set(shards) if current.get(s) == h) for h in hosts}
    rooms = room(hosts, len(set(shards)), live_kept)
    assert sum(rooms.values()) == len(set(shards))
    lost = {h: 0 for h in hosts}
    for s in set(shards):
        if current.get(s) in lost and out[s] != current[s]:
            lost[current[s]] += 1
    for h in hosts:
        assert lost[h] == max(0, live_kept[h] - rooms[h]), (h, lost, live_kept, rooms)


@pytest.mark.parametrize("seed", range(150))
def test_fewest_moves_against_exhaustive_search(seed):
    rnd = random.Random(1000 + seed)
    hosts, shards, current = random_case(rnd, max_hosts=3, max_shards=6)
    out = balance(hosts, shards, current)
    check_balanced(out, hosts, shards)
    if shards:
        assert kept(current, out) == best_kept(sorted(hosts), sorted(shards), current)


@pytest.mark.parametrize("seed", range(100))
def test_a_host_joining_or_leaving_moves_only_what_it_must(seed):
    rnd = random.Random(5000 + seed)
    hosts = sorted(rnd.sample(HOSTS, rnd.randint(2, 7)))
    shards = rnd.sample(SHARDS, rnd.randint(1, 40))
    before = balance(hosts, shards, {})
    joined = balance(hosts + ["h9"], shards, before)
    assert all(joined[s] == "h9" for s in moves(before, joined)), "a move not to the newcomer"
    assert len(moves(before, joined)) == sum(1 for h in joined.values() if h == "h9")
    gone = rnd.choice(hosts)
    left = balance([h for h in hosts if h != gone], shards, before)
    assert all(before[s] == gone for s in moves(before, left)), "a survivor's shard moved"
