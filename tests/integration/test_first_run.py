"""Setup, tried as a new user would: every first-run mistake ends the command at start with
one line naming what is wrong and how to fix it, a named exit code and no traceback, and
nothing is lost (nothing was read, checkpointed or staged); after `shardline migrate` alone a
fresh stack runs the fleet.

Each test runs the real commands against the real stack (the ``stack`` fixture) and asserts
the exact last line of stderr (log lines may come before it).
"""
from __future__ import annotations

import json
import socket
import subprocess
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import psycopg2
import pytest

from shardline.devstack.fleet import Fleet, shardline, wait_for
from shardline.exitcodes import ExitCode
from tests.faults import DenyingEndpoint
from tests.pipeline import FAST, wait_active

pytestmark = [pytest.mark.integration]

SHARD = "shardId-000000000000"
REGION = "us-east-1"  # the stack's (devstack.DUMMY_AWS_ENV)


def run(*args: str, env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess:
    """A command as a user runs it; a hang fails the test (TimeoutExpired)."""
    return shardline(*args, env=env, check=False, timeout=timeout)


def assert_stops(proc: subprocess.CompletedProcess, code: ExitCode, line: str) -> None:
    """Exit ``code``, ``line`` as the last line of stderr, no traceback anywhere."""
    out = f"exit {proc.returncode}\nstdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr + proc.stdout, out
    assert proc.returncode == code, f"want {code.name} ({int(code)})\n{out}"
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and lines[-1] == line, out


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def page_views(n: int) -> list[dict]:
    now = datetime.now(timezone.utc).isoformat()
    return [{"event_id": str(uuid.uuid4()), "occurred_at": now,
             "url": f"https://shop.example.com/p/{i}", "referrer": None,
             "user_agent": "first-run", "ip": "198.51.100.7", "user_id": None,
             "session_id": f"s-{i}"} for i in range(n)]


def put(kinesis, stream: str, events: list[dict]) -> None:
    for start in range(0, len(events), 500):
        chunk = events[start:start + 500]
        resp = kinesis.put_records(StreamName=stream, Records=[
            {"Data": json.dumps(e).encode(), "PartitionKey": e["event_id"]} for e in chunk])
        assert resp["FailedRecordCount"] == 0


@pytest.fixture
def env(stack_env, stream_name, kinesis):
    """A fresh stack as a new user has it: the stream exists, nothing is migrated (the test's
    schemas are empty in both databases)."""
    kinesis.create_stream(StreamName=stream_name, ShardCount=1)
    wait_active(kinesis, stream_name)
    return {**stack_env, **FAST, "SHARDLINE_KINESIS_STREAM": stream_name}


def control(pg_schema: str) -> str:
    return f"the control store (postgres database shardline_control, schema {pg_schema})"


def warehouse(pg_schema: str) -> str:
    return f"the warehouse (postgres database shardline, schema {pg_schema})"


def leases_and_checkpoints(stack, pg_schema: str) -> list[tuple]:
    with psycopg2.connect(stack.control_dsn, options=f"-c search_path={pg_schema}") as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT 'lease', shard_id FROM shard_leases UNION ALL "
                        "SELECT 'checkpoint', shard_id FROM checkpoints")
            return cur.fetchall()


# -- the setup step missed -------------------------------------------------------------------

# command line -> the stores it needs (the warehouse only where it queries it)
COMMANDS = {
    "consumer": (["consumer", "--shard", SHARD], "control"),
    "worker": (["worker"], "control"),
    "loader": (["loader", "--once"], "both"),
    "agent": (["agent"], "control"),
    "status": (["status", "--no-kinesis"], "both"),
    "replay": (["replay", "--shard", SHARD, "--list"], "control"),
    "reprocess": (["reprocess", "--shard", SHARD, "--trim-horizon", "--reason", "first run",
                   "--yes"], "control"),
    "redrive": (["redrive", "--reason", "first run"], "control"),
}


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_command_on_unmigrated_stores_says_run_migrate(name, env, pg_schema, tmp_path):
    args, needs = COMMANDS[name]
    env = {**env, "SHARDLINE_AGENT_SERVERURL": f"unix://{tmp_path}/no-supervisord.sock",
           "SHARDLINE_AGENT_INCLUDE_FILE": str(tmp_path / "consumers.conf")}
    what = (f"{warehouse(pg_schema)} and {control(pg_schema)} are" if needs == "both"
            else f"{control(pg_schema)} is")
    assert_stops(run(*args, env=env), ExitCode.NOT_MIGRATED,
                 f"shardline {name}: {what} not migrated: run shardline migrate")


