"""The whole pipeline on the real stack, run by a real supervisord.

Every valid event lands exactly once, every malformed one lands in a dead-letter
object with its reason, whatever is killed when, and after a replay.
"""
from __future__ import annotations

import json
import random
import signal
import time

import pytest

from shardline import settings as settings_mod
from shardline.devstack.fleet import Fleet, control_query, shardline, wait_for
from shardline.positions import position
from tests.lake_check import assert_lake_equals_warehouse, assert_lake_reconciles
from tests.pipeline import (FAST, HOST_METRICS, LOAD_METRICS, MOVING, dead_letter_positions,
                            free_address, read_stream, scrape_when_complete, wait_moved)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def fleet_env(stack_env, stream_name, tmp_path):
    env = {**stack_env, **FAST, "SHARDLINE_KINESIS_STREAM": stream_name}
    shardline("migrate", env=env)
    shardline("migrate", "--control", env=env)
    return env


@pytest.fixture
def fleet(fleet_env, stream_name, tmp_path):
    made: list[Fleet] = []

    def make(workers: int = 2, settings: dict[str, str] | None = None) -> Fleet:
        f = Fleet(tmp_path / "supervisor", fleet_env, stream_name, workers,
                  settings=settings or {})
        made.append(f)
        return f

    yield make
    for f in made:
        f.stop()


def produce(env: dict, stream: str, tmp_path, count: int, bad: float, seed: int,
            extra: tuple[str, ...] = ()) -> dict:
    summary, ids = tmp_path / f"produce-{seed}.json", tmp_path / f"ids-{seed}.txt"
    shardline("produce", "--stream", stream, "--count", str(count), "--rate", "0",
              "--bad-fraction", str(bad), "--seed", str(seed), "--summary-json", str(summary),
              "--ids-file", str(ids), "--quiet", *extra, env=env)
    result = json.loads(summary.read_text())
    result["ids"] = set(ids.read_text().split())
    return result


def warehouse(pg_conn, sql: str) -> list[tuple]:
    with pg_conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def wait_loaded(pg_conn, fleet: Fleet, want_rows: int, want_dead: int, timeout: float) -> None:
    def done():
        (rows,), = warehouse(pg_conn, "SELECT count(*) FROM page_views")
        (dead,), = control_query(fleet.env, "SELECT coalesce(sum(dead_letter_count), 0) "
                                            "FROM staged_files")
        return rows >= want_rows and dead >= want_dead

    try:
        wait_for(done, timeout, f"{want_rows} rows and {want_dead} dead letters", every=1)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{fleet.logs()}") from None


def assert_exactly_once(pg_conn, kinesis, s3, stack, s3_prefix, stream, produced) -> None:
    rows = warehouse(pg_conn, "SELECT event_id, shard_id, sequence_number, sub_sequence_number "
                              "FROM page_views")
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)), "an event_id is stored twice"
    assert set(ids) == produced["ids"], "the warehouse does not hold exactly the valid events"
    every = read_stream(kinesis, stream)
    loaded_positions = {(r[1], r[2]) for r in rows}
    dead = dead_letter_positions(s3, stack.bucket, s3_prefix)
    assert not loaded_positions & set(dead), "a record is both loaded and dead-lettered"
    assert len(dead) == produced["bad"], "dead letters are not exactly the malformed records"
    assert all(d["reason"] for d in dead.values())
    # every record of the stream is accounted for: loaded, dead-lettered, or a duplicate put
    # of a loaded event (same bytes under another sequence number)
    unaccounted = set(every) - loaded_positions - set(dead)
    assert len(unaccounted) == produced.get("duplicates", 0)
    loaded_data = {every[p] for p in loaded_positions}
    assert all(every[p] in loaded_data for p in unaccounted)


def test_100k_events_with_2pct_malformed_land_exactly_once(
        fleet, fleet_env, stream_name, pg_conn, pg_schema, kinesis, s3, stack, s3_prefix,
        tmp_path):
    """... into the warehouse and the lake (page_views is a lake table here): the lake
    loader SIGKILLed mid-stream, then the lake read back by pyiceberg and DuckDB equals the
    warehouse, and reconciliation finds every hour equal in all three."""
    lake = {"lake.tables": "page_views", "lake.namespace": pg_schema}
    lake_env = {**fleet_env, "SHARDLINE_LAKE_TABLES": "page_views",
                "SHARDLINE_LAKE_NAMESPACE": pg_schema}
    shardline("migrate", env=lake_env)  # the lake table
    shardline("create-stream", "--stream", stream_name, "--shards", "4", env=fleet_env)
    produced = produce(fleet_env, stream_name, tmp_path, 100_000, 0.02, seed=11,
                       extra=("--duplicate-fraction", "0.001"))
    assert produced["bad"] >= 1500 and produced["good"] >= 97_000
    address = free_address()  # this host's scrape target: the metrics program
    f = fleet(settings={"agent.metrics_address": address, **lake})
    f.start()
    assert "lake-loader-page_views" in f.status()
    # while the events flow: every metric is there in Prometheus text format, and moves
    t = time.monotonic()
    first, = scrape_when_complete([address], HOST_METRICS + LOAD_METRICS, 120, f.logs)
    wait_moved([address], [first], MOVING)
    print(f"metrics checked in {time.monotonic() - t:.1f}s")
    assert f.kill("lake-loader", signal.SIGKILL)  # supervisord restarts it; it reconciles
    wait_loaded(pg_conn, f, len(produced["ids"]), produced["bad"], timeout=300)
    assert_exactly_once(pg_conn, kinesis, s3, stack, s3_prefix, stream_name, produced)
    reasons = {d["reason"].split(":")[0] for d in
               dead_letter_positions(s3, stack.bucket, s3_prefix).values()}
    assert len(reasons) >= 4, reasons
    try:
        wait_for(lambda: control_query(f.env, "SELECT count(*) FROM staged_files WHERE "
                                              "lake_state = 'pending'") == [(0,)],
                 180, "nothing pending for the lake", every=1)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{f.logs()}") from None
    assert_hours_agree(f, produced)
    cfg = settings_mod.load(None, lake_env)
    rows = assert_lake_equals_warehouse(cfg, pg_conn, s3, tmp_path,
                                        copies_may_differ=produced["duplicates"])
    assert {r["event_id"] for r in rows} == produced["ids"]
    assert_lake_reconciles(cfg, len(produced["ids"]), produced["duplicates"])


