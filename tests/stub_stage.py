"""A trivial stage worker for consumer tests and the consumer benchmark.

Gearman worker threads decode each batch and record what arrived, either in
PostgreSQL (tables ``stub_batches`` / ``stub_records`` in the test schema, so a
consumer *subprocess* can be checked afterwards) or only in memory (bench). It
can be told to fail chosen batches (``fail=callable(batch) -> bool``), or to be
slow (``delay_s``), to drive the consumer's retry, stop and backpressure paths.
Run standalone: ``python tests/stub_stage.py --servers H:P --function F [--dsn ... --schema ...]``.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
import threading
import time
from typing import Any, Callable

import gearman

from shardline.codec import Batch, decode
from shardline.devstack.fleet import wait_for

DDL = [
    "CREATE TABLE IF NOT EXISTS stub_batches (id BIGSERIAL PRIMARY KEY, stream TEXT, "
    "shard_id TEXT, batch_id TEXT, first_seq TEXT, first_sub BIGINT, last_seq TEXT, "
    "last_sub BIGINT, n INTEGER, ok BOOLEAN, received_at TIMESTAMPTZ DEFAULT clock_timestamp())",
    "CREATE TABLE IF NOT EXISTS stub_records (stream TEXT, shard_id TEXT, seq TEXT, sub BIGINT, "
    "batch_id TEXT, data BYTEA, received_at TIMESTAMPTZ DEFAULT clock_timestamp())",
]


class _Worker(gearman.GearmanWorker):
    stopping = False

    def after_poll(self, any_activity: bool) -> bool:
        return not self.stopping


class StubStage:
    def __init__(self, servers: list[str], function: str, *, dsn: str | None = None,
                 schema: str | None = None, fail: Callable[[Batch], bool] | None = None,
                 delay_s: float = 0.0, threads: int = 2, keep_data: bool = False):
        self.servers, self.function = servers, function.encode()
        self.dsn, self.schema, self.fail, self.delay_s = dsn, schema, fail, delay_s
        self.threads, self.keep_data = threads, keep_data
        self.batches = 0
        self.records = 0
        self.failures = 0
        self._lock = threading.Lock()
        self._workers: list[_Worker] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()

    # -- db --------------------------------------------------------------------
    def _connect(self) -> Any:
        import psycopg2

        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        with conn.cursor() as cur:
            if self.schema:
                cur.execute(f'SET search_path TO "{self.schema}"')
        return conn

    def create_tables(self) -> None:
        if self.dsn:
            conn = self._connect()
            with conn.cursor() as cur:
                for sql in DDL:
                    cur.execute(sql)
            conn.close()

    # -- work ------------------------------------------------------------------
    def _handle(self, conn: Any, job: Any) -> bytes:
        batch = decode(job.data)
        if self.delay_s:
            time.sleep(self.delay_s)
        failing = bool(self.fail and self.fail(batch))
        if conn is not None:
            from psycopg2.extras import execute_values

            first, last = batch.first, batch.last
            with conn.cursor() as cur:
                cur.execute("INSERT INTO stub_batches (stream, shard_id, batch_id, first_seq, "
                            "first_sub, last_seq, last_sub, n, ok) VALUES "
                            "(%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                            (batch.stream, batch.shard_id, batch.batch_id, first.sequence_number,
                             first.sub_sequence_number, last.sequence_number,
                             last.sub_sequence_number,
                             len(batch.records), not failing))
                if not failing:
                    execute_values(cur, "INSERT INTO stub_records (stream, shard_id, seq, sub, "
                                        "batch_id, data) VALUES %s",
                                   [(batch.stream, batch.shard_id, r.sequence_number,
                                     r.sub_sequence_number, batch.batch_id,
                                     r.data if self.keep_data else None)
                                    for r in batch.records], page_size=1000)
        with self._lock:
            if failing:
                self.failures += 1
            else:
                self.batches += 1
                self.records += len(batch.records)
        if failing:
            raise RuntimeError(f"stub stage told to fail {batch.batch_id}")  # -> WORK_FAIL
        return b""  # like the stage job: completing is the answer

    def _run(self) -> None:
        conn = self._connect() if self.dsn else None
        while not self._stop.is_set():
            worker = _Worker(self.servers)
            self._workers.append(worker)
            worker.register_task(self.function, lambda w, job: self._handle(conn, job))
            try:
                worker.work(poll_timeout=0.2)
            except Exception:  # noqa: BLE001 - gearmand restarted: reconnect
                time.sleep(0.2)
            finally:
                worker.stopping = True
        if conn is not None:
            conn.close()

    def start(self) -> "StubStage":
        self.create_tables()
        for i in range(self.threads):
            t = threading.Thread(target=self._run, name=f"stub-stage-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        for w in self._workers:
            w.stopping = True
        for t in self._threads:
            t.join(5)

    def __enter__(self) -> "StubStage":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--servers", required=True)
    p.add_argument("--function", required=True)
    p.add_argument("--dsn")
    p.add_argument("--schema")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    stage = StubStage(a.servers.split(","), a.function, dsn=a.dsn, schema=a.schema,
                      threads=a.threads).start()
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        stage.stop()


if __name__ == "__main__":
    main()


# -- helpers for the consumer integration tests --------------------------------------------
REPO = __import__("pathlib").Path(__file__).resolve().parent.parent

# Fast settings: small idle sleeps, frequent checkpoints and reports, short leases.
FAST_CONSUMER = {
    "SHARDLINE_CONSUMER_IDLE_SLEEP_S": "0.1",
    "SHARDLINE_CONSUMER_BATCH_MAX_AGE_S": "0.2",
    "SHARDLINE_CONSUMER_CHECKPOINT_INTERVAL_S": "0.3",
    "SHARDLINE_CONSUMER_REPORT_INTERVAL_S": "0.5",
    "SHARDLINE_CONSUMER_LEASE_TTL_S": "6",
    "SHARDLINE_CONSUMER_LEASE_RENEW_S": "1",
    "SHARDLINE_CONSUMER_PARENT_POLL_S": "0.2",
    "SHARDLINE_CONSUMER_JOB_RETRY_MAX_S": "0.2",
    "SHARDLINE_GEARMAN_JOB_TIMEOUT_S": "30",
}


class Rig:
    """One test's stream, schema, stub stage function and consumer environment."""

    def __init__(self, stack_env: dict, pg_schema: str, pg_conn: Any, stream: str,
                 kinesis: Any, **overrides: str):
        from shardline import migrate

        pg_conn.rollback()
        pg_conn.autocommit = True
        with pg_conn.cursor() as cur:
            cur.execute(f'SET search_path TO "{pg_schema}"')
        migrate.migrate(pg_conn, "postgres")
        pg_conn.autocommit = True
        with pg_conn.cursor() as cur:
            cur.execute(f'SET search_path TO "{pg_schema}"')
        self.conn, self.schema, self.stream, self.kinesis = pg_conn, pg_schema, stream, kinesis
        self.function = f"stub_stage_{pg_schema}"
        self.env = {**stack_env, **FAST_CONSUMER, "SHARDLINE_WAREHOUSE_SCHEMA": pg_schema,
                    "SHARDLINE_GEARMAN_STAGE_FUNCTION": self.function,
                    "SHARDLINE_KINESIS_STREAM": stream, **overrides}
        # the repo root first, so `consumers` imports whatever the editable install maps
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), stack_env.get("PYTHONPATH", "")) if p)
        self.servers = self.env["SHARDLINE_GEARMAN_SERVERS"].split(",")
        self.dsn = self.env["SHARDLINE_WAREHOUSE_DSN"]
        from shardline.controlstore.postgres import PostgresStore

        # leases, checkpoints and status: the control store, same schema name
        self.control = PostgresStore(self.env["SHARDLINE_CONTROL_DSN"], pg_schema)
        self.control.create_tables()
        import psycopg2

        self.cconn = psycopg2.connect(self.env["SHARDLINE_CONTROL_DSN"],
                                      options=f"-c search_path={pg_schema}")
        self.cconn.autocommit = True
        self.procs: list[Any] = []

    def stage(self, **kw: Any) -> StubStage:
        return StubStage(self.servers, self.function, dsn=self.dsn, schema=self.schema, **kw)

    def create_stream(self, shards: int) -> list[str]:
        self.kinesis.create_stream(StreamName=self.stream, ShardCount=shards)
        wait_for(lambda: self.kinesis.describe_stream_summary(StreamName=self.stream)
                 ["StreamDescriptionSummary"]["StreamStatus"] == "ACTIVE",
                 10, "the stream ACTIVE", every=0.1)
        return sorted(s["ShardId"] for s in
                      self.kinesis.list_shards(StreamName=self.stream)["Shards"])

    def put(self, n: int, start: int = 0, size: int = 100) -> dict[str, list[str]]:
        """Put n records (keys spread over shards); returns {shard_id: [sequence...]}."""
        out: dict[str, list[str]] = {}
        for i in range(start, start + n, 500):
            recs = [{"Data": (f"rec-{j}-".encode() + b"x" * size)[:size],
                     "PartitionKey": f"pk-{j}"} for j in range(i, min(start + n, i + 500))]
            resp = self.kinesis.put_records(StreamName=self.stream, Records=recs)
            assert not resp.get("FailedRecordCount"), resp
            for r in resp["Records"]:
                out.setdefault(r["ShardId"], []).append(r["SequenceNumber"])
        return out

    def consumer(self, shard: str, log: "Path | None" = None, **env: str) -> Any:
        import subprocess
        import sys

        exe = str(Path(sys.executable).parent / "shardline")
        out = open(log, "ab") if log else subprocess.DEVNULL
        p = subprocess.Popen([exe, "consumer", "--stream", self.stream, "--shard", shard],
                             env={**self.env, **env}, stdout=out, stderr=subprocess.STDOUT
                             if log else subprocess.PIPE)
        self.procs.append(p)
        return p

    def sql(self, query: str, args: Any = None) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall() if cur.description else []

    def csql(self, query: str, args: Any = None) -> list[tuple]:
        """A query on the control store's tables (checkpoint_history, shard_status, ...)."""
        with self.cconn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall() if cur.description else []

    def delivered(self, shard: str | None = None) -> list[tuple[str, int]]:
        q = "SELECT seq, sub FROM stub_records"
        rows = self.sql(q + (" WHERE shard_id = %s" if shard else ""), (shard,) if shard else None)
        return [(s, int(sub)) for s, sub in rows]

    def distinct_counts(self) -> dict[str, int]:
        """Distinct sequence numbers delivered per shard (cheap enough to poll)."""
        return dict(self.sql("SELECT shard_id, count(DISTINCT seq) FROM stub_records "
                             "GROUP BY shard_id"))

    def checkpoint(self, shard: str) -> tuple | None:
        cp = self.control.get_checkpoint(self.stream, shard)
        return None if cp is None else (cp.sequence_number, cp.sub_sequence_number,
                                        cp.closes_sequence)

    def lease_owner(self, shard: str) -> str | None:
        lease = self.control.get_lease(self.stream, shard)
        return lease.owner if lease else None

    def wait_lease_expired(self, shard: str, timeout: float = 30) -> None:
        """After a SIGKILL the lease stays until its ttl passes (a restart exits 75 before)."""
        def expired() -> bool:
            lease = self.control.get_lease(self.stream, shard)
            return lease is not None and not lease.live(self.control.now())

        wait_for(expired, timeout, "lease expiry", every=0.1)

    def cleanup(self) -> None:
        self.control.close()
        self.cconn.close()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)

