"""The lake's catalog on the real local stack: ``shardline migrate`` makes the namespace and
the Iceberg table (SQL catalog in the stack's PostgreSQL, data on moto S3) and adds a column
the tables file gained (older data files still read); ``lake describe --json`` is what any
Iceberg client opens the table with; AWS Glue's catalog works against moto too."""
from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.catalog import load_catalog

from shardline import cli
from shardline import settings as settings_mod
from shardline.lake import catalog as lake_catalog
from shardline.lake.schema import iceberg_schema
from shardline.tables import PAGE_VIEWS

pytestmark = pytest.mark.integration


@pytest.fixture
def lake_env(stack: Any, stack_env: dict[str, str], pg_schema: str,
             monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {**stack_env, "SHARDLINE_LAKE_TABLES": "page_views",
           "SHARDLINE_LAKE_NAMESPACE": pg_schema}
    for key, value in env.items():
        if key.startswith(("SHARDLINE_", "AWS_")):
            monkeypatch.setenv(key, value)
    return env


def _row(schema: pa.Schema, event_id: str) -> pa.Table:
    now = datetime(2026, 12, 8, 1, 2, 3)
    values = {f.name: None for f in schema}
    values.update(event_id=event_id, occurred_at=now, url="https://x/", url_host="x",
                  url_path="/", user_agent="ua", device_class="desktop", ip_prefix="10.0",
                  session_id="s", shard_id="shardId-0", sequence_number="1",
                  sub_sequence_number=0, arrival_time=now, staged_at=now, loaded_at=now)
    return pa.Table.from_pylist([values], schema=schema)


def test_migrate_creates_and_evolves_the_table_and_describe_opens_it(
        lake_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["migrate"]) == 0
    capsys.readouterr()
    assert cli.main(["lake", "describe", "--table", "page_views", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert "testing" not in json.dumps(info)  # the dummy AWS keys are never printed
    # exactly what the docs tell a user to run
    table = load_catalog(info["catalog"], **info["properties"]).load_table(info["identifier"])
    assert table.schema() == iceberg_schema(PAGE_VIEWS)
    assert info["identifier"] == f"{lake_env['SHARDLINE_LAKE_NAMESPACE']}.page_views"
    table.append(_row(table.schema().as_arrow(), "old-event"))

    # the tables file gains a column: migrate adds it; the old data file reads it as NULL
    source = Path(lake_catalog.__file__).parent.parent / "default_tables.toml"
    text = source.read_text().replace(
        '  { name = "session_id",    type = "varchar(128)",  not_null = true },',
        '  { name = "session_id",    type = "varchar(128)",  not_null = true },\n'
        '  { name = "country",       type = "char(2)" },\n'
        '  { name = "plan",          type = "varchar(16)", default = "free" },')
    assert "country" in text
    (tmp_path / "tables.toml").write_text(text)
    import os
    os.environ["SHARDLINE_TABLES_FILE"] = str(tmp_path / "tables.toml")
    try:
        assert cli.main(["migrate"]) == 0
        settings = settings_mod.load()
        evolved = lake_catalog.open_table(settings, "page_views")
        field = evolved.schema().find_field("country")
        assert str(field.field_type) == "string" and not field.required
        rows = evolved.scan().to_arrow().to_pylist()
        # rows from before read the new columns as the warehouse's do: the default, or NULL
        assert [(r["event_id"], r["country"], r["plan"]) for r in rows] == [
            ("old-event", None, "free")]
        assert lake_catalog.migrate(settings)[0].action == "unchanged"
    finally:
        del os.environ["SHARDLINE_TABLES_FILE"]


def test_an_unknown_lake_table_stops_migrate_with_one_line(
        lake_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SHARDLINE_LAKE_TABLES", "page_views,clickz")
    assert cli.main(["migrate"]) == 78
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "clickz" in err


def test_the_glue_catalog_works_against_moto(lake_env: dict[str, str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARDLINE_LAKE_CATALOG", "glue")
    monkeypatch.setenv("SHARDLINE_LAKE_GLUE_ENDPOINT_URL", lake_env["SHARDLINE_S3_ENDPOINT_URL"])
    settings = settings_mod.load()
    assert [c.action for c in lake_catalog.migrate(settings)] == ["created"]
    table = lake_catalog.open_table(settings, "page_views")
    table.append(_row(table.schema().as_arrow(), "glue-event"))
    again = lake_catalog.open_table(settings, "page_views")
    assert [r["event_id"] for r in again.scan().to_arrow().to_pylist()] == ["glue-event"]
    assert [c.action for c in lake_catalog.migrate(settings)] == ["unchanged"]
