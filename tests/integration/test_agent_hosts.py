"""Many hosts on one machine: three (then four) supervisord instances, each with the agent and
its own host id, one control store, a 6-shard stream and a producer writing throughout.

The shards spread 2/2/2; one host's supervisord and everything under it is SIGKILLed and
the other two own 3/3 within lease TTL + 15 s; a shard is split and its children are read
with no command run; a fourth host joins and gets its share; the dead one boots again and
gets its share too; every event lands exactly once.
"Owns" is checked two ways: supervisord's RUNNING consumer programs of each host, and the
shard's live lease, whose owner names the pid of that very process.
"""
from __future__ import annotations

import json
import subprocess
import time
from datetime import datetime, timezone

import pytest

from tests.integration.test_pipeline_e2e import assert_exactly_once, wait_loaded
from shardline.devstack.fleet import SHARDLINE, Hosts
from shardline.devstack.fleet import Fleet, shardline, wait_for
from tests.pipeline import (FAST, HOST_METRICS, LOAD_METRICS, MOVING, free_address,
                            scrape_when_complete, wait_active, wait_moved)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LEASE_TTL_S = float(FAST["SHARDLINE_CONSUMER_LEASE_TTL_S"])
AGENT = {"SHARDLINE_AGENT_POLL_S": "0.5", "SHARDLINE_AGENT_HEARTBEAT_TTL_S": "3"}


def running_consumers(fleet: Fleet) -> dict[str, int]:
    """shard -> pid of its RUNNING consumer program on this host."""
    return {name.removeprefix("consumer-"): pid for name, (state, pid) in fleet.status().items()
            if name.startswith("consumer-") and state == "RUNNING" and pid}


def live_leases(control_conn, stream: str) -> dict[str, int]:
    """shard -> pid named in its live lease (owner is host:pid:uuid)."""
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    with control_conn.cursor() as cur:
        cur.execute("SELECT shard_id, owner FROM shard_leases WHERE stream = %s "
                    "AND owner IS NOT NULL AND expires_at > %s", (stream, now))
        return {shard: int(owner.split(":")[1]) for shard, owner in cur.fetchall()}


def layout(fleets: dict[str, Fleet], control_conn, stream: str, want: list[int],
           shards: set[str] | None = None) -> dict[str, set[str]] | None:
    """host -> shards it owns, if the counts are ``want`` (sorted), every shard once, and
    each lease held by that host's RUNNING consumer of the shard; None otherwise."""
    running = {h: running_consumers(f) for h, f in fleets.items()}
    owned = [s for r in running.values() for s in r]
    if sorted(len(r) for r in running.values()) != want or len(owned) != len(set(owned)):
        return None
    if shards is not None and set(owned) != shards:
        return None
    leases = live_leases(control_conn, stream)
    if any(leases.get(s) != pid for r in running.values() for s, pid in r.items()):
        return None
    return {h: set(r) for h, r in running.items()}


def open_shard_ids(kinesis, stream: str) -> set[str]:
    shards = kinesis.list_shards(StreamName=stream)["Shards"]
    return {s["ShardId"] for s in shards if "EndingSequenceNumber" not in s["SequenceNumberRange"]}


def check_metrics(addresses: list[str], logs) -> None:
    """Every host's target shows its consumers' and stage worker's metrics; the loader's are
    on whichever host holds the table's loader lease; all of them move while events flow."""
    first = scrape_when_complete(addresses, HOST_METRICS + LOAD_METRICS, 60, logs)
    for scraped in first:
        for name in ("shardline_consumer_records_read_total",
                     "shardline_consumer_millis_behind_latest",
                     "shardline_loader_pending_files", "shardline_stage_job_seconds_count"):
            assert name in scraped, name
    wait_moved(addresses, first, MOVING)
    for address, before in zip(addresses, first, strict=True):  # every host reads its 2 shards
        wait_moved([address], [before], ("shardline_consumer_records_read_total",))