def assert_hours_agree(f: Fleet, produced: dict) -> None:
    """Reconciliation of the run: once nothing is pending, every hour agrees (judged as if
    two hours had passed: the run's hours are the current ones), with the producer's
    duplicates counted as dropped, not as a difference."""
    from datetime import datetime, timedelta, timezone

    from shardline import clients, settings as settings_mod
    from shardline.controlstore import open_store
    from shardline.reconcile import run

    wait_for(lambda: control_query(f.env, "SELECT count(*) FROM staged_files "
                                          "WHERE state = 'pending'") == [(0,)],
             60, "no pending file")
    cfg = settings_mod.load(None, f.env).replace(**{"reconcile.grace_s": "0"})
    later = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(hours=2)
    store, conn = open_store(cfg), clients.warehouse_connect(cfg, autocommit=True)
    try:
        ((_, verdicts, _),) = run.gather(cfg, store, conn, ["page_views"], later, lakes={})
        # (the lake's side: tests/lake_check.py)
    finally:
        conn.close()
        store.close()
    assert verdicts and {v.state for v in verdicts} == {"agree"}, verdicts
    assert sum(v.warehouse for v in verdicts) == len(produced["ids"])
    assert sum(v.dropped for v in verdicts) >= produced.get("duplicates", 0) > 0


def test_kills_mid_stream_then_replay_keep_exactly_once(
        fleet, fleet_env, stream_name, pg_conn, kinesis, s3, stack, s3_prefix, tmp_path):
    shardline("create-stream", "--stream", stream_name, "--shards", "2", env=fleet_env)
    f = fleet()
    f.start()
    first = produce(fleet_env, stream_name, tmp_path, 15_000, 0.01, seed=21)
    rnd = random.Random(3)
    # SIGKILL a consumer, a stage worker and the loader while batches are in flight;
    # supervisord restarts them (autorestart=unexpected).
    for victim in ("consumer", "stage-worker", "loader", "consumer"):
        time.sleep(rnd.uniform(0.5, 1.5))
        f.kill(victim, signal.SIGKILL)
    second = produce(fleet_env, stream_name, tmp_path, 15_000, 0.01, seed=22)
    produced = {"ids": first["ids"] | second["ids"], "bad": first["bad"] + second["bad"],
                "duplicates": 0}
    wait_loaded(pg_conn, f, len(produced["ids"]), produced["bad"], timeout=240)
    assert_exactly_once(pg_conn, kinesis, s3, stack, s3_prefix, stream_name, produced)

    # Replay shard 0 from the start: everything is read, staged and loaded again,
    # and the warehouse still holds each event once.
    shard = sorted(kinesis.list_shards(StreamName=stream_name)["Shards"],
                   key=lambda s: s["ShardId"])[0]["ShardId"]
    program = next(name for name in f.status() if shard in name)
    f.ctl("stop", program)
    (before,), = control_query(fleet_env, f"SELECT sequence_number FROM checkpoints "
                                          f"WHERE shard_id = '{shard}'")
    refused = shardline("replay", "--stream", stream_name, "--shard", shard, "--trim-horizon",
                        "--reason", "test replay", env=fleet_env, check=False)
    assert refused.returncode == 0, f"replay after a graceful stop failed:\n{refused.stderr}"
    assert not control_query(fleet_env, f"SELECT 1 FROM checkpoints WHERE shard_id = '{shard}'")
    f.ctl("start", program)

    def caught_up():
        row = control_query(fleet_env, f"SELECT sequence_number FROM checkpoints "
                                       f"WHERE shard_id = '{shard}'")
        pending = control_query(fleet_env, "SELECT count(*) FROM staged_files "
                                           "WHERE state = 'pending'")
        return row and position(row[0][0]) >= position(before) and pending[0][0] == 0

    wait_for(caught_up, 120, "the replayed shard to catch up again")
    history = shardline("replay", "--list", "--stream", stream_name, "--shard", shard,
                        env=fleet_env).stdout
    assert "test replay" in history
    assert_exactly_once(pg_conn, kinesis, s3, stack, s3_prefix, stream_name, produced)
