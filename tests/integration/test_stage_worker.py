"""`shardline worker --functions stage` as a real subprocess: real gearmand, moto S3, PostgreSQL.

S3 and PostgreSQL come from the session ``stack`` (tests/conftest.py); each test
gets its own schema (migrated here), S3 prefix and Gearman function name, and
runs its own gearmand on a free port, so it can kill and restart it without
disturbing other tests.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from shardline.devstack.fleet import wait_for
from shardline import codec, layout
from shardline.ops import gearman_admin
from shardline.csvformat import POSTGRES_COPY_OPTIONS
from shardline.tables import PAGE_VIEWS
from tests.csvcheck import parse_csv
from shardline.workers.transform import page_view

pytestmark = pytest.mark.integration

SHARDLINE = str(Path(sys.executable).parent / "shardline")
GEARMAND = "/usr/sbin/gearmand" if os.path.exists("/usr/sbin/gearmand") else "gearmand"
SHARD = "shardId-000000000007"


# -- helpers ---------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gearmand:
    """A private gearmand on a fixed port that a test may kill and start again."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [GEARMAND, "-L", "127.0.0.1", "-p", str(self.port),
             f"--log-file={self.dir / 'gearmand.log'}", "--verbose=WARNING"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: gearman_admin.server_status(self.server, 0.5).up,
                 10, "gearmand to answer", every=0.05)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def workers(self, function: str) -> int:
        st = gearman_admin.server_status(self.server, 0.5)
        return sum(f.workers for f in st.functions if f.name == function) if st.up else 0

    def running(self, function: str) -> int:
        st = gearman_admin.server_status(self.server, 0.5)
        return sum(f.running for f in st.functions if f.name == function) if st.up else 0


