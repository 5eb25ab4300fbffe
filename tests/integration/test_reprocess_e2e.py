"""Issue 12's scenario on the real stack under supervisord: iterate on a transform.

4,000 page views are loaded by a transform that rejects one host (400 dead letters). A
fixed transform (accepts that host, changes a derived column, a new VERSION) is deployed
to the running fleet; ``reprocess --dry-run`` reports what would change, ``reprocess
--all-shards --trim-horizon`` runs with the consumers, stage workers and loader left
running, and the warehouse then holds every event once, each row made by the new
transform. Then the stream is deleted, a third transform deployed, and ``reprocess
--from-archive`` rebuilds the rows from the raw archive alone.

page_views is a lake table here: after each reprocess (and the redrive) the Iceberg
table, read back by pyiceberg and DuckDB, holds exactly the warehouse's rows, the new
transform version's alone.
"""
from __future__ import annotations

import json
import textwrap

import pytest

from shardline import settings as settings_mod
from shardline.devstack.fleet import Fleet, control_query, shardline, wait_for
from shardline.sample import events
from tests.lake_check import assert_lake_equals_warehouse
from tests.pipeline import FAST, dead_letters, wait_active

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N, BLOCKED_EVERY = 4000, 10
BLOCKED = "blocked.example.net"

TRANSFORMS = {
    "rp_v1": '''
        from shardline.errors import BadRecord
        from shardline.transforms.page_views import page_view
        VERSION = "v1"

        def transform(event):
            row = page_view(event)
            if row["url_host"] == "blocked.example.net":
                raise BadRecord("url_host: blocked.example.net is not ours")
            return row
    ''',
    "rp_v2": '''
        from shardline.transforms.page_views import page_view
        VERSION = "v2"

        def transform(event):  # accepts every host; device classes in upper case
            row = page_view(event)
            row["device_class"] = row["device_class"].upper()
            return row
    ''',
    "rp_v4": '''
        from shardline.errors import BadRecord
        from shardline.transforms.page_views import page_view
        VERSION = "v4"

        def transform(event):  # half of the blocked host's pages, now with another reason
            row = page_view(event)
            if row["url_host"] == "blocked.example.net" and int(row["url_path"][3:]) % 20 == 0:
                raise BadRecord("v4: still not ours")
            return row
    ''',
    "rp_v3": '''
        from shardline.transforms.page_views import page_view
        VERSION = "v3"

        def transform(event):
            row = page_view(event)
            row["device_class"] = row["device_class"] + "-3"
            return row
    ''',
}


def put_events(kinesis, stream: str, n: int = N) -> set[str]:
    """n good page views, every BLOCKED_EVERY-th on the blocked host; their event ids."""
    ids, records = set(), []
    for i, (_kind, key, data) in enumerate(events.generate(n, 0.0, seed=12)):
        event = json.loads(data)
        if i % BLOCKED_EVERY == 0:
            event["url"] = f"https://{BLOCKED}/p/{i}"
        ids.add(event["event_id"].lower())
        records.append({"Data": json.dumps(event).encode(), "PartitionKey": key})
    for start in range(0, len(records), 500):
        resp = kinesis.put_records(StreamName=stream, Records=records[start:start + 500])
        assert resp.get("FailedRecordCount", 0) == 0
    return ids


def rows(env) -> list[tuple]:
    from shardline.devstack.fleet import warehouse_query

    return warehouse_query(env, "SELECT event_id, device_class, transform_version, url_host "
                                "FROM page_views")


def deploy(fleet: Fleet, module: str) -> None:
    """Point the stage workers at another transform: a config whose environment= names it,
    then ``supervisorctl update`` (restarts the programs whose config changed)."""
    fleet.env["SHARDLINE_WORKER_TRANSFORM"] = f"{module}:transform"  # the commands' too
    shardline("supervisor-config", "--stream", fleet.stream, "--workers", str(fleet.workers),
              "--out", str(fleet.conf_dir), "--set", f"worker.transform={module}:transform",
              env=fleet.env)
    fleet.ctl("reread")
    fleet.ctl("update")


def pending(env) -> tuple[int, int]:
    """Files pending for the warehouse, for the lake."""
    return control_query(env, "SELECT count(*) FILTER (WHERE state = 'pending'), count(*) "
                              "FILTER (WHERE lake_state = 'pending') FROM staged_files")[0]


def wait_rows(fleet: Fleet, version: str, timeout: float = 90) -> None:
    def done():
        got = rows(fleet.env)
        return pending(fleet.env) == (0, 0) and len(got) == N and \
            {r[2] for r in got} == {version}

    try:
        wait_for(done, timeout, f"{N} rows of transform {version}", every=0.5)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{fleet.logs()}") from None