def test_migrate_alone_then_the_fleet_runs_and_nothing_is_lost(env, stack, pg_schema, pg_conn,
                                                               kinesis, stream_name, tmp_path):
    """The README of every earlier release: `shardline migrate`, then the fleet."""
    events = page_views(300)
    put(kinesis, stream_name, events)
    # The step missed: the consumer stops at start with the fix, before taking a lease.
    assert_stops(run("consumer", "--shard", SHARD, env=env), ExitCode.NOT_MIGRATED,
                 f"shardline consumer: {control(pg_schema)} is not migrated: "
                 f"run shardline migrate")

    shardline("migrate", env=env)  # alone: every store the settings name
    assert leases_and_checkpoints(stack, pg_schema) == []

    class MigrateAloneFleet(Fleet):
        """The fleet without ``Fleet.configure``'s own ``migrate --control``."""

        def configure(self) -> None:
            shardline("supervisor-config", "--stream", self.stream, "--workers",
                      str(self.workers), "--out", str(self.conf_dir), env=self.env)

    fleet = MigrateAloneFleet(tmp_path / "supervisor", env, stream_name, workers=1)
    try:
        fleet.start()

        def landed() -> bool:
            with pg_conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM page_views")
                return cur.fetchone()[0] >= len(events)

        try:
            wait_for(landed, 120, f"{len(events)} rows", every=1)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{fleet.logs()}") from None
    finally:
        fleet.stop()
    with pg_conn.cursor() as cur:
        cur.execute("SELECT event_id::text FROM page_views")
        assert sorted(r[0] for r in cur.fetchall()) == sorted(e["event_id"] for e in events)


def test_a_control_store_at_another_version_is_named(env, stack, pg_schema):
    shardline("migrate", env=env)
    with psycopg2.connect(stack.control_dsn, options=f"-c search_path={pg_schema}") as conn:
        with conn.cursor() as cur:
            cur.execute("SELECT max(version) FROM schema_migrations")
            (newest,), = cur.fetchall()
            cur.execute("SELECT name FROM schema_migrations WHERE version = %s", (newest,))
            (name,), = cur.fetchall()
            cur.execute("DELETE FROM schema_migrations WHERE version = %s", (newest,))
    assert_stops(run("consumer", "--shard", SHARD, env=env), ExitCode.NOT_MIGRATED,
                 f"shardline consumer: {control(pg_schema)} lacks migration {name}: "
                 f"run shardline migrate")

    with psycopg2.connect(stack.control_dsn, options=f"-c search_path={pg_schema}") as conn:
        with conn.cursor() as cur:  # back as it was, and a newer release's migration on top
            cur.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                        "VALUES (%s, %s, now()), (999, '999_from_the_future', now())",
                        (newest, name))
    assert_stops(run("consumer", "--shard", SHARD, env=env), ExitCode.NOT_MIGRATED,
                 f"shardline consumer: {control(pg_schema)} has migration 999_from_the_future, "
                 f"which this release does not know: run the shardline release that made it")


def test_migrate_flags_do_one_store(env, stack, pg_schema, pg_conn):
    shardline("migrate", "--warehouse-only", env=env)
    assert_stops(run("loader", "--once", env=env), ExitCode.NOT_MIGRATED,
                 f"shardline loader: {control(pg_schema)} is not migrated: "
                 f"run shardline migrate")
    shardline("migrate", "--control", env=env)
    assert run("loader", "--once", env=env).returncode == ExitCode.OK
    plan = run("migrate", "--dry-run", env=env)
    assert plan.returncode == ExitCode.OK and "nothing to apply" in plan.stdout, plan.stdout


