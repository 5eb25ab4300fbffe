"""Reconciliation on the real stack: records staged by the stage job (S3 and the control
store's ledger for real) and loaded by the loader into PostgreSQL, with a batch spanning an
hour boundary, a re-read overlapping batch and producer duplicates: every settled hour
agrees. Then rows deleted from the warehouse, and from a fake lake, are flagged in the hour
they were in, by ``shardline reconcile``, ``status``'s alerts and ``/metrics``."""
from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.contract.loader_kit import SHARD0, SHARD1, STREAM, PostgresBackend, seq
from shardline import codec
from shardline.records.control import utc
from shardline.sample import events

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000


@pytest.fixture
def pg(stack, stack_env, pg_conn, pg_schema, s3, s3_prefix, control_store) -> PostgresBackend:
    return PostgresBackend(stack.env(), pg_conn, pg_schema, s3, s3_prefix, control_store)


class FakeLake:
    """A lake source over a dict, as ``shardline.lake.counts`` would answer."""

    def __init__(self, counts: dict[datetime, int], pending: set[datetime] | None = None):
        self.counts, self.pending = dict(counts), set(pending or ())

    def hour_counts(self, table: str, since: datetime, until: datetime) -> dict[datetime, int]:
        return {h: n for h, n in self.counts.items() if since <= h < until}

    def pending_hours(self, table: str, since: datetime, until: datetime) -> set[datetime]:
        return {h for h in self.pending if since <= h < until}


def stage(pg: PostgresBackend, shard: str, first_seq: int, datas: list[bytes],
          arrivals: list[int], *, generation: str | None = None,
          transform: Any = None) -> None:
    from shardline.transforms.page_views import page_view
    from shardline.workers.stage import StageJob

    batch = codec.Batch(STREAM, shard, [
        codec.Record(seq(first_seq + i), 0, f"pk-{i}", d, a)
        for i, (d, a) in enumerate(zip(datas, arrivals, strict=True))])
    job = StageJob(pg.settings(), s3=pg.s3, transform=transform or page_view)
    try:
        assert job.run(codec.encode_job(batch, generation)) == b""
    finally:
        job.close()


def load_all(pg: PostgresBackend) -> None:
    loader = pg.loader()
    try:
        while pg.store.pending_stats("page_views").files:
            assert loader.step().state in ("loaded", "idle")
    finally:
        loader.release()  # the next test step's loader takes the lease at once
        loader.close()


def staged_pipeline(pg: PostgresBackend) -> datetime:
    """Two hours of arrivals (h0, h0 + 1h), three hours ago; returns h0."""
    now = utc(datetime.now().timestamp()).replace(tzinfo=None)
    h0 = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    start = int((h0 - datetime(1970, 1, 1)).total_seconds() * 1000) + HOUR_MS - 20_000
    datas = [d for _, _, d in events.generate(80, 0.1, seed=7)]  # ~8 malformed
    arrivals = [start + 500 * i for i in range(80)]  # 10 s before the hour .. 30 s after
    stage(pg, SHARD0, 1, datas[:50], arrivals[:50])  # spans the hour boundary
    stage(pg, SHARD0, 31, datas[30:80], arrivals[30:80])  # re-read overlap: 20 again
    # producer retries: 10 of the records again under other sequence numbers, minutes later
    stage(pg, SHARD1, 1, datas[60:70], [start + HOUR_MS + 100_000 + i for i in range(10)])
    load_all(pg)
    return h0


def gather(pg: PostgresBackend, lake: Any = None) -> list:
    from shardline import clients
    from shardline.reconcile import run

    settings = pg.settings(**{"reconcile.grace_s": "0", "reconcile.hours": "6"})
    conn = clients.warehouse_connect(settings, autocommit=True)
    try:
        ((_, verdicts, has_lake),) = run.gather(
            settings, pg.store, conn, ["page_views"],
            utc(datetime.now().timestamp()).replace(tzinfo=None),
            lakes={"page_views": lake})
    finally:
        conn.close()
    assert has_lake == (lake is not None)
    return verdicts


