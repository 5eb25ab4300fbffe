"""Tables defined in a file, on the real pipeline (supervisord, consumers, stage workers, one
loader per table, kinesalite, moto S3, PostgreSQL): the clicks example of docs/tables.md.

Page views and clicks mixed in one stream land each in their own table, exactly once; then
a column is added to page_views mid-stream (the tables file changed, ``migrate``, workers
restarted with the new transform) while files staged before the change are still pending:
those load with the new column NULL, the files staged after it with the column filled.
page_views is also a lake table: ``migrate`` adds the column to its Iceberg schema, and
the lake read back by pyiceberg and DuckDB equals the warehouse, old rows NULL there too.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from shardline import settings as settings_mod
from shardline.devstack.fleet import Fleet, control_query, shardline, wait_for
from shardline.lake.catalog import open_table
from tests.integration.test_pipeline_e2e import warehouse
from tests.lake_check import assert_lake_equals_warehouse
from tests.pipeline import FAST

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "clicks"
CAMPAIGN_TRANSFORM = '''
"""page_view plus the utm_campaign of the URL's query ("none" without one)."""
from urllib.parse import parse_qs

from shardline.workers.transform import page_view as base


def page_view(event):
    row = base(event)
    values = parse_qs(row["url_query"] or "").get("utm_campaign") or ["none"]
    row["campaign"] = values[0][:64]
    return row
