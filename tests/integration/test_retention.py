"""Warehouse retention on the real stack, with a fake lake source: an hour older than the
table's ``warehouse_retention`` is deleted only once the lake holds every row of it, in its
own transaction, recorded as ``retired``; reconciliation then expects it absent from the
warehouse. A table with retention and no lake stops the loader at start with one line."""
from __future__ import annotations

from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path

import pytest

from tests.contract.loader_kit import SHARD0, PostgresBackend
from tests.integration.test_reconcile import FakeLake, gather, load_all, stage
from shardline.errors import ConfigError
from shardline.loaders.loader import Loader
from shardline.records.control import utc
from shardline.sample import events

pytestmark = pytest.mark.integration
HOUR_MS = 3_600_000


@pytest.fixture(params=["postgres", "redshift-like-serializable"])
def pg(request) -> PostgresBackend:
    """PostgreSQL, and the Redshift stand-in under SERIALIZABLE (the retention DELETE and
    its record in their own short transactions, behind the table's fence)."""
    from tests.contract.conftest import _postgres_backend, _redshift_like_backend

    if request.param == "postgres":
        return _postgres_backend(request)
    return _redshift_like_backend(request, "serializable")


def tables_file(tmp_path: Path, retention: str) -> str:
    text = (resources.files("shardline") / "default_tables.toml").read_text()
    text = text.replace('dist_key = "event_id"\n',
                        f'dist_key = "event_id"\nwarehouse_retention = "{retention}"\n', 1)
    path = tmp_path / "tables.toml"
    path.write_text(text)
    return str(path)


def test_retention_deletes_only_hours_the_lake_holds(pg, tmp_path) -> None:
    now = utc(datetime.now().timestamp()).replace(tzinfo=None)
    h0 = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)
    h1 = h0 + timedelta(hours=1)
    start = int((h0 - datetime(1970, 1, 1)).total_seconds() * 1000)
    datas = [d for _, _, d in events.generate(40, 0.0, seed=11)]
    stage(pg, SHARD0, 1, datas, [start + (HOUR_MS // 40) * 2 * i for i in range(40)])
    load_all(pg)
    stored = dict(pg.query("SELECT date_trunc('hour', arrival_time), COUNT(*) FROM page_views "
                           "GROUP BY 1"))
    assert set(stored) == {h0, h1}
    lake = FakeLake({h0: stored[h0], h1: stored[h1] - 1})  # the lake lacks a row of h1

    settings = {"tables.file": tables_file(tmp_path, "3h"), "reconcile.grace_s": "0",
                "reconcile.retention_interval_s": "60"}
    with pytest.raises(ConfigError, match="has warehouse_retention but no lake target"):
        Loader(pg.settings(**settings), "page_views", s3=pg.s3, store=pg.store)
    clock = [datetime.now().timestamp()]
    loader = Loader(pg.settings(**settings), "page_views", s3=pg.s3, store=pg.store,
                    lake=lake, clock=lambda: clock[0])
    try:
        assert loader.step().state == "retention"  # nothing to load: a retention pass
        assert dict(pg.query("SELECT date_trunc('hour', arrival_time), COUNT(*) "
                             "FROM page_views GROUP BY 1")) == {h1: stored[h1]}
        assert loader.step().state == "idle"  # the next pass is not due yet
        # reconciliation: h0 is expected absent (retired), and the lake still agrees
        v0, v1 = gather(pg, lake)
        assert (v0.state, v0.warehouse, v0.retired, v0.expected_warehouse) == (
            "agree", 0, stored[h0], 0)
        assert (v1.state, v1.lake_diff) == ("disagree", -1)  # the lake's missing row
        # once the lake holds h1 as well, the next pass deletes it
        lake.counts[h1] = stored[h1]
        clock[0] += 61
        assert loader.step().state == "retention"
        assert pg.query("SELECT COUNT(*) FROM page_views") == [(0,)]
        assert [v.state for v in gather(pg, lake)] == ["agree", "agree"]
        recorded = pg.query("SELECT hour, row_count FROM load_hours WHERE kind = 'retired' "
                            "ORDER BY hour")
        assert recorded == [(h0, stored[h0]), (h1, stored[h1])]
    finally:
        loader.release()
        loader.close()