class Ctx:
    """One test's names, env and handles."""

    def __init__(self, stack_env: dict, gearmand: Gearmand, schema: str, s3_prefix: str,
                 tmp: Path):
        self.gearmand = gearmand
        self.schema = schema
        self.tmp = tmp
        self.function = f"stage_it_{uuid.uuid4().hex[:10]}"
        self.prefix = s3_prefix.strip("/")  # the worker joins prefix and key with one "/"
        self.stream = "it-events"
        self.bucket = stack_env["SHARDLINE_S3_BUCKET"]
        self.dsn = stack_env["SHARDLINE_WAREHOUSE_DSN"]
        self.env = {**stack_env,
                    "SHARDLINE_GEARMAN_SERVERS": gearmand.server,
                    "SHARDLINE_GEARMAN_STAGE_FUNCTION": self.function,
                    "SHARDLINE_S3_PREFIX": self.prefix,
                    "SHARDLINE_WAREHOUSE_SCHEMA": schema,
                    "SHARDLINE_WORKER_RECONNECT_MAX_S": "0.5",
                    "PYTHONPATH": os.pathsep.join([str(tmp), os.environ.get("PYTHONPATH", "")]),
                    }
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    # workers
    def start_workers(self, n: int = 1, **extra_env: str) -> list[subprocess.Popen]:
        started = []
        for _ in range(n):
            wid = f"w{len(self.procs) + 1}"
            log = self.tmp / f"{wid}.log"
            proc = subprocess.Popen([SHARDLINE, "worker", "--functions", "stage", "--id", wid],
                                    env={**self.env, **extra_env}, cwd=self.tmp,
                                    stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
            proc.wid, proc.log = wid, log  # type: ignore[attr-defined]
            self.procs.append((proc, log))
            started.append(proc)
        want = self.gearmand.workers(self.function) + n
        try:
            wait_for(lambda: self.gearmand.workers(self.function) >= want,
                     30, f"{n} worker(s) to register {self.function}", every=0.05)
        except TimeoutError:
            raise AssertionError(self.logs()) from None
        return started

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
                         for _, log in self.procs if log.exists())

    def stop_all(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    # jobs
    def client(self):
        import gearman

        return gearman.GearmanClient([self.gearmand.server])

    def unique(self, batch: codec.Batch) -> str:
        return hashlib.sha1(f"{batch.stream}/{batch.batch_id}".encode()).hexdigest()

    def submit(self, batch: codec.Batch, timeout: float = 30) -> None:
        import gearman

        job = self.client().submit_job(self.function.encode(), codec.encode(batch),
                                       unique=self.unique(batch), poll_timeout=timeout)
        assert job.state == gearman.JOB_COMPLETE, (job.state, self.logs())
        assert job.result == b"", job.result  # completing is the answer

    def keys(self, batch: codec.Batch) -> tuple[str, str]:
        """The batch's staged and dead-letter keys, written out from the contract."""
        first, last = batch.first, batch.last
        rng = f"{first.sequence_number}-{first.sub_sequence_number}_{last.sequence_number}-" \
              f"{last.sub_sequence_number}"
        return (f"{self.prefix}/staged/page_views/{batch.stream}/{batch.shard_id}/{rng}.csv.gz",
                f"{self.prefix}/dead-letter/{batch.stream}/{batch.shard_id}/{rng}.jsonl.gz")

    def ledger_row(self, batch: codec.Batch) -> list[tuple]:
        """(state, row_count, dead_letter_count) of the batch's ledger row, by its key."""
        return self.cquery("SELECT state, row_count, dead_letter_count FROM staged_files "
                           "WHERE s3_key = %s", (self.keys(batch)[0],))

    # S3 / warehouse
    def s3(self):
        import boto3
        from botocore.config import Config

        e = self.env
        return boto3.client("s3", endpoint_url=e.get("SHARDLINE_S3_ENDPOINT_URL") or None,
                            region_name=e.get("AWS_DEFAULT_REGION", "us-east-1"),
                            aws_access_key_id=e.get("AWS_ACCESS_KEY_ID"),
                            aws_secret_access_key=e.get("AWS_SECRET_ACCESS_KEY"),
                            config=Config(s3={"addressing_style": "path"}))

    def objects(self) -> dict[str, bytes]:
        s3 = self.s3()
        listing = s3.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix + "/")
        return {o["Key"]: s3.get_object(Bucket=self.bucket, Key=o["Key"])["Body"].read()
                for o in listing.get("Contents", [])}

    def cquery(self, sql: str, params=()) -> list[tuple]:
        """A query on the control store (the staged-file ledger lives there)."""
        return self.query(sql, params, dsn=self.env["SHARDLINE_CONTROL_DSN"])

    def query(self, sql: str, params=(), dsn: str | None = None) -> list[tuple]:
        import psycopg2

        with psycopg2.connect(dsn or self.dsn) as conn, conn.cursor() as cur:
            cur.execute(f'SET search_path TO "{self.schema}"')
            cur.execute(sql, params)
            rows = cur.fetchall() if cur.description else []
        conn.close()
        return rows


SLOW_TRANSFORM = textwrap.dedent("""
    import time
    from shardline.workers.transform import page_view

    def slow(event):
        time.sleep(event.get("_sleep", 0))
        return page_view(event)
""")


@pytest.fixture
def ctx(stack_env, pg_schema, s3_prefix, tmp_path):
    import psycopg2

    from shardline import migrate

    conn = psycopg2.connect(stack_env["SHARDLINE_WAREHOUSE_DSN"],
                            options=f"-c search_path={pg_schema}")
    try:
        migrate.migrate(conn, "postgres")
    finally:
        conn.close()
    from shardline.controlstore.postgres import PostgresStore

    store = PostgresStore(stack_env["SHARDLINE_CONTROL_DSN"], pg_schema)
    store.create_tables()
    store.close()
    gearmand = Gearmand(tmp_path)
    gearmand.start()
    (tmp_path / "sl_it_transform.py").write_text(SLOW_TRANSFORM)
    c = Ctx(stack_env, gearmand, pg_schema, s3_prefix, tmp_path)
    yield c
    c.stop_all()
    gearmand.kill()


def seq(i: int) -> str:
    return str(10 ** 55 + i * 1000)


