"""The example app under gunicorn (4 preloaded, forked workers), driven by a bounded load
generator on 127.0.0.1, with Kinesis healthy and then stalling every call for 2 s:
requests do not slow down, and every page view lands in the warehouse exactly once. Beside
it, the same app with a producer that does nothing (tests/noop_pageview_app.py), loaded in
alternating chunks: what the producer's background work adds to a request.
"""
from __future__ import annotations

import re

import pytest

from shardline.devstack.fleet import Fleet, shardline, wait_for
from tests.pipeline import FAST
from tests.producer_kit import (NOOP_APP, Gunicorn, PutFaultProxy, child_env, paired_load,
                                percentile, run_load)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PER_PHASE = 500


def test_gunicorn_page_views_land_once_and_requests_ignore_a_stalled_kinesis(
        stack, stack_env, stream_name, pg_conn, tmp_path):
    env = {**stack_env, **FAST, "SHARDLINE_KINESIS_STREAM": stream_name}
    shardline("migrate", env=env)
    shardline("create-stream", "--stream", stream_name, "--shards", "2", env=env)
    proxy = PutFaultProxy(stack.kinesis_endpoint_url, stall_s=2.0).start()
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    app_env = child_env({**env, "SHARDLINE_KINESIS_ENDPOINT_URL": proxy.url,
                         "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)},
                        spool_dir=tmp_path / "spool", spool_after_ms=300, linger_ms=20)
    web = Gunicorn(app_env, workers=4, log=tmp_path / "gunicorn.log")
    noop = Gunicorn(app_env, workers=4, log=tmp_path / "gunicorn-noop.log", app=NOOP_APP)
    fleet = Fleet(tmp_path / "supervisor", env, stream_name, workers=2)
    try:
        web.start()
        noop.start()
        fleet.start()
        healthy, baseline = paired_load(web, noop, 0, PER_PHASE)
        noop.stop()
        proxy.storm("slow", 3600)
        stalled = run_load(web.port, PER_PHASE, PER_PHASE)

        def scrape() -> tuple[float, float]:
            """(puts, spooled) over the workers, from /metrics."""
            status, body = web.get("/metrics")
            assert status == 200
            text = body.decode()
            puts, spooled = (sum(float(v) for v in re.findall(
                rf'^shardline_producer_{name}_total\{{[^}}]*\}} (\S+)$', text, re.M))
                for name in ("put", "spooled"))
            return puts, spooled

        def spooled_some() -> tuple[float, float] | None:
            counts = scrape()
            return counts if counts[1] > 0 else None

        # A worker pushes its counts at the end of a cycle: on a loaded machine the spooling
        # the stall caused can reach /metrics after the phase's last request.
        try:
            puts, spooled = wait_for(spooled_some, 15,
                                     "the stall sending page views to the spool", every=0.5)
        except TimeoutError:
            raise AssertionError(f"the stall did not send page views to the spool: "
                                 f"{scrape()}\n{web.logs()}") from None
        proxy.storm("slow", 0)
        assert [s for _, s in healthy + stalled + baseline] == [200] * (3 * PER_PHASE)
        p99_healthy = percentile([t for t, _ in healthy], 99)
        p99_stalled = percentile([t for t, _ in stalled], 99)
        p99_noop = percentile([t for t, _ in baseline], 99)
        print(f"request p99: producer {p99_healthy * 1000:.1f} ms, no-op producer "
              f"{p99_noop * 1000:.1f} ms ({p99_healthy / p99_noop:.2f}x), Kinesis stalling "
              f"{p99_stalled * 1000:.1f} ms")
        # The benchmark measures the ratio (target <= 1.10x); this catches a producer that
        # blocks requests (a PutRecords round trip in a request is >= 20 ms here).
        assert p99_healthy < 2 * p99_noop + 0.02, (p99_healthy, p99_noop)
        # A request that waited on Kinesis would take >= 2 s; the bench measures the 20 %.
        assert p99_stalled < 0.5 and p99_stalled < 3 * p99_healthy + 0.05, \
            (p99_healthy, p99_stalled)
        assert puts >= 2 * PER_PHASE - 50  # the last cycle's counts may not be pushed yet
        assert proxy.injected().get("slow", 0) > 0

        def loaded() -> bool:
            with pg_conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM page_views")
                return cur.fetchone()[0] >= 2 * PER_PHASE

        try:
            wait_for(loaded, 120, "every page view in the warehouse", every=1)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{web.logs()}\n{fleet.logs()}") from None
        with pg_conn.cursor() as cur:
            cur.execute("SELECT url_query, ip_prefix, session_id, device_class, referrer_host "
                        "FROM page_views")
            rows = cur.fetchall()
        rids = sorted(int(q.partition("rid=")[2]) for q, *_ in rows)
        assert rids == list(range(2 * PER_PHASE)), "a page view is missing or stored twice"
        # The middleware's fields, as the pipeline derived them: client IP from
        # X-Forwarded-For (one trusted proxy), the session cookie, the user agent, referrer.
        assert {ip for _, ip, *_ in rows} <= {"203.0.113.0/24"}
        assert all(sid.startswith("s-load") for _, _, sid, *_ in rows)
        assert {(d, r) for *_, d, r in rows} == {("desktop", "www.example.com")}
        assert web.stop() == 0
        assert not list((tmp_path / "spool").glob("slot-*/*.seg"))
        assert len(list((tmp_path / "spool").glob("slot-*"))) >= 4  # one per worker
    finally:
        web.stop()
        noop.stop()
        fleet.stop()
        proxy.stop()
