"""`shardline status` against hand-written control rows, a real gearmand and kinesalite.

Each alert is provoked for real: a gearmand port with nothing listening, a stage function
no worker registered for (then a real worker that registers it), a host heartbeat written
with a 1 s TTL and left to expire, a pending file staged two hours ago, dead letters over
the ratio."""
from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from shardline import migrate
from tests.pipeline import wait_active

pytestmark = pytest.mark.integration

SEQ_A = "49656215286911442018427376489937437429617402736049487874"
SEQ_B = "49656215286911442018427376489937437429617402736049487999"


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _status(env, *args):
    proc = subprocess.run([sys.executable, "-m", "shardline.cli", "status", *args], env=env,
                          text=True, capture_output=True, timeout=60)
    return proc


@contextlib.contextmanager
def _worker(server: str, function: bytes):
    """A real Gearman worker registered for ``function`` until the block ends (it takes
    whatever jobs are queued); yields the jobs it took."""
    import gearman

    from shardline.ops import gearman_admin
    from shardline.devstack.fleet import wait_for

    done: list = []
    stop = threading.Event()
    worker = gearman.GearmanWorker([server])
    worker.register_task(function, lambda w, job: done.append(job) or b"")
    worker.after_poll = lambda any_activity: not stop.is_set()
    thread = threading.Thread(target=lambda: worker.work(poll_timeout=0.2), daemon=True)
    thread.start()

    def registered() -> bool:
        st = gearman_admin.server_status(server)
        return any(f.name == function.decode() and f.workers for f in st.functions)

    try:
        wait_for(registered, 10, "the worker registered", every=0.05)
        yield done
    finally:
        stop.set()
        thread.join(5)
        worker.shutdown()


def _drain(server: str, function: bytes, count: int) -> None:
    """Take our queued test jobs off the shared gearmand again."""
    import gearman

    worker = gearman.GearmanWorker([server])
    done = []
    worker.register_task(function, lambda w, job: done.append(job) or b"")
    worker.after_poll = lambda any_activity: len(done) < count
    deadline = time.monotonic() + 10
    while len(done) < count and time.monotonic() < deadline:
        worker.work(poll_timeout=0.5)
    worker.shutdown()