def event(i: int, **over) -> dict:
    e = {"event_id": str(uuid.UUID(int=i + 1, version=4)),
         "occurred_at": "2026-11-26T12:00:00.25+05:30",
         "url": f"https://shop.example.com/p/{i}?color=blue",
         "referrer": "https://www.google.com/",
         "user_agent": "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) Mobile/15E148",
         "ip": "203.0.113.9", "user_id": f"u-{i}", "session_id": f"s-{i}"}
    e.update(over)
    return e


def make_batch(datas: list[bytes], start: int = 1, stream: str = "it-events") -> codec.Batch:
    return codec.Batch(stream, SHARD, [
        codec.Record(seq(start + i), 0, f"pk{i}", d, 1_764_140_400_000 + i)
        for i, d in enumerate(datas)])


ODD_UA = 'Odd "agent", with\ttab, back\\slash\nnewline \x01ctrl 😀 café'

GOOD = [json.dumps(event(i)).encode() for i in range(5)] + [
    json.dumps(event(5, user_agent=ODD_UA, user_id=None, referrer=None),
               ensure_ascii=False).encode()]
BAD = [
    (b"this is not json", "not JSON"),
    (b"\xc3\x28 broken utf-8", "invalid UTF-8"),
    (json.dumps({k: v for k, v in event(7).items() if k != "ip"}).encode(),
     "transform: BadRecord: ip: missing"),
    (json.dumps(event(8, session_id="nul\x00here")).encode(),
     "column session_id: contains a NUL character"),
]


