"""The local stack manager against the real services (no mocks)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import gearman
import pytest

from shardline import devstack
from shardline.devstack import StackInfo
from tests.pipeline import wait_active

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------------ helpers


def _running(pid: int) -> bool:
    """True if pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _tcp_listen_addresses(port: int) -> set[str]:
    """Addresses with a listening TCP socket on port, from /proc/net/tcp{,6}."""
    found = set()
    for path, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        if not os.path.exists(path):
            continue
        for line in Path(path).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr_hex, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A = LISTEN
                continue
            raw = bytes.fromhex(addr_hex)
            # The kernel prints each 32-bit word in host (little-endian) order.
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(family, raw))
    return found


def _wait_for_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class _StoppableWorker(gearman.GearmanWorker):
    def __init__(self, servers: list[str], stop: threading.Event):
        super().__init__(servers)
        self._stop = stop

    def after_poll(self, any_activity: bool) -> bool:
        return not self._stop.is_set()


def _gearman_echo(server: str) -> bytes:
    """One job through gearmand: a worker thread echoes the payload back."""
    stop = threading.Event()
    worker = _StoppableWorker([server], stop)
    worker.register_task(b"echo", lambda _worker, job: job.data)
    thread = threading.Thread(target=worker.work, kwargs={"poll_timeout": 0.1}, daemon=True)
    thread.start()
    try:
        client = gearman.GearmanClient([server])
        request = client.submit_job(b"echo", b"x", poll_timeout=5)
        assert request.complete, request.state
        return request.result
    finally:
        stop.set()
        thread.join(5)
        assert not thread.is_alive()


# -------------------------------------------------------------- the session stack


def test_up_is_idempotent(stack: StackInfo) -> None:
    before = devstack.status(stack.dir)
    assert set(before) == set(devstack.SERVICES)
    assert all(s.alive for s in before.values()), before

    again = devstack.up(stack.dir)

    assert again == stack
    assert devstack.status(stack.dir) == before  # same ports, same pids
    assert devstack.load(stack.dir) == stack


def test_env_has_exactly_the_documented_keys(stack: StackInfo) -> None:
    assert stack.env() == {
        "SHARDLINE_KINESIS_ENDPOINT_URL": f"http://127.0.0.1:{stack.kinesis_port}",
        "SHARDLINE_S3_ENDPOINT_URL": f"http://127.0.0.1:{stack.s3_port}",
        "SHARDLINE_S3_BUCKET": stack.bucket,
        "SHARDLINE_GEARMAN_SERVERS": f"127.0.0.1:{stack.gearman_port}",
        "SHARDLINE_WAREHOUSE_DSN": (
            f"host=127.0.0.1 port={stack.pg_port} dbname=shardline user=postgres"
        ),
        "SHARDLINE_WAREHOUSE_MODE": "postgres",  # migrate renders the DDL for it
        "SHARDLINE_CONTROL_BACKEND": "postgres",
        "SHARDLINE_CONTROL_DSN": (
            f"host=127.0.0.1 port={stack.pg_port} dbname=shardline_control user=postgres"
        ),
        "SHARDLINE_CONTROL_DYNAMODB_ENDPOINT_URL": f"http://127.0.0.1:{stack.s3_port}",
        # the lake's SQL catalog (docs/lake.md); the lake stays off without lake.tables
        "SHARDLINE_LAKE_CATALOG": "sql",
        "SHARDLINE_LAKE_CATALOG_URI": (
            f"postgresql+psycopg2://postgres@127.0.0.1:{stack.pg_port}/shardline_control"
        ),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    ports = [stack.gearman_port, stack.kinesis_port, stack.s3_port, stack.pg_port]
    assert len(set(ports)) == 4


def test_kinesalite_answers(kinesis, stream_name: str) -> None:
    kinesis.create_stream(StreamName=stream_name, ShardCount=4)
    try:
        wait_active(kinesis, stream_name)  # createStreamMs=0: ACTIVE on kinesalite's next tick
        shards = kinesis.list_shards(StreamName=stream_name)["Shards"]
        assert len(shards) == 4

        put = kinesis.put_record(StreamName=stream_name, Data=b"hello", PartitionKey="k")
        iterator = kinesis.get_shard_iterator(
            StreamName=stream_name, ShardId=put["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records = kinesis.get_records(ShardIterator=iterator)["Records"]
        assert [r["Data"] for r in records] == [b"hello"]
        assert records[0]["SequenceNumber"] == put["SequenceNumber"]
    finally:
        kinesis.delete_stream(StreamName=stream_name)


def test_moto_s3_answers(stack: StackInfo, s3, s3_prefix: str) -> None:
    key = f"{s3_prefix}/hello.bin"
    s3.put_object(Bucket=stack.bucket, Key=key, Body=b"\x00payload\xff")
    assert s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read() == b"\x00payload\xff"
    listed = s3.list_objects_v2(Bucket=stack.bucket, Prefix=f"{s3_prefix}/")
    assert [o["Key"] for o in listed["Contents"]] == [key]


def test_gearman_round_trip(stack: StackInfo) -> None:
    assert _gearman_echo(stack.gearman_server) == b"x"


def test_moto_serves_dynamodb_for_the_control_store(stack: StackInfo) -> None:
    dynamodb = stack.client("dynamodb")
    name = f"t-{os.getpid()}-probe"
    dynamodb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                          KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
                          AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}])
    try:
        dynamodb.put_item(TableName=name, Item={"k": {"S": "x"}})
        assert dynamodb.get_item(TableName=name, Key={"k": {"S": "x"}})["Item"] == {"k": {"S": "x"}}
    finally:
        dynamodb.delete_table(TableName=name)