def test_status_reports_numbers_and_alerts(stack_env, stream_name, pg_schema, pg_conn, kinesis,
                                           control_store, control_conn):
    migrate.migrate(pg_conn, "postgres")
    kinesis.create_stream(StreamName=stream_name, ShardCount=2)
    wait_active(kinesis, stream_name)
    shard0, shard1 = sorted(s["ShardId"] for s in
                            kinesis.list_shards(StreamName=stream_name)["Shards"])
    server = stack_env["SHARDLINE_GEARMAN_SERVERS"].split(",")[0]
    dead_server = f"127.0.0.1:{_free_port()}"
    function = f"status_test_{uuid.uuid4().hex[:8]}"
    env = {**stack_env, "SHARDLINE_WAREHOUSE_SCHEMA": pg_schema,
           "SHARDLINE_GEARMAN_SERVERS": f"{server},{dead_server}",
           "SHARDLINE_GEARMAN_STAGE_FUNCTION": function,
           "SHARDLINE_CONSUMER_REPORT_INTERVAL_S": "5", "SHARDLINE_STATUS_MAX_LAG_MS": "60000"}

    now = _now()
    with control_conn.cursor() as cur:  # the control store's rows, written by hand
        cur.execute("INSERT INTO shard_leases (stream, shard_id, owner, token, acquired_at, "
                    "renewed_at, expires_at) VALUES (%s, %s, 'host-a:11:u1', 3, %s, %s, %s)",
                    (stream_name, shard0, now - timedelta(minutes=5), now - timedelta(seconds=2),
                     now + timedelta(seconds=28)))
        cur.execute("INSERT INTO checkpoint_history (stream, shard_id, sequence_number, "
                    "sub_sequence_number, closes_sequence, source, lease_token, created_at) "
                    "VALUES (%s, %s, %s, 0, true, 'consumer', 3, %s) RETURNING id",
                    (stream_name, shard0, SEQ_A, now))
        (history_id,), = cur.fetchall()
        cur.execute("INSERT INTO checkpoints (stream, shard_id, sequence_number, "
                    "sub_sequence_number, closes_sequence, lease_token, history_id, updated_at) "
                    "VALUES (%s, %s, %s, 0, true, 3, %s, %s)",
                    (stream_name, shard0, SEQ_A, history_id, now))
        for shard, lag in ((shard0, 1234), (shard1, 0)):
            cur.execute("INSERT INTO shard_status (stream, shard_id, owner, last_read_sequence, "
                        "checkpoint_sequence, millis_behind_latest, iterator_age_ms, "
                        "inflight_batches, inflight_bytes, records_per_s, state, updated_at) "
                        "VALUES (%s, %s, 'host-a:11:u1', %s, %s, %s, 800, 3, 9000, 250.5, "
                        "'reading', %s)",
                        (stream_name, shard, SEQ_B, SEQ_A, lag, now - timedelta(seconds=1)))
    with control_conn.cursor() as cur:  # the ledger: control store
        files = [("k1", "pending", 100, 10, 0, 30), ("k2", "pending", 250, 20, 2, 90),
                 ("k3", "loaded", 400, 40, 3, 300), ("k4", "quarantined", 50, 5, 0, 60)]
        for key, state, size, rows, dead, age in files:
            cur.execute("INSERT INTO staged_files (s3_key, target_table, stream, shard_id, "
                        "first_sequence, first_sub_sequence, last_sequence, last_sub_sequence, "
                        "row_count, byte_count, dead_letter_key, dead_letter_count, state, "
                        "staged_at, error, quarantined_at) VALUES (%s, 'page_views', %s, %s, "
                        "%s, 0, %s, 0, %s, %s, NULL, %s, %s, %s, %s, %s)",
                        (f"{stream_name}/{key}", stream_name, shard0, SEQ_A, SEQ_B, rows, size,
                         dead, state, now - timedelta(seconds=age),
                         "COPY failed: bad timestamp" if state == "quarantined" else None,
                         now if state == "quarantined" else None))
    with pg_conn.cursor() as cur:  # the warehouse's load record
        cur.execute("INSERT INTO loaded_files (s3_key, target_table, load_id, stream, shard_id, "
                    "first_sequence, first_sub_sequence, last_sequence, last_sub_sequence, "
                    "row_count, byte_count, staged_at, loaded_at) VALUES (%s, 'page_views', "
                    "'load-1', %s, %s, %s, 0, %s, 0, 40, 400, %s, %s)",
                    (f"{stream_name}/k3", stream_name, shard0, SEQ_A, SEQ_A,
                     now - timedelta(seconds=300), now - timedelta(seconds=20)))
        cur.execute("INSERT INTO loads (load_id, target_table, manifest_key, file_count, "
                    "byte_count, rows_copied, rows_inserted, lease_token, started_at, "
                    "finished_at) VALUES ('load-1', 'page_views', 'm/load-1.manifest', 1, 400, "
                    "40, 39, 1, %s, %s)",
                    (now - timedelta(seconds=22), now - timedelta(seconds=20)))
    pg_conn.commit()

    control_store.assign(stream_name, shard1, "host-x")
    control_store.heartbeat("host-x", 30, {"stream": stream_name})

    import gearman

    client = gearman.GearmanClient([server])
    for i in range(3):
        client.submit_job(function.encode(), b"x", unique=f"{function}-{i}", background=True,
                          poll_timeout=5)
    drained = False
    try:
        # 1. shard1 has no lease, a gearmand does not answer, no worker for the stage
        # function, 5 dead letters of 80 records (> 5%), a quarantined file: alerts
        proc = _status(env, "--stream", stream_name, "--json")
        assert proc.returncode == 3, proc.stderr
        assert f"{shard1}: no live owner" in proc.stderr
        assert f"ALERT gearman {dead_server} is unreachable: connection refused" in proc.stderr
        assert (f"ALERT gearman: no worker is registered for {function} on {server} "
                f"(3 jobs queued)") in proc.stderr
        assert (f"ALERT {stream_name}: 5 dead letters of 80 records staged in the last 15m "
                f"(6.25% > status.max_dead_letter_ratio = 0.05)") in proc.stderr
        report = json.loads(proc.stdout)
        assert len(report["alerts"]) == 5 and all(f"ALERT {a}" in proc.stderr
                                                  for a in report["alerts"])
        assert report["dead_letters"] == 5 and report["dead_letter_window"]["files"] == 4
        (host,) = report["hosts"]
        assert host["host_id"] == "host-x" and host["alive"] is True
        assert host["shards"] == [shard1] and 0 <= host["heartbeat_age_s"] < 30
        s0, s1 = report["shards"]
        assert (s0["shard_id"], s1["shard_id"]) == (shard0, shard1)
        assert s0["owner"] == "host-a:11:u1" and s0["owner_live"] and s0["open"] is True
        assert 1.5 <= s0["lease_age_s"] < 10
        assert s0["checkpoint"]["sequence_number"] == SEQ_A  # full in --json
        assert s0["watermarks"][0]["loaded_sequence"] == SEQ_A
        assert s0["status"]["last_read_sequence"] == SEQ_B
        assert s0["status"]["millis_behind_latest"] == 1234
        assert s0["status"]["iterator_age_ms"] == 800
        assert s0["status"]["inflight_batches"] == 3
        assert s0["status"]["records_per_s"] == 250.5
        assert s0["status"]["stale"] is False and s0["alerts"] == []
        assert s1["owner"] is None and s1["alerts"]
        assert report["staged_pending_total"] == {"files": 2, "bytes": 350, "rows": 30}
        assert 90 <= report["staged_pending"][0]["oldest_age_s"] < 120
        (q,) = report["quarantined"]
        assert q["s3_key"] == f"{stream_name}/k4" and "bad timestamp" in q["error"]
        assert report["last_load"]["load_id"] == "load-1"
        assert report["last_load"]["rows_copied"] == 40
        assert report["last_load"]["rows_inserted"] == 39
        fn = report["gearman"]["functions"][function]
        assert fn["queued"] == 3 and fn["running"] == 0 and fn["workers"] == 0
        servers = {s["server"]: s for s in report["gearman"]["servers"]}
        assert servers[server]["up"] is True
        assert servers[dead_server]["up"] is False  # shown as down, not a crash

        # the text screen: shortened sequences, same exit code
        text = _status(env, "--stream", stream_name)
        assert text.returncode == 3
        assert SEQ_A not in text.stdout and ".." + SEQ_A[-10:] in text.stdout
        assert "DOWN" in text.stdout and function in text.stdout

        # 2. every shard owned and fresh, nothing quarantined, gearmand answering with a
        # worker registered, dead letters under a 10% ratio: healthy; with no stream named,
        # status shows the streams the control store knows
        with control_conn.cursor() as cur:
            cur.execute("DELETE FROM staged_files WHERE state = 'quarantined'")
            cur.execute("INSERT INTO shard_leases (stream, shard_id, owner, token, acquired_at, "
                        "renewed_at, expires_at) VALUES (%s, %s, 'host-b:22:u2', 1, %s, %s, %s)",
                        (stream_name, shard1, _now(), _now(), _now() + timedelta(seconds=30)))
        pg_conn.commit()
        env.update({"SHARDLINE_GEARMAN_SERVERS": server,
                    "SHARDLINE_STATUS_MAX_DEAD_LETTER_RATIO": "0.1"})
        with _worker(server, function.encode()):
            drained = True  # the worker takes the queued jobs
            proc = _status(env, "--json")
            assert proc.returncode == 0, proc.stderr
            report = json.loads(proc.stdout)
            assert report["healthy"] is True and report["streams"] == [stream_name]
            assert report["gearman"]["functions"][function]["workers"] >= 1
            proc = _status(env, "--all-streams")
            assert proc.returncode == 0, proc.stderr
            assert "host-x" in proc.stdout and "live" in proc.stdout

        # 3. a stale status row (> 3 x report interval), too much lag, a file pending for
        # two hours (> 3 x loader.max_interval_s), a host whose 1 s heartbeat expired and
        # (the worker gone) no worker for the stage function: alert again
        control_store.heartbeat("host-x", 1, {"stream": stream_name})
        with control_conn.cursor() as cur:
            cur.execute("UPDATE shard_status SET updated_at = %s WHERE stream = %s AND "
                        "shard_id = %s", (_now() - timedelta(seconds=16), stream_name, shard0))
            cur.execute("UPDATE shard_status SET millis_behind_latest = 60001, updated_at = %s "
                        "WHERE stream = %s AND shard_id = %s", (_now(), stream_name, shard1))
            cur.execute("UPDATE staged_files SET staged_at = %s WHERE s3_key = %s",
                        (_now() - timedelta(hours=2), f"{stream_name}/k1"))
        pg_conn.commit()
        time.sleep(1.2)
        proc = _status(env, "--stream", stream_name, "--json")
        assert proc.returncode == 3
        assert f"{shard0}: status row is stale" in proc.stderr
        assert f"{shard1}: lags 60001 ms" in proc.stderr
        assert ("ALERT page_views: the loader is not loading: 2 files pending, the oldest "
                "staged 2h ago (> status.max_pending_age_s = 9m); last load") in proc.stderr
        assert "ALERT host host-x: heartbeat stopped" in proc.stderr
        assert f"it still has {shard1}" in proc.stderr
        assert f"no worker is registered for {function}" in proc.stderr
        report = json.loads(proc.stdout)
        assert report["hosts"][0]["alive"] is False
        assert report["dead_letters"] == 5  # k1 (2 h old) had none; the rest are in the window
    finally:
        if not drained:
            _drain(server, function.encode(), 3)