# -- tests ----------------------------------------------------------------------------
def test_stage_batch_objects_ledger_and_retry(ctx):
    ctx.start_workers(1)
    datas = GOOD[:3] + [BAD[0][0]] + GOOD[3:] + [b[0] for b in BAD[1:]]
    batch = make_batch(datas)
    ctx.submit(batch)

    rng = f"{seq(1)}-0_{seq(len(datas))}-0"
    key = f"{ctx.prefix}/staged/page_views/{ctx.stream}/{SHARD}/{rng}.csv.gz"
    dl_key = f"{ctx.prefix}/dead-letter/{ctx.stream}/{SHARD}/{rng}.jsonl.gz"
    assert ctx.keys(batch) == (key, dl_key)

    objects = ctx.objects()
    archived = layout.archive_key(ctx.prefix, batch)  # the raw batch, for reprocess
    assert set(objects) == {key, dl_key, archived}
    assert codec.decode(gzip.decompress(objects[archived])) == batch
    text = gzip.decompress(objects[key]).decode("utf-8")
    rows = [dict(zip(PAGE_VIEWS.column_names, r, strict=True)) for r in parse_csv(text)]
    assert len(rows) == 6
    good_recs = [r for r in batch.records if r.data in GOOD]
    for row, rec in zip(rows, good_recs, strict=True):
        want = page_view(json.loads(rec.data))
        assert row["event_id"] == want["event_id"]
        assert row["occurred_at"] == "2026-11-26 06:30:00.250000"
        assert row["url_host"] == "shop.example.com" and row["url_query"] == "color=blue"
        assert row["device_class"] == want["device_class"]
        assert row["ip_prefix"] == "203.0.113.0/24"
        assert row["user_agent"] == want["user_agent"]
        assert row["sequence_number"] == rec.sequence_number
        assert row["shard_id"] == SHARD and row["sub_sequence_number"] == "0"
        arrival = datetime.utcfromtimestamp(rec.arrival_ms / 1000)
        assert row["arrival_time"] == arrival.isoformat(" ", "microseconds")
        datetime.strptime(row["staged_at"], "%Y-%m-%d %H:%M:%S.%f")
    assert [r["device_class"] for r in rows] == ["mobile"] * 5 + ["other"]
    assert rows[-1]["user_agent"] == ODD_UA and rows[-1]["user_id"] is None
    assert rows[-1]["referrer"] is None and rows[-1]["referrer_host"] is None

    dls = [json.loads(line) for line in gzip.decompress(objects[dl_key]).splitlines()]
    assert len(dls) == 4
    by_data = {base64.b64decode(d["data_b64"]): d for d in dls}
    for data, reason in BAD:
        d = by_data[data]
        assert d["reason"].startswith(reason), d
        rec = next(r for r in batch.records if r.data == data)
        assert (d["shard_id"], d["sequence_number"], d["sub_sequence_number"],
                d["partition_key"]) == (SHARD, rec.sequence_number, 0, rec.partition_key)
        assert d["arrival_time"].endswith("Z")

    ledger = ctx.cquery("SELECT s3_key, state, row_count, dead_letter_count, dead_letter_key, "
                       "byte_count, stream, shard_id, first_sequence, last_sequence, staged_at "
                       "FROM staged_files WHERE s3_key LIKE %s", (ctx.prefix + "/%",))
    assert len(ledger) == 1
    assert ledger[0][:10] == (key, "pending", 6, 4, dl_key, len(objects[key]), ctx.stream,
                              SHARD, seq(1), seq(len(datas)))
    staged_at = ledger[0][10]
    assert ctx.cquery("SELECT transform_version, generation, arrival_min_ms, arrival_max_ms "
                      "FROM staged_files WHERE s3_key = %s", (key,)) == [
        ("page_view-1", None, min(r.arrival_ms for r in batch.records),
         max(r.arrival_ms for r in batch.records))]

    # The staged CSV loads into PostgreSQL with the shared COPY options, odd text intact.
    import psycopg2

    with psycopg2.connect(ctx.dsn) as conn, conn.cursor() as cur:
        cur.execute(f'SET search_path TO "{ctx.schema}"')
        cur.execute("CREATE TEMP TABLE pv (LIKE page_views)")
        cur.execute("ALTER TABLE pv DROP COLUMN loaded_at")  # the loader's columns
        cur.execute("ALTER TABLE pv DROP COLUMN transform_version")
        cur.copy_expert(f"COPY pv FROM STDIN {POSTGRES_COPY_OPTIONS}", io.StringIO(text))
        cur.execute("SELECT count(*), max(user_agent) FILTER (WHERE user_id IS NULL) FROM pv")
        assert cur.fetchone() == (6, ODD_UA)
        conn.rollback()
    conn.close()

    # The same batch again (a consumer retry, or a replay of the same records): its ledger
    # entry is there, so nothing is written again and the ledger is untouched.
    ctx.submit(batch)
    assert ctx.objects() == objects
    again = ctx.cquery("SELECT s3_key, state, staged_at FROM staged_files WHERE s3_key LIKE %s",
                      (ctx.prefix + "/%",))
    assert again == [(key, "pending", staged_at)]

    # A batch of only bad records: no staged object, ledger row born 'loaded'.
    bad_batch = make_batch([b"[]", b"{"], start=100)
    ctx.submit(bad_batch)
    bad_key, bad_dl_key = ctx.keys(bad_batch)
    assert bad_key not in ctx.objects() and bad_dl_key in ctx.objects()
    assert ctx.cquery("SELECT state, row_count, dead_letter_count, dead_letter_key "
                     "FROM staged_files WHERE s3_key = %s",
                     (bad_key,)) == [("loaded", 0, 2, bad_dl_key)]


def test_two_workers_both_take_jobs_and_stop_cleanly(ctx):
    procs = ctx.start_workers(2, SHARDLINE_WORKER_TRANSFORM="sl_it_transform:slow")
    import gearman

    batches = [make_batch([json.dumps(event(i, _sleep=0.4)).encode()], start=10 + i)
               for i in range(4)]
    client = ctx.client()
    jobs = client.submit_multiple_jobs(
        [{"task": ctx.function.encode(), "data": codec.encode(b), "unique": ctx.unique(b)}
         for b in batches], wait_until_complete=True, poll_timeout=30)
    assert [j.state for j in jobs] == [gearman.JOB_COMPLETE] * 4, ctx.logs()
    assert [j.result for j in jobs] == [b""] * 4
    assert [ctx.ledger_row(b) for b in batches] == [[("pending", 1, 0)]] * 4
    # While one worker sleeps in its 0.4 s job, the other must have taken one.
    for proc in procs:
        assert "staged 1 rows" in proc.log.read_text(), ctx.logs()
        assert f"worker={proc.wid}" in proc.log.read_text()
    assert len(ctx.cquery("SELECT 1 FROM staged_files WHERE s3_key LIKE %s",
                         (ctx.prefix + "/%",))) == 4

    # Idle workers stop promptly and cleanly on SIGTERM.
    t0 = time.monotonic()
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        assert proc.wait(10) == 0, ctx.logs()
    assert time.monotonic() - t0 < 5
    for proc in procs:
        assert "worker stopped (signal SIGTERM)" in proc.log.read_text()