def test_the_control_store_has_a_database_of_its_own(stack: StackInfo) -> None:
    import psycopg2

    with psycopg2.connect(stack.control_dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_database(), current_setting('transaction_isolation')")
        assert cur.fetchone() == ("shardline_control", "read committed")
    conn.close()


def test_postgres_answers(pg_conn, pg_schema: str) -> None:
    with pg_conn.cursor() as cur:
        cur.execute("SELECT 1, current_database(), current_schema()")
        assert cur.fetchone() == (1, "shardline", pg_schema)
        cur.execute("CREATE TABLE t (x int)")  # lands in the test's schema
        cur.execute("SELECT to_regclass(%s)", (f"{pg_schema}.t",))
        assert cur.fetchone()[0] is not None


def test_stack_env(
    stack: StackInfo, stack_env: dict[str, str], pg_schema: str, s3_prefix: str
) -> None:
    assert stack_env["SHARDLINE_WAREHOUSE_SCHEMA"] == pg_schema
    assert stack_env["SHARDLINE_S3_PREFIX"] == s3_prefix
    assert stack_env["PATH"] == os.environ["PATH"]
    for key, value in stack.env().items():
        assert stack_env[key] == value


def test_stack_env_is_accepted_by_shardline_settings(
    stack: StackInfo, stack_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings reject unknown SHARDLINE_* variables: every name we export must be known."""
    from shardline import settings

    monkeypatch.chdir(tmp_path)  # no ./shardline.ini
    env = {k: v for k, v in stack_env.items() if k != "SHARDLINE_CONFIG"}
    loaded = settings.load(env=env)
    assert loaded.kinesis.endpoint_url == stack.kinesis_endpoint_url
    assert loaded.s3.endpoint_url == stack.s3_endpoint_url
    assert loaded.s3.bucket == stack.bucket
    assert loaded.s3.prefix == stack_env["SHARDLINE_S3_PREFIX"]
    assert loaded.gearman.servers == [stack.gearman_server]
    assert loaded.warehouse.dsn == stack.dsn
    assert loaded.warehouse.schema == stack_env["SHARDLINE_WAREHOUSE_SCHEMA"]
    assert loaded.control.backend == "postgres"
    assert loaded.control.dsn == stack.control_dsn != stack.dsn
    assert loaded.control.dynamodb_endpoint_url == stack.s3_endpoint_url


@pytest.mark.parametrize("service", devstack.SERVICES)
def test_listens_on_loopback_only(stack: StackInfo, service: str) -> None:
    port = {
        "gearman": stack.gearman_port,
        "kinesis": stack.kinesis_port,
        "s3": stack.s3_port,
        "postgres": stack.pg_port,
    }[service]
    assert _tcp_listen_addresses(port) == {"127.0.0.1"}


def test_cli_env_can_be_evaluated_by_a_shell(stack: StackInfo) -> None:
    script = (
        f'eval "$({sys.executable} -m shardline.devstack env --dir {stack.dir})" && '
        'printf "%s\\n" "$SHARDLINE_WAREHOUSE_DSN" "$SHARDLINE_GEARMAN_SERVERS" && '
        "env | grep -c ^SHARDLINE_"
    )
    out = subprocess.run(
        ["bash", "-c", script], cwd=devstack.REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out == [stack.dsn, stack.gearman_server, "11"]  # exported, not just set


def test_cli_status(stack: StackInfo, capsys: pytest.CaptureFixture[str]) -> None:
    assert devstack.main(["status", "--dir", str(stack.dir)]) == 0
    table = capsys.readouterr().out
    for name, st in devstack.status(stack.dir).items():
        assert f"{name}" in table and str(st.pid) in table and str(st.port) in table


# ------------------------------------------------------------ a stack of its own


def test_repair_then_down_stops_every_process(tmp_path: Path) -> None:
    dir = tmp_path / "stack"
    try:
        info = devstack.up(dir)
        first = devstack.status(dir)

        # A dead service and a hung one (alive but not answering) get restarted ...
        os.kill(first["kinesis"].pid, signal.SIGKILL)
        os.kill(first["gearman"].pid, signal.SIGSTOP)
        assert devstack.up(dir) == info
        second = devstack.status(dir)
        assert all(s.alive for s in second.values()), second
        assert second["kinesis"].pid != first["kinesis"].pid
        assert second["gearman"].pid != first["gearman"].pid
        # ... on the same ports, the others are left alone.
        assert second["s3"] == first["s3"] and second["postgres"] == first["postgres"]
        assert {n: s.port for n, s in second.items()} == {n: s.port for n, s in first.items()}
        assert _gearman_echo(info.gearman_server) == b"x"
        assert not _running(first["gearman"].pid)
    finally:
        devstack.down(dir)

    pids = [s.pid for s in first.values()] + [s.pid for s in second.values()]
    assert [pid for pid in pids if _running(pid)] == []
    assert devstack.status(dir) == {}
    assert devstack.load(dir) is None
    assert not (dir / "state.json").exists()
    devstack.down(dir)  # harmless when nothing runs


def test_stop_and_start_one_service_for_outage_drills(tmp_path: Path) -> None:
    """PostgreSQL keeps its data across stop/start; the others come back on their port."""
    import psycopg2

    dir = tmp_path / "stack"
    try:
        info = devstack.up(dir)
        with psycopg2.connect(info.dsn) as conn, conn.cursor() as cur:
            cur.execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (42)")
        before = devstack.status(dir)
        devstack.stop_service(dir, "postgres")
        devstack.stop_service(dir, "gearman")
        down = devstack.status(dir)
        assert not down["postgres"].alive and not down["gearman"].alive
        assert down["s3"] == before["s3"] and down["kinesis"] == before["kinesis"]
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(info.dsn, connect_timeout=2)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", before["gearman"].port), timeout=1)

        subprocess.run([sys.executable, "-m", "shardline.devstack", "start", "postgres",
                        "--dir", str(dir)], check=True, capture_output=True)
        devstack.start_service(dir, "gearman")
        after = devstack.status(dir)
        assert all(s.alive for s in after.values()), after
        assert {n: s.port for n, s in after.items()} == {n: s.port for n, s in before.items()}
        with psycopg2.connect(info.dsn) as conn, conn.cursor() as cur:
            cur.execute("SELECT n FROM kept")
            assert cur.fetchall() == [(42,)]
        assert _gearman_echo(info.gearman_server) == b"x"
        with pytest.raises(devstack.DevstackError, match="unknown service"):
            devstack.stop_service(dir, "redis")
    finally:
        devstack.down(dir)


def test_missing_binary_fails_before_starting_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_which = shutil.which

    def which(name: str, *args, **kwargs):
        return None if name == "gearmand" else real_which(name, *args, **kwargs)

    monkeypatch.setattr(devstack.shutil, "which", which)
    with pytest.raises(devstack.DevstackError, match="apt-get install gearman-job-server"):
        devstack.up(tmp_path / "stack")
    assert not (tmp_path / "stack" / "state.json").exists()


def test_up_reports_a_service_that_cannot_start(tmp_path: Path) -> None:
    """A port already taken: the error names the service and shows its log."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        dir = tmp_path / "stack"
        started = time.monotonic()
        try:
            with pytest.raises(devstack.DevstackError, match=r"(?s)kinesis exited.*EADDRINUSE"):
                devstack.up(dir, ports={"kinesis": port})
        finally:
            recorded = devstack.status(dir)
            devstack.down(dir)
        assert time.monotonic() - started < 20
    assert [s.pid for s in recorded.values() if s.pid and _running(s.pid)] == []


def test_a_stranger_on_the_port_is_not_taken_for_our_service(tmp_path: Path) -> None:
    """Another gearmand answers on the port: up must not accept it as ours."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stranger = subprocess.Popen(
        ["gearmand", "-L", "127.0.0.1", "-p", str(port), "--log-file=none",
         f"--pid-file={tmp_path / 'stranger.pid'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    dir = tmp_path / "stack"
    try:
        _wait_for_port(port)
        # Our gearmand keeps retrying bind(); the stranger answers in its place.
        with pytest.raises(
            devstack.DevstackError, match="(?s)gearman did not answer.*another process answers"
        ):
            devstack.up(dir, ports={"gearman": port}, timeout=2)
    finally:
        recorded = devstack.status(dir)
        devstack.down(dir)
        stranger.terminate()
        stranger.wait(5)
    assert [s.pid for s in recorded.values() if s.pid and _running(s.pid)] == []