def test_settled_hours_agree_then_deleted_rows_are_flagged(pg, monkeypatch, capsys) -> None:
    h0 = staged_pipeline(pg)
    stored = dict(pg.query("SELECT date_trunc('hour', arrival_time), COUNT(*) FROM page_views "
                           "GROUP BY 1"))
    assert set(stored) == {h0, h0 + timedelta(hours=1)}
    verdicts = gather(pg, FakeLake(stored))
    h1, h2 = h0 + timedelta(hours=1), h0 + timedelta(hours=2)
    assert [(v.hour, v.state) for v in verdicts] == [(h0, "agree"), (h1, "agree"),
                                                      (h2, "agree")]
    # the retries arrived an hour after their first copies: all dropped, none stored there
    late = verdicts[2]  # (one of the ten is malformed: a dead letter, counted nowhere)
    assert (late.dropped, late.warehouse) == (late.staged, 0) and late.staged >= 8
    # the duplicates were real: staged rows beyond the stored ones, dropped by the merge
    assert sum(v.dropped for v in verdicts) == sum(v.staged for v in verdicts) \
        - sum(stored.values()) >= 20
    assert gather(pg)[0].lake is None  # no lake configured: shown as such, still judged

    # rows lost from the warehouse in the second hour, and from the lake in the first
    pg.execute("DELETE FROM page_views WHERE event_id IN (SELECT event_id FROM page_views "
               "WHERE arrival_time >= %s ORDER BY event_id LIMIT 3)", (h0 + timedelta(hours=1),))
    lake = FakeLake({h0: stored[h0] - 2, h0 + timedelta(hours=1): stored[h0 + timedelta(hours=1)]})
    first, second, third = gather(pg, lake)
    assert third.state == "agree"
    assert (first.state, first.warehouse_diff, first.lake_diff) == ("disagree", 0, -2)
    assert (second.state, second.warehouse_diff, second.lake_diff) == ("disagree", -3, 3)
    # a doubled row is flagged too
    pg.execute("INSERT INTO page_views SELECT * FROM page_views WHERE arrival_time < %s "
               "ORDER BY event_id LIMIT 1", (h0 + timedelta(hours=1),))
    assert gather(pg, lake)[0].warehouse_diff == 1

    # status: one alert per disagreeing hour (exit 3), and /metrics' difference per table
    from shardline import clients
    from shardline.ops import status, status_report, status_web

    settings = pg.settings(**{"reconcile.grace_s": "0", "reconcile.hours": "6"})
    conn = clients.warehouse_connect(settings, autocommit=True)
    try:
        recon = status.gather_reconciliation(settings, pg.store, conn, ["page_views"],
                                             utc(datetime.now().timestamp()))
    finally:
        conn.close()
    report = status_report.build_report(now=utc(datetime.now().timestamp()), streams=[],
                                        max_lag_ms=1000, report_interval_s=1,
                                        reconciliation=recon)
    assert status_report.exit_code(report) == 3
    assert [a for a in report["alerts"] if "disagrees" in a] == [
        f"page_views: hour {h0:%Y-%m-%d %H}:00 UTC disagrees: warehouse has "
        f"{stored[h0] + 1} rows, expected {stored[h0]} (+1)",
        f"page_views: hour {h1:%Y-%m-%d %H}:00 UTC disagrees: warehouse has "
        f"{stored[h1] - 3} rows, expected {stored[h1]} (-3)"]
    families = {f.name: f for f in status_web.FleetCollector(lambda: report,
                                                             ["page_views"]).collect()}
    (sample,) = families["shardline_fleet_reconcile_difference_rows"].samples
    assert (sample.labels, sample.value) == ({"table": "page_views", "target": "warehouse"}, -2)
    (bad,) = families["shardline_fleet_reconcile_disagreeing_hours"].samples
    assert bad.value == 2

    # a pending file in an hour makes it unsettled: not judged until loaded
    stage(pg, SHARD1, 100, [next(d for k, _, d in events.generate(5, 0.0, seed=9))],
          [int((h0 - datetime(1970, 1, 1)).total_seconds() * 1000) + 1000])
    assert gather(pg, lake)[0].state == "pending"

    # the command: the table of hours, exit 3 (ALERT)
    from shardline import cli

    for k, v in {"SHARDLINE_WAREHOUSE_DSN": pg.env["SHARDLINE_WAREHOUSE_DSN"],
                 "SHARDLINE_WAREHOUSE_SCHEMA": pg.schema,
                 "SHARDLINE_CONTROL_DSN": pg.env["SHARDLINE_CONTROL_DSN"],
                 "SHARDLINE_CONTROL_SCHEMA": pg.schema,
                 "SHARDLINE_RECONCILE_GRACE_S": "0"}.items():
        monkeypatch.setenv(k, v)
    load_all(pg)
    capsys.readouterr()
    assert cli.main(["reconcile", "--table", "page_views", "--hours", "6", "--json"]) == 3
    doc = json.loads(capsys.readouterr().out)
    assert [(h["state"], h["warehouse_diff"]) for h in doc["hours"]] == [
        ("disagree", 1), ("disagree", -3), ("agree", 0)]
    assert doc["lake"] is False


def test_a_reprocess_replacing_rows_still_agrees(pg) -> None:
    """A reprocess run re-stages a range with a transform that now rejects some events: the
    stored rows of the range are replaced (counted as replaced), the rejected ones are dead
    letters, and every hour still agrees; so does a redrive-like second normal load."""
    from shardline.transforms.page_views import page_view

    h0 = staged_pipeline(pg)
    before = {v.hour: v for v in gather(pg)}

    def stricter(event: dict) -> dict:
        if event.get("event_id", "").endswith(("0", "5")):
            raise ValueError("rejected by the new version")
        return page_view(event)

    start = int((h0 - datetime(1970, 1, 1)).total_seconds() * 1000) + HOUR_MS - 20_000
    datas = [d for _, _, d in events.generate(80, 0.1, seed=7)]
    stage(pg, SHARD0, 1, datas[:50], [start + 500 * i for i in range(50)],
          generation="g20270101T000000Z-test", transform=stricter)
    load_all(pg)
    after = gather(pg)
    assert {v.state for v in after} == {"agree"}, after
    assert sum(v.replaced for v in after) > 0
    assert sum(v.warehouse for v in after) < sum(v.warehouse for v in before.values())