def test_an_unmigrated_dynamodb_control_store_says_run_migrate(env, stack):
    prefix = f"fr{uuid.uuid4().hex[:6]}_"
    env = {**env, "SHARDLINE_CONTROL_BACKEND": "dynamodb",
           "SHARDLINE_CONTROL_TABLE_PREFIX": prefix}
    assert_stops(run("consumer", "--shard", SHARD, env=env), ExitCode.NOT_MIGRATED,
                 f"shardline consumer: the control store (DynamoDB tables {prefix}*, region "
                 f"{REGION}) is not migrated: run shardline migrate")
    shardline("migrate", env=env)
    listed = run("replay", "--shard", SHARD, "--list", env=env)
    assert listed.returncode == ExitCode.OK, listed.stderr


# -- the other first-run mistakes ------------------------------------------------------------

def test_create_stream_over_the_shard_limit(env):
    """The account's shard limit (kinesalite's is set in scripts/kinesalite-server.js): one
    line naming the stream and the limit, not botocore's traceback."""
    proc = run("create-stream", "--stream", "too-many-shards", "--shards", "20000", env=env)
    assert_stops(proc, ExitCode.CONFIG, proc.stderr.strip().splitlines()[-1])
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("shardline create-stream: configuration error: stream "
                           "'too-many-shards' with 20000 shards: "), line
    assert "shard limit" in line, line


def test_no_such_stream(env, stack, pg_schema, tmp_path):
    shardline("migrate", env=env)
    url = env["SHARDLINE_KINESIS_ENDPOINT_URL"]
    env = {**env, "SHARDLINE_AGENT_SERVERURL": f"unix://{tmp_path}/no-supervisord.sock",
           "SHARDLINE_AGENT_INCLUDE_FILE": str(tmp_path / "consumers.conf")}
    for args in (["consumer", "--shard", SHARD], ["agent"]):
        assert_stops(run(*args, "--stream", "no-such-stream", env=env), ExitCode.CONFIG,
                     f"shardline {args[0]}: configuration error: stream 'no-such-stream' does "
                     f"not exist at {url} (region {REGION}, ResourceNotFoundException): create "
                     f"it with shardline "
                     f"create-stream --stream no-such-stream --shards N, or fix kinesis.stream")
    assert leases_and_checkpoints(stack, pg_schema) == []


def test_no_such_bucket(env):
    shardline("migrate", env=env)
    url = env["SHARDLINE_S3_ENDPOINT_URL"]
    env = {**env, "SHARDLINE_S3_BUCKET": "no-such-bucket"}
    for name, args in (("worker", ["worker"]), ("loader", ["loader", "--once"])):
        assert_stops(run(*args, env=env), ExitCode.CONFIG,
                     f"shardline {name}: configuration error: bucket 'no-such-bucket' does not "
                     f"exist at {url} (region {REGION}): create it, or fix s3.bucket")


def test_wrong_region(env):
    """Redshift's COPY names aws.region as the bucket's: another region fails every load."""
    shardline("migrate", env=env)
    bucket = env["SHARDLINE_S3_BUCKET"]
    assert_stops(run("worker", env={**env, "SHARDLINE_AWS_REGION": "eu-west-1"}),
                 ExitCode.CONFIG,
                 f"shardline worker: configuration error: bucket '{bucket}' is in region "
                 f"{REGION}, not eu-west-1 (aws.region): set aws.region to the region of "
                 f"the bucket and the stream")


def test_unreachable_endpoint(env, stack, pg_schema):
    shardline("migrate", env=env)
    url = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    assert_stops(run("consumer", "--shard", SHARD,
                     env={**env, "SHARDLINE_KINESIS_ENDPOINT_URL": url}),
                 ExitCode.UNAVAILABLE,
                 f"shardline consumer: Kinesis at {url} is unreachable "
                 f"(EndpointConnectionError): check kinesis.endpoint_url (empty for AWS) "
                 f"and aws.region")
    assert time.monotonic() - started < 60
    assert leases_and_checkpoints(stack, pg_schema) == []