def test_agents_spread_fail_over_reshard_and_scale(stack_env, stream_name, tmp_path, pg_conn,
                                                   control_conn, kinesis, s3, stack, s3_prefix):
    env = {**stack_env, **FAST, **AGENT, "SHARDLINE_KINESIS_STREAM": stream_name}
    shardline("migrate", env=env)
    shardline("migrate", "--control", env=env)
    shardline("create-stream", "--stream", stream_name, "--shards", "6", env=env)
    wait_active(kinesis, stream_name)
    # each host's scrape target (the agent) on an address of its own
    addresses = {h: free_address() for h in ("h1", "h2", "h3")}
    hosts = Hosts(tmp_path, env, stream_name, workers=1,
                  host_settings={h: {"agent.metrics_address": a} for h, a in addresses.items()})
    fleets = hosts.fleets
    summary, ids = tmp_path / "produce.json", tmp_path / "ids.txt"
    producer = subprocess.Popen(
        [SHARDLINE, "produce", "--stream", stream_name, "--count", "12000", "--rate", "250",
         "--bad-fraction", "0.01", "--seed", "13", "--summary-json", str(summary),
         "--ids-file", str(ids), "--quiet"], env=env, stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "produce.err", "w"))
    timings: dict[str, float] = {}

    def logs() -> str:
        return "\n".join(f"===== {h}\n{f.logs(600)}" for h, f in hosts.live().items())

    try:
        hosts.start(["h1", "h2", "h3"])  # they boot within a second of each other
        six = open_shard_ids(kinesis, stream_name)
        t = time.monotonic()
        try:
            spread = wait_for(lambda: layout(fleets, control_conn, stream_name, [2, 2, 2], six),
                              60, "2/2/2")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{logs()}") from None
        timings["spread"] = time.monotonic() - t
        t = time.monotonic()
        check_metrics(list(addresses.values()), logs)
        timings["metrics"] = time.monotonic() - t

        # the whole of h1 dies: supervisord, the agent (the leader), consumers, worker, loader
        hosts.crash("h1")
        t = time.monotonic()
        survivors = hosts.live()
        try:
            after = wait_for(lambda: layout(survivors, control_conn, stream_name, [3, 3], six),
                             LEASE_TTL_S + 15, "3/3 on the survivors")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{logs()}") from None
        timings["takeover"] = time.monotonic() - t
        for host in survivors:
            assert spread[host] <= after[host], "a survivor's shard moved"

        # split a shard: its children get consumers and are read; the parent is removed
        parent = sorted(six)[0]
        info = next(s for s in kinesis.list_shards(StreamName=stream_name)["Shards"]
                    if s["ShardId"] == parent)
        lo, hi = (int(info["HashKeyRange"][k]) for k in ("StartingHashKey", "EndingHashKey"))
        kinesis.split_shard(StreamName=stream_name, ShardToSplit=parent,
                            NewStartingHashKey=str((lo + hi) // 2))
        wait_active(kinesis, stream_name)
        t = time.monotonic()
        seven = open_shard_ids(kinesis, stream_name)
        children = seven - six

        def children_read() -> bool:
            with control_conn.cursor() as cur:
                cur.execute("SELECT shard_id, sequence_number FROM checkpoints "
                            "WHERE stream = %s", (stream_name,))
                cps = dict(cur.fetchall())
            return (cps.get(parent) == "SHARD_END" and all(cps.get(c) for c in children)
                    and layout(survivors, control_conn, stream_name, [3, 4], seven) is not None)

        try:
            wait_for(children_read, 60, "children read and the parent at SHARD_END, removed")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{logs()}") from None
        timings["split"] = time.monotonic() - t
        assert all(f"consumer-{parent}" not in f.status() for f in survivors.values())

        # a fourth host joins and gets its share: 7 shards on 3 hosts
        hosts.add("h4")
        t = time.monotonic()
        live = hosts.live()
        assert sorted(live) == ["h2", "h3", "h4"]
        try:
            wait_for(lambda: layout(live, control_conn, stream_name, [2, 2, 3], seven), 60,
                     "2/2/3 with h4")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{logs()}") from None
        timings["join"] = time.monotonic() - t

        # the dead host boots again: its include file still lists its old shards, but
        # nothing starts until the fleet gives it its share (7 shards on 4 hosts)
        hosts.revive("h1")
        t = time.monotonic()
        try:
            wait_for(lambda: layout(hosts.live(), control_conn, stream_name, [1, 2, 2, 2], seven),
                     60, "1/2/2/2 with h1 back")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{logs()}") from None
        timings["rejoin"] = time.monotonic() - t

        assert producer.wait(180) == 0, (tmp_path / "produce.err").read_text()
        produced = json.loads(summary.read_text())
        produced["ids"] = set(ids.read_text().split())
        wait_loaded(pg_conn, fleets["h2"], len(produced["ids"]), produced["bad"], timeout=120)
        assert_exactly_once(pg_conn, kinesis, s3, stack, s3_prefix, stream_name, produced)
        print(f"timings: {json.dumps({k: round(v, 1) for k, v in timings.items()})}")
        assert timings["takeover"] <= LEASE_TTL_S + 15
    finally:
        if producer.poll() is None:
            producer.kill()
            producer.wait(10)
        hosts.stop()
