"""The lake's upkeep and counts on the real local stack: ``lake compact`` rewrites a
partition's small files into one with the same rows, ``lake expire`` drops old snapshots
but keeps the ones the exactly-once reconcile still needs, ``hour_counts`` counts rows per
hour of arrival."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from shardline import cli
from shardline.lake import catalog as lake_catalog
from shardline.lake.counts import hour_counts
from shardline.lake.upkeep import expire
from tests.contract.loader_kit import T0, event_id, page_view
from tests.lake_kit import Lake

pytestmark = pytest.mark.integration


@pytest.fixture
def lake(stack: Any, pg_schema: str, s3_prefix: str, s3: Any, control_store: Any) -> Lake:
    return Lake(stack, pg_schema, s3_prefix, s3, control_store)


def _env(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    s = lake.settings
    for key, value in {"S3_ENDPOINT_URL": s.s3.endpoint_url, "S3_BUCKET": s.s3.bucket,
                       "S3_PREFIX": s.s3.prefix, "CONTROL_DSN": s.control.dsn,
                       "CONTROL_SCHEMA": s.control.schema, "LAKE_TABLES": "page_views",
                       "LAKE_CATALOG_URI": s.lake.catalog_uri,
                       "LAKE_NAMESPACE": s.lake.namespace}.items():
        monkeypatch.setenv(f"SHARDLINE_{key}", value)


def test_compact_rewrites_small_files_into_one_with_the_same_rows(
        lake: Lake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    loader = lake.loader()
    for i in range(1, 4):  # three loads: three small files in T0's day
        lake.stage([page_view(i, i)])
        assert loader.step().state == "loaded"
    lake.stage([page_view(9, 9, occurred_at=T0 + timedelta(days=1))])  # another day, alone
    assert loader.step().state == "loaded"
    before = lake.rows()
    table = lake_catalog.open_table(lake.settings, "page_views")
    assert len(table.inspect.files()) == 4
    _env(lake, monkeypatch)
    assert cli.main(["lake", "compact", "--table", "page_views", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["partitions_rewritten"], report["small_files_before"],
            report["rows_rewritten"], report["data_files_after"]) == (1, 3, 3, 2)
    assert lake.rows() == before
    # the compaction's snapshot is no load: a new loader reconciles nothing from it
    lake.stage([page_view(4, 4)])
    loader.release()
    assert lake.loader().step().state == "loaded"
    assert [r["event_id"] for r in lake.rows()] == [event_id(i) for i in (1, 2, 3, 4, 9)]


def test_expire_keeps_what_the_reconcile_needs(lake: Lake, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    loader = lake.loader()
    for i in range(1, 4):
        lake.stage([page_view(i, i)])
        assert loader.step().state == "loaded"
    settings = lake.settings.replace(**{"lake.snapshot_retention_s": "0"})
    later = datetime.now(timezone.utc).replace(tzinfo=None) + timedelta(seconds=1)
    # a file still lake-pending, staged now: snapshots from an hour before it must stay
    pending = lake.stage([page_view(5, 5)], staged_at=later)
    report = expire(settings, "page_views", now=later)
    assert (report["snapshots_expired"], report["snapshots_kept"]) == (0, 3)
    lake.store.mark_lake_loaded("page_views", [pending.s3_key], "by-hand")
    report = expire(settings, "page_views", now=later)
    assert (report["snapshots_expired"], report["snapshots_kept"]) == (2, 1)  # the current
    assert [r["event_id"] for r in lake.rows()] == [event_id(i) for i in (1, 2, 3)]
    _env(lake, monkeypatch)
    assert cli.main(["lake", "expire", "--table", "page_views"]) == 0
    assert "snapshots_kept: 1" in capsys.readouterr().out


def test_hour_counts_counts_rows_per_hour_of_arrival(lake: Lake) -> None:
    base = datetime(2026, 12, 8, 10, 0, 0)
    arrivals = [base + timedelta(minutes=5), base + timedelta(minutes=59, seconds=59),
                base + timedelta(hours=1, minutes=1), base + timedelta(hours=3),
                base - timedelta(seconds=1)]
    lake.stage([page_view(i, i, arrival_time=a) for i, a in enumerate(arrivals, start=1)])
    assert lake.loader().step().state == "loaded"
    got = hour_counts(lake.settings, "page_views", base, base + timedelta(hours=3))
    assert got == {base: 2, base + timedelta(hours=1): 1}
    aware = hour_counts(lake.settings, "page_views", base.replace(tzinfo=timezone.utc),
                        base.replace(tzinfo=timezone.utc) + timedelta(hours=4))
    assert aware == {base: 2, base + timedelta(hours=1): 1, base + timedelta(hours=3): 1}
    assert hour_counts(lake.settings, "page_views", base + timedelta(hours=5),
                       base + timedelta(hours=6)) == {}
