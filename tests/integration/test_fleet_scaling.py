"""Scaling and failover of the real fleet: more stage workers with no consumer restart, and
two gearmand servers of which one dies mid-stream, with every event still landing once."""
from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time

import pytest

from shardline.ops.gearman_admin import cluster_status, totals
from tests.integration.test_pipeline_e2e import assert_exactly_once, produce, wait_loaded
from shardline.devstack.fleet import Fleet, shardline, wait_for
from tests.pipeline import FAST

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_gearmand(tmp_path, name: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    gearmand = shutil.which("gearmand") or "/usr/sbin/gearmand"
    proc = subprocess.Popen([gearmand, "-L", "127.0.0.1", "-p", str(port),
                             f"--log-file={tmp_path / (name + '.log')}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = f"127.0.0.1:{port}"

    def answering() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_for(answering, 10, f"gearmand {name}", every=0.05)
    return proc, server


@pytest.fixture
def env(stack_env, stream_name):
    env = {**stack_env, **FAST, "SHARDLINE_KINESIS_STREAM": stream_name}
    shardline("migrate", env=env)
    shardline("migrate", "--control", env=env)
    return env


def consumer_pids(fleet: Fleet) -> dict[str, int | None]:
    return {name: pid for name, (_, pid) in fleet.status().items() if name.startswith("consumer")}


def test_more_stage_workers_join_without_restarting_consumers(
        env, stream_name, tmp_path, pg_conn, kinesis, s3, stack, s3_prefix):
    shardline("create-stream", "--stream", stream_name, "--shards", "2", env=env)
    fleet = Fleet(tmp_path / "sup", env, stream_name, workers=1)
    try:
        fleet.start()
        first = produce(env, stream_name, tmp_path, 4_000, 0.01, seed=31)
        before = wait_for(lambda: (p := consumer_pids(fleet)) and all(p.values()) and p, 30,
                          "consumers running")
        servers = env["SHARDLINE_GEARMAN_SERVERS"].split(",")
        fleet.workers = 3
        fleet.configure()
        fleet.ctl("update")

        def three_workers() -> bool:
            stats = totals(cluster_status(servers, timeout=2))
            return stats.get("shardline_stage", {}).get("workers", 0) >= 3

        wait_for(three_workers, 30, "3 stage workers registered with gearmand")
        assert consumer_pids(fleet) == before, "a consumer was restarted by the scale-out"
        second = produce(env, stream_name, tmp_path, 4_000, 0.01, seed=32)
        produced = {"ids": first["ids"] | second["ids"], "bad": first["bad"] + second["bad"]}
        wait_loaded(pg_conn, fleet, len(produced["ids"]), produced["bad"], timeout=120)
        assert consumer_pids(fleet) == before
        assert_exactly_once(pg_conn, kinesis, s3, stack, s3_prefix, stream_name, produced)
    finally:
        fleet.stop()


def test_two_gearmand_servers_one_killed_mid_stream(
        env, stream_name, tmp_path, pg_conn, kinesis, s3, stack, s3_prefix):
    g1, s1 = start_gearmand(tmp_path, "g1")
    g2, s2 = start_gearmand(tmp_path, "g2")
    env = {**env, "SHARDLINE_GEARMAN_SERVERS": f"{s1},{s2}"}
    shardline("create-stream", "--stream", stream_name, "--shards", "2", env=env)
    fleet = Fleet(tmp_path / "sup", env, stream_name, workers=2)
    try:
        fleet.start()
        first = produce(env, stream_name, tmp_path, 5_000, 0.01, seed=41)
        # both servers have the workers registered: either may be handed a batch
        wait_for(lambda: all(totals(cluster_status([s], timeout=2)).get("shardline_stage", {})
                             .get("workers", 0) >= 2 for s in (s1, s2)), 30, "workers on both")
        time.sleep(0.5)
        g1.send_signal(signal.SIGKILL)
        g1.wait(10)
        second = produce(env, stream_name, tmp_path, 5_000, 0.01, seed=42)
        produced = {"ids": first["ids"] | second["ids"], "bad": first["bad"] + second["bad"]}
        wait_loaded(pg_conn, fleet, len(produced["ids"]), produced["bad"], timeout=180)
        assert_exactly_once(pg_conn, kinesis, s3, stack, s3_prefix, stream_name, produced)
        stats = totals(cluster_status([s2], timeout=2))
        assert stats["shardline_stage"]["workers"] >= 2, stats
    finally:
        fleet.stop()
        for proc in (g1, g2):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