'''


def produce(env, stream, tmp_path, count, seed, clicks):
    summary = tmp_path / f"produce-{seed}.json"
    ids, click_ids = tmp_path / f"ids-{seed}.txt", tmp_path / f"clicks-{seed}.txt"
    shardline("produce", "--stream", stream, "--count", str(count), "--rate", "0",
              "--bad-fraction", "0.02", "--seed", str(seed), "--click-fraction", str(clicks),
              "--summary-json", str(summary), "--ids-file", str(ids),
              "--click-ids-file", str(click_ids), "--quiet", env=env)
    out = json.loads(summary.read_text())
    assert out["clicks"] > 0 or clicks == 0
    return set(ids.read_text().split()), set(click_ids.read_text().split())


def test_clicks_in_their_own_table_and_a_column_added_mid_stream(
        stack_env, stream_name, pg_conn, pg_schema, s3, tmp_path):
    tables = tmp_path / "tables.toml"  # one path; its content changes mid-test
    example = (EXAMPLE / "tables.toml").read_text()
    tables.write_text(example.replace('python_path = ["."]', f'python_path = ["{EXAMPLE}"]'))
    env = {**stack_env, **FAST, "SHARDLINE_KINESIS_STREAM": stream_name,
           "SHARDLINE_TABLES_FILE": str(tables), "SHARDLINE_LAKE_TABLES": "page_views",
           "SHARDLINE_LAKE_NAMESPACE": pg_schema}
    shardline("migrate", env=env)  # 001, 002 (page_views), then the file's clicks
    shardline("migrate", "--control", env=env)
    shardline("create-stream", "--stream", stream_name, "--shards", "2", env=env)
    fleet = Fleet(tmp_path / "supervisor", env, stream_name, 2)
    try:
        fleet.start()
        assert {"loader", "loader-clicks", "lake-loader-page_views"} <= set(fleet.status())
        views1, clicks1 = produce(env, stream_name, tmp_path, 1500, 31, clicks=0.3)

        def counts():
            return {t: warehouse(pg_conn, f"SELECT count(*) FROM {t}")[0][0]
                    for t in ("page_views", "clicks")}

        def landed(views, clicks):
            try:
                wait_for(lambda: counts() == {"page_views": len(views), "clicks": len(clicks)},
                         120, f"{len(views)} page views and {len(clicks)} clicks", every=0.5)
            except TimeoutError as exc:
                raise AssertionError(f"{exc}: {counts()}\n{fleet.logs()}") from None

        landed(views1, clicks1)
        # stop the loaders: what is staged now waits, with page_views' old column list
        fleet.ctl("stop", "loader", "loader-clicks", "lake-loader-page_views")
        views2, clicks2 = produce(env, stream_name, tmp_path, 800, 32, clicks=0.2)
        old_views = len(views1 | views2)
        wait_for(lambda: control_query(env, "SELECT coalesce(sum(row_count), 0) FROM "
                                            "staged_files WHERE target_table = 'page_views'")
                 [0][0] >= old_views, 60, "the second batch staged")
        # the column is added: tables file, migrate, workers restarted with the new transform
        (tmp_path / "pv_campaign.py").write_text(CAMPAIGN_TRANSFORM)
        changed = tables.read_text().replace(
            f'python_path = ["{EXAMPLE}"]', f'python_path = ["{EXAMPLE}", "."]').replace(
            'transform = "shardline.transforms.page_views:page_view"',
            'transform = "pv_campaign:page_view"').replace(
            '{ name = "session_id",    type = "varchar(128)",  not_null = true },\n]',
            '{ name = "session_id",    type = "varchar(128)",  not_null = true },\n'
            '  { name = "campaign",      type = "varchar(64)" },\n]', 1)
        assert changed.count("campaign") == 2
        tables.write_text(changed)
        dry = shardline("migrate", "--dry-run", env=env).stdout
        assert "ALTER TABLE page_views ADD COLUMN campaign VARCHAR(64);" in dry, dry
        shardline("migrate", env=env)
        (altered,), = warehouse(pg_conn, "SELECT max(applied_at) FROM table_changes")
        fleet.ctl("restart", "stage-worker:*")
        lake_field = open_table(settings_mod.load(None, env), "page_views").schema() \
            .find_field("campaign")
        assert not lake_field.required and str(lake_field.field_type) == "string"
        fleet.ctl("start", "loader", "loader-clicks", "lake-loader-page_views")
        views3, clicks3 = produce(env, stream_name, tmp_path, 800, 33, clicks=0.2)
        landed(views1 | views2 | views3, clicks1 | clicks2 | clicks3)
        wait_for(lambda: control_query(env, "SELECT count(*) FROM staged_files WHERE "
                                            "lake_state = 'pending'") == [(0,)],
                 60, "nothing pending for the lake")
    finally:
        fleet.stop()

    rows = warehouse(pg_conn, "SELECT event_id, campaign, loaded_at FROM page_views")
    assert len({r[0] for r in rows}) == len(rows)  # exactly once
    assert {r[0] for r in rows} == views1 | views2 | views3
    campaign = {r[0]: r[1] for r in rows}
    assert all(campaign[i] is None for i in views1 | views2)  # staged before the column
    assert all(campaign[i] is not None for i in views3)  # after: the new transform's
    assert any(v not in (None, "none") for v in campaign.values())
    late = [r for r in rows if r[0] in views2 and r[2] >= altered]
    assert len(late) == len(views2 - views1), "old files did not load after the ADD COLUMN"
    lake = assert_lake_equals_warehouse(settings_mod.load(None, env), pg_conn, s3, tmp_path)
    assert {r["event_id"]: r["campaign"] for r in lake} == campaign  # NULL before the column
    click_rows = warehouse(pg_conn, "SELECT event_id FROM clicks")
    assert sorted(r[0] for r in click_rows) == sorted(clicks1 | clicks2 | clicks3)
    assert not {r[0] for r in click_rows} & {r[0] for r in rows}
    files = control_query(env, "SELECT target_table, column_list, state FROM staged_files "
                               "WHERE row_count > 0")
    assert {f[2] for f in files} == {"loaded"}
    lists = {(f[0], "campaign" in f[1]) for f in files}
    assert lists == {("page_views", False), ("page_views", True), ("clicks", False)}

    # a type change and a dropped column are refused against the real catalog, nothing applied
    for bad, why in (
            (changed.replace('"url_host",      type = "varchar(255)"',
                             '"url_host",      type = "varchar(100)"'), "url_host is varchar(255)"),
            (changed.replace('  { name = "y",           type = "int" },\n', ''),
             "column(s) y are in the warehouse")):
        assert bad != changed
        tables.write_text(bad)
        refused = shardline("migrate", env=env, check=False)
        assert refused.returncode == 78 and why in refused.stderr, refused.stderr
    assert warehouse(pg_conn, "SELECT target_table, action, count(*) FROM table_changes GROUP "
                              "BY 1, 2 ORDER BY 1") == [("clicks", "create", 3),  # + 2 indexes
                                                        ("page_views", "add_column", 1)]