def test_worker_survives_gearmand_restart(ctx):
    (proc,) = ctx.start_workers(1)
    before = make_batch([GOOD[0]], start=200)
    ctx.submit(before)
    assert ctx.ledger_row(before) == [("pending", 1, 0)]

    ctx.gearmand.kill()
    time.sleep(1.0)  # the worker notices and retries against a closed port
    ctx.gearmand.start()  # same port
    wait_for(lambda: ctx.gearmand.workers(ctx.function) >= 1,
             15, "the worker to reconnect and register again", every=0.05)
    assert proc.poll() is None
    # A new client (the old one's connection died with gearmand).
    after = make_batch([GOOD[1]], start=300)
    ctx.submit(after)
    assert ctx.ledger_row(after) == [("pending", 1, 0)]
    log = proc.log.read_text()
    assert "gearmand connection lost" in log and "connected to gearmand again" in log, log
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0, ctx.logs()


def test_sigterm_during_job_finishes_it_then_exits_zero(ctx):
    import gearman

    (proc,) = ctx.start_workers(1, SHARDLINE_WORKER_TRANSFORM="sl_it_transform:slow")
    batch = make_batch([json.dumps(event(1, _sleep=1.5)).encode(), GOOD[2]], start=400)
    client = ctx.client()
    job = client.submit_job(ctx.function.encode(), codec.encode(batch),
                            unique=ctx.unique(batch), wait_until_complete=False,
                            poll_timeout=30)
    wait_for(lambda: ctx.gearmand.running(ctx.function) >= 1, 10, "the job to start", every=0.05)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    job = client.wait_until_jobs_completed([job], poll_timeout=30)[0]
    assert job.state == gearman.JOB_COMPLETE, ctx.logs()
    assert job.result == b""
    assert proc.wait(10) == 0, ctx.logs()
    assert ctx.ledger_row(batch) == [("pending", 2, 0)]
    log = proc.log.read_text()
    assert "worker stopped (signal SIGTERM): 1 jobs done" in log, log


def test_second_signal_stops_at_once(ctx):
    (proc,) = ctx.start_workers(1, SHARDLINE_WORKER_TRANSFORM="sl_it_transform:slow")
    batch = make_batch([json.dumps(event(1, _sleep=20)).encode()], start=500)
    client = ctx.client()
    client.submit_job(ctx.function.encode(), codec.encode(batch), unique=ctx.unique(batch),
                      wait_until_complete=False, poll_timeout=5)
    wait_for(lambda: ctx.gearmand.running(ctx.function) >= 1, 10, "the job to start", every=0.05)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert proc.poll() is None, "the first signal waits for the job"
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGUSR1)  # faulthandler: every thread's stack to the log
        time.sleep(1)
        proc.kill()
        raise AssertionError(f"the worker did not exit after a second SIGTERM\n{ctx.logs()}") \
            from None
    assert code == 130, ctx.logs()
    # far sooner than the job's 20 s (a loaded machine's exit can take seconds)
    assert time.monotonic() - t0 < 10
    # nothing was staged for the interrupted job
    assert ctx.cquery("SELECT count(*) FROM staged_files WHERE s3_key LIKE %s",
                     (ctx.prefix + "/%",)) == [(0,)]


def test_sigusr1_dumps_every_thread_stack_and_keeps_working(ctx):
    (proc,) = ctx.start_workers(1)
    proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: "most recent call first" in ctx.logs(), 10, "a stack dump in the log",
             every=0.1)
    assert "workers/runner.py" in ctx.logs()
    assert proc.poll() is None
    batch = make_batch([GOOD[1]], start=900)
    ctx.submit(batch)
    assert ctx.ledger_row(batch) == [("pending", 1, 0)]