def test_gearmand_unreachable(env, stack, pg_schema):
    shardline("migrate", env=env)
    server = f"127.0.0.1:{closed_port()}"
    env = {**env, "SHARDLINE_GEARMAN_SERVERS": server}
    for name, args in (("worker", ["worker"]), ("consumer", ["consumer", "--shard", SHARD])):
        assert_stops(run(*args, env=env, timeout=60), ExitCode.UNAVAILABLE,
                     f"shardline {name}: gearmand is unreachable at {server} (connection "
                     f"refused): check gearman.servers and that gearmand runs")
    assert leases_and_checkpoints(stack, pg_schema) == []


def test_iam_denial(env, stack, pg_schema, stream_name):
    shardline("migrate", env=env)
    role = DenyingEndpoint.ACCOUNT_ARN
    fix = "allow it in the IAM policy of this host's role"
    with DenyingEndpoint() as denier:
        assert_stops(run("consumer", "--shard", SHARD,
                         env={**env, "SHARDLINE_KINESIS_ENDPOINT_URL": denier.url}),
                     ExitCode.DENIED,
                     f"shardline consumer: access denied: kinesis:ListShards on stream "
                     f"'{stream_name}' (AccessDeniedException: User: {role} is not authorized "
                     f"to perform: kinesis:ListShards): {fix}")
        bucket = env["SHARDLINE_S3_BUCKET"]
        assert_stops(run("worker", env={**env, "SHARDLINE_S3_ENDPOINT_URL": denier.url}),
                     ExitCode.DENIED,
                     f"shardline worker: access denied: s3:GetBucketLocation on bucket '{bucket}' "
                     f"(AccessDenied: Access Denied): {fix}")
        prefix = f"fr{uuid.uuid4().hex[:6]}_"
        assert_stops(run("consumer", "--shard", SHARD,
                         env={**env, "SHARDLINE_CONTROL_BACKEND": "dynamodb",
                              "SHARDLINE_CONTROL_TABLE_PREFIX": prefix,
                              "SHARDLINE_CONTROL_DYNAMODB_ENDPOINT_URL": denier.url}),
                     ExitCode.DENIED,
                     f"shardline consumer: access denied: dynamodb:DescribeTable on table "
                     f"'{prefix}leases' (AccessDeniedException: User: {role} is not "
                     f"authorized to perform: dynamodb:DescribeTable): {fix}")
        # `shardline migrate` run with a role that may not make the tables
        assert_stops(run("migrate", "--control",
                         env={**env, "SHARDLINE_CONTROL_BACKEND": "dynamodb",
                              "SHARDLINE_CONTROL_TABLE_PREFIX": prefix,
                              "SHARDLINE_CONTROL_DYNAMODB_ENDPOINT_URL": denier.url}),
                     ExitCode.DENIED,
                     f"shardline migrate: access denied: dynamodb:ListTables on tables "
                     f"{prefix}* (AccessDeniedException: User: {role} is not authorized to "
                     f"perform: dynamodb:ListTables): {fix}")
    assert leases_and_checkpoints(stack, pg_schema) == []


def test_a_tables_file_with_an_error(env, tmp_path):
    bad = tmp_path / "tables.toml"
    bad.write_text('[tables.page_views]\ncolumns = [{ name = "event_id", type = "uuid" }]\n')
    env = {**env, "SHARDLINE_TABLES_FILE": str(bad)}
    procs = {name: run(*args, env=env) for name, args in
             (("migrate", ["migrate"]), ("worker", ["worker"]), ("loader", ["loader", "--once"]))}
    lines = {name: [ln for ln in p.stderr.splitlines() if ln.strip()][-1:]
             for name, p in procs.items()}
    first = lines["migrate"][0].removeprefix("shardline migrate: ")
    assert first.startswith(f"configuration error: tables file {bad}"), lines
    for name, proc in procs.items():
        assert_stops(proc, ExitCode.CONFIG, f"shardline {name}: {first}")
    assert Path(bad).read_text().startswith("[tables.page_views]")  # nothing rewritten