def dry_run(env, *args: str) -> dict:
    out = shardline("reprocess", *args, "--reason", "check", "--dry-run", env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def assert_lake(env, pg_conn, s3, tmp_path, version: str) -> list[dict]:
    """The lake holds exactly the warehouse's rows, each made by transform ``version``."""
    (tmp_path / version).mkdir()
    got = assert_lake_equals_warehouse(settings_mod.load(None, env), pg_conn, s3,
                                       tmp_path / version)
    assert {r["transform_version"] for r in got} == {version}
    return got


def v1_fleet(stack_env, stream_name, tmp_path, kinesis, n: int) -> tuple[Fleet, set[str]]:
    """The fleet running transform v1 over n events, once they are loaded (page_views
    also goes to the lake)."""
    for name, code in TRANSFORMS.items():
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(code))
    env = {**stack_env, **FAST, "SHARDLINE_KINESIS_STREAM": stream_name,
           "PYTHONPATH": str(tmp_path), "SHARDLINE_WORKER_TRANSFORM": "rp_v1:transform",
           "SHARDLINE_LOADER_MIN_FILES": "20", "SHARDLINE_LAKE_TABLES": "page_views",
           "SHARDLINE_LAKE_NAMESPACE": stack_env["SHARDLINE_WAREHOUSE_SCHEMA"]}
    shardline("migrate", env=env)
    kinesis.create_stream(StreamName=stream_name, ShardCount=2)
    wait_active(kinesis, stream_name)
    ids = put_events(kinesis, stream_name, n)
    fleet = Fleet(tmp_path / "supervisor", env, stream_name, workers=2)
    fleet.start()
    assert "lake-loader-page_views" in fleet.status()
    blocked = n // BLOCKED_EVERY

    def v1_loaded():
        dead = control_query(env, "SELECT coalesce(sum(dead_letter_count), 0), count(*) "
                                  "FILTER (WHERE state = 'pending') FROM staged_files")[0]
        return dead == (blocked, 0) and len(rows(env)) == n - blocked
    try:
        wait_for(v1_loaded, 90, "the v1 rows and dead letters", every=0.5)
    except BaseException:
        fleet.stop()
        raise
    return fleet, ids


def test_reprocess_with_the_fleet_running_then_from_the_archive(
        stack_env, stream_name, tmp_path, kinesis, pg_conn, s3):
    fleet, ids = v1_fleet(stack_env, stream_name, tmp_path, kinesis, N)
    env, blocked = fleet.env, N // BLOCKED_EVERY
    try:
        deploy(fleet, "rp_v2")
        before = dry_run(env, "--all-shards", "--trim-horizon")
        assert (before["added"], before["changed"], before["removed"]) == \
            (blocked, N - blocked, 0), before
        assert before["records"] == N and before["transform_version"] == "v2"
        shardline("reprocess", "--all-shards", "--trim-horizon", "--yes",
                  "--reason", "v2 accepts blocked.example.net", env=env)
        wait_rows(fleet, "v2")
        got = rows(env)
        assert sorted(r[0] for r in got) == sorted(ids)  # every event, once
        assert all(r[1].isupper() for r in got)
        assert sum(r[3] == BLOCKED for r in got) == blocked
        assert dry_run(env, "--all-shards", "--trim-horizon")["changed"] == 0
        status = shardline("status", "--json", "--no-kinesis", env=env, check=False).stdout
        versions = {v["transform_version"]: v for v in json.loads(status)["transform_versions"]}
        assert versions["v2"]["reprocess_files"] > 0 and versions["v1"]["rows"] == N - blocked
        status = shardline("status", "--json", "--no-kinesis", "--versions", env=env,
                           check=False).stdout  # in the table now: converged, v2 alone
        assert [(v["transform_version"], v["rows"]) for v in json.loads(status)
                ["versions_present"] if v["target_table"] == "page_views"] == [("v2", N)]
        assert len(assert_lake(env, pg_conn, s3, tmp_path, "v2")) == N

        # The stream is gone: the archive alone rebuilds the rows with a third transform.
        deploy(fleet, "rp_v3")
        for name in fleet.status():
            if "consumer" in name:
                fleet.ctl("stop", name)
        kinesis.delete_stream(StreamName=stream_name)
        archive = dry_run(env, "--all-shards", "--from-archive")
        assert (archive["added"], archive["changed"], archive["removed"]) == (0, N, 0), archive
        shardline("reprocess", "--all-shards", "--from-archive", "--yes",
                  "--reason", "v3 from the archive", env=env)
        wait_rows(fleet, "v3")
        got = rows(env)
        assert sorted(r[0] for r in got) == sorted(ids)
        assert all(r[1].endswith("-3") for r in got)
        lake = assert_lake(env, pg_conn, s3, tmp_path, "v3")
        assert sorted(r["event_id"] for r in lake) == sorted(ids)
    finally:
        fleet.stop()


def test_redrive_lands_what_the_transform_accepts_now_once(
        stack_env, stream_name, tmp_path, kinesis, s3, stack, s3_prefix, pg_conn):
    n = 1000
    fleet, ids = v1_fleet(stack_env, stream_name, tmp_path, kinesis, n)
    env, blocked = fleet.env, n // BLOCKED_EVERY
    try:
        deploy(fleet, "rp_v4")
        out = shardline("redrive", "--reason", "v4 takes half", env=env).stdout
        assert json.loads(out.strip().splitlines()[-1])["accepted"] == blocked // 2, out

        def landed():
            return pending(env) == (0, 0) and len(rows(env)) == n - blocked // 2
        wait_for(landed, 60, "the redriven rows", every=0.5)
        got = rows(env)
        assert len({r[0] for r in got}) == len(got) and {r[0] for r in got} <= ids
        assert {r[2] for r in got if r[3] == BLOCKED} == {"v4"}
        again = shardline("redrive", env=env).stdout  # same transform: nothing to send
        assert json.loads(again.strip().splitlines()[-1])["sent"] == 0
        still = [d for d in dead_letters(s3, stack.bucket, s3_prefix)
                 if d["reason"].endswith("v4: still not ours")]
        assert len(still) == blocked // 2  # once each: the second redrive wrote none
        assert len({(d["shard_id"], d["sequence_number"]) for d in still}) == blocked // 2
        assert len(rows(env)) == n - blocked // 2
        lake = assert_lake_equals_warehouse(settings_mod.load(None, env), pg_conn, s3, tmp_path)
        assert {r["transform_version"] for r in lake if r["url_host"] == BLOCKED} == {"v4"}
    finally:
        fleet.stop()
