"""`shardline status --serve` against the real stack, its page loaded in headless Chromium.

Control rows are written by hand (as in test_ops_status.py) into the real control store,
the load record into the real warehouse; kinesalite lists the shards, gearmand answers the
admin protocol. The server is a real subprocess; the page is checked after its JS ran,
then a value changed in the store must show up on the open page (no reload), and
``/metrics`` must carry the fleet values put in the store.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shardline import migrate
from shardline.devstack.state import free_ports
from tests.browser import Browser
from tests.pipeline import wait_active

pytestmark = pytest.mark.integration

SEQ_A = "49656215286911442018427376489937437429617402736049487874"
SEQ_B = "49656215286911442018427376489937437429617402736049487999"
INJECTION = '<img src=x onerror="document.title=\'pwned\'">bad timestamp</td>'


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _wait_json(url: str, ok, proc: subprocess.Popen, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"status --serve exited {proc.returncode}"
        try:
            code, body = _get(url)
            if code == 200:
                last = json.loads(body)
                if ok(last):
                    return last
        except OSError:
            pass  # not listening yet
        time.sleep(0.1)
    raise AssertionError(f"{url} never satisfied the check; last {last!r}")


def _fill_store(control_conn, pg_conn, stream: str, shard0: str, shard1: str) -> None:
    now = _now()
    with control_conn.cursor() as cur:
        for shard, owner, token in ((shard0, "host-a:11:u1", 3), (shard1, "host-b:22:u2", 1)):
            cur.execute("INSERT INTO shard_leases (stream, shard_id, owner, token, acquired_at, "
                        "renewed_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                        (stream, shard, owner, token, now - timedelta(minutes=5),
                         now - timedelta(seconds=2), now + timedelta(minutes=10)))
        cur.execute("INSERT INTO checkpoint_history (stream, shard_id, sequence_number, "
                    "sub_sequence_number, closes_sequence, source, lease_token, created_at) "
                    "VALUES (%s, %s, %s, 0, true, 'consumer', 3, %s) RETURNING id",
                    (stream, shard0, SEQ_A, now - timedelta(seconds=4)))
        (history_id,), = cur.fetchall()
        cur.execute("INSERT INTO checkpoints (stream, shard_id, sequence_number, "
                    "sub_sequence_number, closes_sequence, lease_token, history_id, updated_at) "
                    "VALUES (%s, %s, %s, 0, true, 3, %s, %s)",
                    (stream, shard0, SEQ_A, history_id, now - timedelta(seconds=4)))
        for shard, owner, lag, rps in ((shard0, "host-a:11:u1", 1234, 250.5),
                                       (shard1, "host-b:22:u2", 0, 80.0)):
            cur.execute("INSERT INTO shard_status (stream, shard_id, owner, last_read_sequence, "
                        "checkpoint_sequence, millis_behind_latest, iterator_age_ms, "
                        "inflight_batches, inflight_bytes, records_per_s, state, updated_at) "
                        "VALUES (%s, %s, %s, %s, %s, %s, 800, 3, 9000, %s, 'reading', %s)",
                        (stream, shard, owner, SEQ_B, SEQ_A, lag, rps, now))
        for key, state, size, age in (("k1", "pending", 100, 30), ("k2", "pending", 250, 90),
                                      ("k4", "quarantined", 50, 60)):
            cur.execute("INSERT INTO staged_files (s3_key, target_table, stream, shard_id, "
                        "first_sequence, first_sub_sequence, last_sequence, last_sub_sequence, "
                        "row_count, byte_count, dead_letter_key, dead_letter_count, state, "
                        "staged_at, error, quarantined_at) VALUES (%s, 'page_views', %s, %s, "
                        "%s, 0, %s, 0, 10, %s, NULL, 0, %s, %s, %s, %s)",
                        (f"{stream}/{key}", stream, shard0, SEQ_A, SEQ_B, size, state,
                         now - timedelta(seconds=age),
                         INJECTION if state == "quarantined" else None,
                         now if state == "quarantined" else None))
        # an hour of 5 rows staged and loaded three hours ago, none of them in page_views now
        hour = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
        epoch_hour = int((hour - datetime(1970, 1, 1)).total_seconds()) // 3600
        cur.execute("INSERT INTO staged_files (s3_key, target_table, stream, shard_id, "
                    "first_sequence, first_sub_sequence, last_sequence, last_sub_sequence, "
                    "row_count, byte_count, dead_letter_count, state, staged_at, loaded_at, "
                    "hour_counts) VALUES "
                    "(%s, 'page_views', %s, %s, %s, 0, %s, 0, 5, 10, 0, 'loaded', %s, %s, %s)",
                    (f"{stream}/k5", stream, shard0, SEQ_A, SEQ_B, hour + timedelta(hours=1),
                     hour + timedelta(hours=1), f"{epoch_hour}:5"))
    with pg_conn.cursor() as cur:
        cur.execute("INSERT INTO load_hours (load_id, target_table, hour, kind, row_count, "
                    "recorded_at) VALUES ('load-web-0', 'page_views', %s, 'staged', 5, %s), "
                    "('load-web-0', 'page_views', %s, 'inserted', 5, %s)",
                    (hour, now, hour, now))
        cur.execute("INSERT INTO loads (load_id, target_table, manifest_key, file_count, "
                    "byte_count, rows_copied, rows_inserted, lease_token, started_at, "
                    "finished_at) VALUES ('load-web-1', 'page_views', 'm/l.manifest', 1, 400, "
                    "40, 39, 1, %s, %s)",
                    (now - timedelta(seconds=22), now - timedelta(seconds=20)))
    pg_conn.commit()  # migrate() left the connection in a transaction


def _metrics(base: str) -> dict[tuple[str, tuple], float]:
    code, body = _get(base + "/metrics")
    assert code == 200
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_status_page_shows_the_fleet_and_refreshes(stack_env, stream_name, pg_conn, kinesis,
                                                   control_store, control_conn):
    migrate.migrate(pg_conn, "postgres")
    kinesis.create_stream(StreamName=stream_name, ShardCount=3)
    wait_active(kinesis, stream_name)
    shard0, shard1, shard2 = sorted(s["ShardId"] for s in
                                    kinesis.list_shards(StreamName=stream_name)["Shards"])
    _fill_store(control_conn, pg_conn, stream_name, shard0, shard1)  # shard2: no lease
    for host in ("host-a", "host-b"):  # the fleet: agents' heartbeats (their consumers' leases)
        control_store.heartbeat(host, 600, {"stream": stream_name})
    port = free_ports(1)[0]
    base = f"http://127.0.0.1:{port}"
    env = {**stack_env, "SHARDLINE_CONSUMER_REPORT_INTERVAL_S": "60",
           "SHARDLINE_STATUS_MAX_LAG_MS": "600000"}
    proc = subprocess.Popen([sys.executable, "-m", "shardline.cli", "status", "--stream",
                             stream_name, "--serve", f"127.0.0.1:{port}", "--interval", "0.5"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # two samples in the ring buffer, so the charts have lines, not dots
        _wait_json(base + "/api/history",
                   lambda h: any(len(s["points"]) >= 2 for s in h["shards"]), proc)
        report = _wait_json(base + "/api/status", lambda r: True, proc)
        # no lease on shard2, a quarantined file, no stage worker registered in gearmand, an
        # hour whose 5 loaded rows are not in the warehouse
        assert report["healthy"] is False and len(report["alerts"]) == 4, report["alerts"]
        assert _get(base + "/nope")[0] == 404
        assert report["last_load"]["load_id"] == "load-web-1"

        with Browser(width=1280, height=1000) as page:
            page.open(base + "/?refresh=400")
            page.wait_for("Number(document.body.dataset.refreshes) >= 1")
            page.evaluate("window.__same_page = true")
            text = page.text()
            assert page.text("#state") == "ALERT (4)"
            alerts = page.text("#alerts")
            assert f"{stream_name}/{shard2}: no live owner" in alerts
            assert f"{stream_name}/k4 is quarantined" in alerts
            assert "no worker is registered for shardline_stage" in alerts
            hour = (_now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=3))
            label = hour.strftime("%Y-%m-%dT%H:00:00Z")
            assert f"hour {hour:%Y-%m-%d %H}:00 UTC disagrees: warehouse has 0 rows, " \
                   f"expected 5 (-5)" in alerts
            assert "0 hours agree, 1 disagree" in page.text("#reconciliation")
            row = f"tr[data-hour=\"page_views/{label}\"]"
            assert page.text(f"{row} td[data-field=warehouse-diff]") == "-5"
            assert page.text(f"{row} td[data-field=lake-diff]") == "-"  # no lake configured
            for shard in (shard0, shard1, shard2):
                assert page.evaluate(f"!!document.querySelector('tr[data-shard=\"{stream_name}/"
                                     f"{shard}\"]')"), shard
            lag = f"tr[data-shard=\"{stream_name}/{shard0}\"] td[data-field=lag]"
            assert page.text(lag) == "1,234 ms"
            rps = f"tr[data-shard=\"{stream_name}/{shard1}\"] td[data-field=rps]"
            assert page.text(rps) == "80"
            assert "host-a" in page.text("tr[data-host=\"host-a\"]")
            assert "alive" in page.text("tr[data-host=\"host-b\"]")
            assert shard1 in page.text("tr[data-host=\"host-b\"]")
            assert page.text("#pending-total").startswith("2 files, 350 B")
            assert "load-web-1" in page.text("#last-load")
            # the error text is shown as text: no element was injected, no script ran
            assert INJECTION in page.text("#quarantined")
            assert page.evaluate("document.querySelectorAll('img').length") == 0
            assert page.evaluate("document.title") == "shardline status"
            points = page.evaluate("[...document.querySelectorAll('#chart-lag polyline')]"
                                   ".map(p => Number(p.dataset.points))")
            assert len(points) >= 2 and max(points) >= 2, points
            assert page.evaluate("document.querySelectorAll('#chart-rps polyline').length") >= 2
            assert page.text("#dead-letters")  # whatever the report carries, or "not in it"
            assert "GEARMAN" in text and "up" in page.text("#gearman")

            # the store changes; the open page shows it by itself
            with control_conn.cursor() as cur:
                cur.execute("UPDATE shard_status SET millis_behind_latest = 98765, "
                            "updated_at = %s WHERE stream = %s AND shard_id = %s",
                            (_now(), stream_name, shard0))
            page.wait_for(f"(document.querySelector('{lag}') || {{}}).textContent "
                          f"=== '98,765 ms'", timeout_s=10)
            assert page.evaluate("window.__same_page === true")  # no reload happened
            assert "98,765 ms" in page.text("#chart-lag")  # the legend's last value

        m = _metrics(base)
        table = (("table", "page_views"),)
        assert m[("shardline_fleet_pending_files", table)] == 2
        assert m[("shardline_fleet_pending_bytes", table)] == 350
        assert 90 <= m[("shardline_fleet_oldest_pending_age_seconds", table)] < 150
        assert m[("shardline_fleet_quarantined_files", table)] == 1
        assert m[("shardline_fleet_hosts_alive", ())] == 2
        s0 = (("shard", shard0), ("stream", stream_name))
        assert m[("shardline_fleet_shard_millis_behind", s0)] == 98765
        assert m[("shardline_fleet_shard_millis_behind",
                  (("shard", shard1), ("stream", stream_name)))] == 0
        assert 4 <= m[("shardline_fleet_shard_checkpoint_age_seconds", s0)] < 60
        assert m[("shardline_fleet_alerts", ())] == 4
        wh = (("table", "page_views"), ("target", "warehouse"))
        assert m[("shardline_fleet_reconcile_difference_rows", wh)] == -5
        assert m[("shardline_fleet_reconcile_disagreeing_hours", table)] == 1
        assert not any(name.startswith(("process_", "python_")) for name, _ in m)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert proc.returncode == 0, err[-2000:]
