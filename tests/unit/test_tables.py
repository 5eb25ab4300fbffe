"""The tables file: parsing, strict validation, DDL for both dialects, migrate's plan, routing."""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pytest

from shardline import codec, ddl, migrate, tables_file
from shardline.errors import ConfigError, SchemaMismatch
from shardline.tables import PAGE_VIEWS, STAGED_SYSTEM, load_tables
from shardline import transforms
from shardline.workers import transform as transform_mod
from shardline.workers.rows import RowBuilder

ROOT = Path(__file__).resolve().parents[2]
CLICKS_FILE = ROOT / "examples" / "clicks" / "tables.toml"
UTC = dt.timezone.utc

CLICKS = """
[tables.page_views]
transform = "shardline.workers.transform:page_view"
route = "default"
dedup_key = ["event_id"]
sort_key = "occurred_at"
dist_key = "event_id"
columns = [
  { name = "event_id", type = "char(36)", not_null = true },
  { name = "occurred_at", type = "timestamp", not_null = true },
]

[tables.clicks]
transform = "m:f"
route = { type = ["click", "tap"] }
sort_key = "arrival_time"
columns = [
  { name = "target", type = "varchar(64)", not_null = true },
  { name = "x", type = "int" },
  { name = "score", type = "double", default = 0.5 },
  { name = "ok", type = "boolean", default = true },
  { name = "note", type = "varchar(8)", default = "it's" },
]
"""


def test_default_file_is_page_views_with_the_system_columns_last():
    tables = load_tables()
    assert tables.names == ["page_views"] and tables.route_field is None
    assert tables["page_views"].default_route
    assert PAGE_VIEWS.columns[-len(STAGED_SYSTEM):] == STAGED_SYSTEM
    assert PAGE_VIEWS.dedup_key == ("event_id",) and PAGE_VIEWS.sort_key == "occurred_at"
    assert PAGE_VIEWS.column("event_id").max_bytes == 36


@pytest.mark.parametrize("target", ddl.TARGETS)
def test_default_file_ddl_equals_the_page_views_migrations(target):
    """Existing warehouses stay valid: the file's page_views is what 002 created plus the
    system column 003 added (transform_version, last), column for column, and 004's index."""
    def rendered(name):
        path = next(p for _, n, p in migrate.migrations() if n == name)
        return [ddl.normalize(s) for s in migrate.render(path.read_text(), target)]

    version = ",transform_version VARCHAR(64)"
    create = [ddl.normalize(s) for s in ddl.create_table(PAGE_VIEWS, target)]
    assert version in create[0]
    # as 005 leaves them: no declared key; plain indexes on PostgreSQL
    made = [s.replace(",PRIMARY KEY(event_id)", "") for s in
            rendered("002_page_views") + rendered("004_arrival_time_zone_map")
            if "UNIQUE INDEX" not in s]
    made += [s for s in rendered("005_no_unguaranteed_keys") if s.startswith("CREATE INDEX")]
    assert [create[0].replace(version, ""), *create[1:]] == made
    column = ddl.all_columns(PAGE_VIEWS)[-1]
    assert column.name == "transform_version"
    added = ddl.normalize(ddl.add_column(PAGE_VIEWS, column, target))
    assert rendered("003_transform_version")[0].replace("ENCODE ZSTD", "").strip() == added


def test_ddl_golden_strings_for_a_position_keyed_table():
    clicks = tables_file.parse(CLICKS)["clicks"]
    pg, rs, like = (ddl.create_table(clicks, t) for t in ("postgres", "redshift",
                                                           "redshift-like"))
    body = ("target VARCHAR(64) NOT NULL,\n    x INTEGER,\n    score DOUBLE PRECISION "
            "DEFAULT 0.5,\n    ok BOOLEAN DEFAULT TRUE,\n    note VARCHAR(8) DEFAULT 'it''s',\n"
            "    shard_id VARCHAR(128) NOT NULL,\n    sequence_number VARCHAR(128) NOT NULL,\n"
            "    sub_sequence_number BIGINT NOT NULL,\n    arrival_time TIMESTAMP NOT NULL,\n"
            "    staged_at TIMESTAMP NOT NULL,\n    loaded_at TIMESTAMP NOT NULL ")
    pk = ",\n    transform_version VARCHAR(64)\n)"  # no declared key: unique in the window only
    assert pg == [f"CREATE TABLE clicks (\n    {body}DEFAULT (clock_timestamp() AT TIME "
                  f"ZONE 'utc'){pk}", "CREATE INDEX clicks_position ON clicks "
                  "(shard_id, sequence_number, sub_sequence_number)"]  # the dedup key: one index
    assert rs == [f"CREATE TABLE clicks (\n    {body}DEFAULT SYSDATE{pk} DISTSTYLE EVEN "
                  f"COMPOUND SORTKEY (arrival_time)"]
    assert like == [f"CREATE TABLE clicks (\n    {body}DEFAULT (clock_timestamp() AT TIME "
                    f"ZONE 'utc'),\n    transform_version VARCHAR(64)\n)",
                    "CREATE INDEX clicks_arrival_time ON clicks USING brin (arrival_time)"]


def _catalog(spec, drop=(), retype=None):
    cols = [ddl.CatalogColumn(c.name, c.type, c.nullable) for c in ddl.all_columns(spec)
            if c.name not in drop]
    if retype:
        cols = [dataclasses.replace(c, type=retype[1]) if c.name == retype[0] else c
                for c in cols]
    return cols


def test_plan_changes_create_add_nothing_and_refusals():
    spec = PAGE_VIEWS
    assert ddl.plan_changes(spec, None, "redshift")[0].action == "create"
    assert ddl.plan_changes(spec, _catalog(spec), "redshift") == []
    added = [tables_file._column(c, tables_file._Where("t"), "c") for c in
             ({"name": "campaign", "type": "varchar(64)"},
              {"name": "views", "type": "bigint", "not_null": True, "default": 1})]
    wider = dataclasses.replace(spec, columns=(*spec.user_columns, *added, *STAGED_SYSTEM))
    changes = ddl.plan_changes(wider, _catalog(spec), "redshift")
    assert [c.statements for c in changes] == [
        ("ALTER TABLE page_views ADD COLUMN campaign VARCHAR(64)",),
        ("ALTER TABLE page_views ADD COLUMN views BIGINT NOT NULL DEFAULT 1",)]
    with pytest.raises(SchemaMismatch, match="column url_host is varchar.100. in the warehouse"):
        ddl.plan_changes(spec, _catalog(spec, retype=("url_host", "varchar(100)")), "postgres")
    with pytest.raises(SchemaMismatch, match="campaign, views are in the warehouse but not in the"):
        ddl.plan_changes(spec, _catalog(wider), "postgres")
    strict = dataclasses.replace(wider, columns=(*wider.columns[:-6], dataclasses.replace(
        wider.column("views"), default=None), *STAGED_SYSTEM))
    with pytest.raises(SchemaMismatch, match="views is new and not_null without a default"):
        ddl.plan_changes(strict, _catalog(spec), "postgres")
    assert ddl.catalog_type("character varying", 255) == "varchar(255)"
    assert ddl.catalog_type("character", 36) == "char(36)"
    assert ddl.catalog_type("timestamp without time zone", None) == "timestamp"


@pytest.mark.parametrize("text, where", [
    ("[tables.t]\ntransform = 'm:f'\n", "[tables.t] columns: required"),
    ("[tables.t]\ncolumns = [{name = 'a', type = 'text'}]\n", "[tables.t] transform"),
    ("[tables.t]\ntransform = 'm:f'\ncolumns = [{name = 'a', type = 'text'}]\n",
     "[tables.t] columns.a.type: unknown type 'text'"),
    ("[tables.t]\ntransform = 'm:f'\ncolumns = [{name = 'a', type = 'varchar(0)'}]\n",
     "columns.a.type: varchar(n) takes 1 <= n"),
    ("[tables.t]\ntransform = 'm:f'\ncolumns = [{name = 'a', type = 'int', nul = true}]\n",
     "columns[0].nul: unknown key"),
    ("[tables.t]\ntransform = 'm:f'\ncolumns = [{name = 'shard_id', type = 'int'}]\n",
     "columns.shard_id: is a system column"),
    ("[tables.t]\ntransform = 'm:f'\ncolumns = [{name = 'a', type = 'int'}, "
     "{name = 'a', type = 'int'}]\n", "columns.a: defined twice"),
    ("[tables.t]\ntransform = 'm:f'\ndedup_key = 'a'\ncolumns = [{name = 'a', type = 'int'}]\n",
     "dedup_key: a must be not_null"),
    ("[tables.t]\ntransform = 'm:f'\nsort_key = 'b'\ncolumns = [{name = 'a', type = 'int'}]\n",
     "sort_key: 'b' is not a column"),
    ("[tables.t]\ntransform = 'm:f'\nsort_key = 'a'\ncolumns = [{name = 'a', type = 'int', "
     "not_null = true}]\n", "sort_key: a must be a not_null timestamp"),
    ("[tables.t]\ntransform = 'm:f'\ndist_style = 'key'\ncolumns = [{name = 'a', type = 'int'}]\n",
     "dist_key: dist_style"),
    ("[tables.t]\ntransform = 'm:f'\nsortkey = 'a'\ncolumns = [{name = 'a', type = 'int'}]\n",
     "[tables.t] sortkey: unknown key"),
    ("[tables.t]\ntransform = 'm:f'\ncolumns = [{name = 'a', type = 'int', default = 'x'}]\n",
     "columns.a.default: 'x' does not fit type int"),
    ("[tables.loads]\ntransform = 'm:f'\ncolumns = [{name = 'a', type = 'int'}]\n",
     "[tables.loads] name: loads is one of shardline's own"),
    ("[tables.a]\ntransform = 'm:f'\ncolumns = [{name = 'a', type = 'int'}]\n"
     "[tables.b]\ntransform = 'm:f'\ncolumns = [{name = 'a', type = 'int'}]\n",
     "[tables.a] route: required when the file defines several tables"),
    ("[tables.a]\ntransform = 'm:f'\nroute = 'default'\ncolumns = [{name = 'a', type = 'int'}]\n"
     "[tables.b]\ntransform = 'm:f'\nroute = 'default'\ncolumns = [{name = 'a', type = 'int'}]\n",
     "[tables.b] route: a second default route"),
    ("[tables.a]\ntransform = 'm:f'\nroute = {type = 'x'}\n"
     "columns = [{name = 'a', type = 'int'}]\n"
     "[tables.b]\ntransform = 'm:f'\nroute = {kind = 'y'}\n"
     "columns = [{name = 'a', type = 'int'}]\n",
     "[tables.b] route: routes on 'kind', another table on 'type'"),
    ("[tables.a]\ntransform = 'm:f'\nroute = {type = 'x'}\n"
     "columns = [{name = 'a', type = 'int'}]\n"
     "[tables.b]\ntransform = 'm:f'\nroute = {type = 'x'}\n"
     "columns = [{name = 'a', type = 'int'}]\n",
     "[tables.b] route.type: 'x' already routes to table a"),
    ("tables = 3\n", "tables: no table defined"),
    ("[tables.t\n", "not valid TOML"),
])
def test_strict_validation_names_the_table_and_key(text, where):
    with pytest.raises(ConfigError) as exc:
        tables_file.parse(text, "my.toml")
    assert "tables file my.toml" in str(exc.value) or "not valid TOML" in str(exc.value)
    assert where in str(exc.value)


def test_bad_tables_file_exits_with_the_config_code(tmp_path):
    from shardline import cli
    from shardline.exitcodes import ExitCode

    bad = tmp_path / "t.toml"
    bad.write_text("[tables.t]\ntransform = 'm:f'\n")
    assert cli.main(["settings", "--check", "--set", f"tables.file={bad}"]) == ExitCode.CONFIG
    assert cli.main(["migrate", "--print-sql", "--set",
                     f"tables.file={tmp_path / 'none.toml'}"]) == ExitCode.CONFIG


def _record(i: int, event: dict | bytes) -> codec.Record:
    data = event if isinstance(event, bytes) else json.dumps(event).encode()
    return codec.Record(f"4960{i:052d}", 0, f"pk{i}", data, 1_764_576_000_000 + i)


def test_routing_sends_each_event_to_its_table_and_unrouted_ones_to_dead_letters():
    tables = tables_file.parse(CLICKS)
    seen = []

    def clicks(event):
        seen.append(event["type"])
        return {"target": event["target"], "x": event.get("x")}

    pv = {"event_id": "6bf70d11-5820-4311-b52d-bd490274a3fa",
          "occurred_at": "2026-12-01T08:00:00Z"}
    builder = RowBuilder.routed(tables, {"page_views": lambda e: {
        "event_id": e["event_id"], "occurred_at": transforms.parse_timestamp(
            e["occurred_at"])}, "clicks": clicks})
    recs = [_record(0, pv), _record(1, {"type": "click", "target": "buy", "x": 3}),
            _record(2, {**pv, "type": "page_view"}), _record(3, {"type": "tap", "target": "t"}),
            _record(4, {"type": "click", "target": "x" * 65}),
            _record(5, {"type": "click", "target": "b", "x": 2 ** 31})]
    out = builder.build_tables(codec.Batch("s", "shardId-0", recs),
                               dt.datetime(2026, 12, 1, tzinfo=UTC))
    assert out.tables["page_views"].rows == 2 and out.tables["clicks"].rows == 2
    assert out.tables["clicks"].csv_text.startswith('"buy","3",\\N,\\N,\\N,"shardId-0"')
    assert [d["reason"] for d in out.dead_letters] == [
        "column target: 65 UTF-8 bytes, over the limit of 64",
        "column x: 2147483648 is out of the INTEGER range"]
    assert seen == ["click", "tap", "click", "click"]
    only = tables_file.parse(CLICKS.replace('route = "default"\n', 'route = {type = "pv"}\n'))
    lone = RowBuilder.routed(only, {"page_views": lambda e: {}, "clicks": clicks})
    out = lone.build_tables(codec.Batch("s", "shardId-0", [_record(0, pv), _record(
        1, {"type": ["click"]})]), dt.datetime(2026, 12, 1, tzinfo=UTC))
    assert [d["reason"] for d in out.dead_letters] == [
        "no route: the event has no 'type' field and no table takes the default route",
        'no route: type ["click"] matches no table\'s route and no table takes the default '
        'route']


def test_double_and_boolean_values():
    from shardline.workers.rows import _Reject, check_value

    assert check_value("d", "float", None, False, 2) == "2.0"
    assert check_value("b", "bool", None, False, False) == "false"
    for kind, value in (("float", float("nan")), ("float", True), ("bool", 1),
                        ("float", 10 ** 400)):
        with pytest.raises(_Reject):
            check_value("v", kind, None, False, value)


def test_the_clicks_example_file_is_valid_and_its_transform_imports():
    tables = tables_file.load(CLICKS_FILE)
    assert tables.names == ["page_views", "clicks"] and tables.by_value == {"click": "clicks"}
    transforms = transform_mod.load_table_transforms(tables)
    row = transforms["clicks"]({"type": "click", "event_id": "6BF70D11-5820-4311-b52d-"
                                "bd490274a3fa", "occurred_at": "2026-12-01T08:00:00+01:00",
                                "session_id": "s1", "url": "https://shop.example.com/p?q=1",
                                "element": "buy-button", "x": 10, "y": 20})
    assert row["event_id"] == "6bf70d11-5820-4311-b52d-bd490274a3fa"
    assert row["occurred_at"] == dt.datetime(2026, 12, 1, 7, 0, tzinfo=UTC)
    assert row["url_host"] == "shop.example.com"


def test_the_generator_emits_clicks_only_when_asked():
    from shardline.sample import events

    start = dt.datetime(2026, 12, 1, tzinfo=UTC)
    plain = [d for _k, _p, d in events.generate(200, seed=5, start=start)]
    again = events.generate(200, seed=5, start=start, click_fraction=0.0)
    assert [d for _k, _p, d in again] == plain  # the seeded stream is unchanged
    gen = events.generate(2000, seed=5, click_fraction=0.25, keep_ids=True)
    kinds = [k for k, _p, _d in gen]
    assert 400 < kinds.count(events.CLICK) < 600 and len(gen.click_ids) == kinds.count("click")
    transforms = transform_mod.load_table_transforms(tables_file.load(CLICKS_FILE))
    gen = events.generate(300, seed=6, click_fraction=0.5)
    for kind, _p, data in gen:
        event = json.loads(data)
        table = "clicks" if kind == events.CLICK else "page_views"
        assert ("type" in event) == (table == "clicks")
        transforms[table](event)  # both transforms accept what the generator makes


def test_stage_job_stages_one_file_per_table_and_a_retry_rewrites_nothing():
    import gzip

    from shardline import settings as settings_mod
    from shardline.controlstore.memory import MemoryStore
    from shardline.sample import events
    from shardline.workers.stage import StageJob
    from tests.fakes import FakeS3

    settings = settings_mod.Settings().replace(**{
        "s3.bucket": "bkt", "s3.prefix": "p", "tables.file": str(CLICKS_FILE)})
    store, s3 = MemoryStore(), FakeS3(bucket="bkt")
    job = StageJob(settings, s3=s3, ledger=store, clock=lambda: 1_764_576_000.0)
    gen = events.generate(300, bad_fraction=0.05, seed=8, click_fraction=0.3)
    kinds, recs = [], []
    for i, (kind, _key, data) in enumerate(gen):
        kinds.append(kind)
        recs.append(_record(i, data))
    batch = codec.Batch("s", "shardId-0", recs)
    job.stage(batch)
    files = {f.target_table: f for f in store.pending_files("page_views", 9) +
             store.pending_files("clicks", 9)}
    assert files["page_views"].row_count == kinds.count("good")
    assert files["clicks"].row_count == kinds.count("click")
    assert files["page_views"].dead_letter_count == len(recs) - kinds.count("good") - \
        kinds.count("click") > 0  # the batch's dead letters are on its own table's entry
    assert files["clicks"].dead_letter_key is None
    assert files["clicks"].columns == tuple(job.tables["clicks"].column_names)
    body = gzip.decompress(s3.objects[files["clicks"].s3_key]).decode()
    assert body.count("\n") == kinds.count("click")
    puts = len(s3.puts)
    job.stage(batch)  # a retry: the entries are there, nothing is written again
    assert len(s3.puts) == puts
    store._files.pop(files["page_views"].s3_key)  # an earlier try stopped before its last entry
    job.stage(batch)
    assert store.get_file(files["page_views"].s3_key) is not None
    rewritten = [key for _bucket, key, _body in s3.puts[puts:]]
    assert files["page_views"].s3_key in rewritten and files["clicks"].s3_key not in rewritten


def test_any_import_order_works():
    """shardline.tables and shardline.tables_file import in any order."""
    import subprocess
    import sys

    for first in ("shardline.tables_file", "shardline.ddl", "shardline.tables"):
        subprocess.run([sys.executable, "-c", f"import {first}; import shardline.tables"],
                       check=True)


def test_a_transform_that_does_not_import_stops_the_stage_worker_at_start(tmp_path, capsys):
    from shardline import cli
    from shardline.exitcodes import ExitCode

    bad = tmp_path / "t.toml"
    bad.write_text(CLICKS_FILE.read_text().replace("clicks_transform:click", "no_such_mod:click"))
    code = cli.main(["worker", "--set", "s3.bucket=bkt", "--set", f"tables.file={bad}"])
    assert code == ExitCode.CONFIG
    assert "[tables.clicks] transform 'no_such_mod:click': cannot import no_such_mod" in \
        capsys.readouterr().err


def test_print_sql_shows_the_tables_file_after_the_migrations(tmp_path, capsys):
    from shardline import cli

    text = CLICKS_FILE.read_text().replace('python_path = ["."]', "").replace(
        '{ name = "session_id",    type = "varchar(128)",  not_null = true },\n]',
        '{ name = "session_id",    type = "varchar(128)",  not_null = true },\n'
        '  { name = "campaign", type = "varchar(64)", default = "none" },\n]', 1)
    path = tmp_path / "t.toml"
    path.write_text(text)
    assert cli.main(["migrate", "--print-sql", "--set", f"tables.file={path}"]) == 0
    out = capsys.readouterr().out
    tail = out[out.index(f"-- tables file {path}"):]
    assert "CREATE TABLE page_views" in out and "CREATE TABLE page_views" not in tail
    assert "ALTER TABLE page_views ADD COLUMN campaign VARCHAR(64) DEFAULT 'none';" in tail
    assert "CREATE TABLE clicks (" in tail and "CREATE INDEX clicks_position" in tail


def test_the_pre_column_list_is_the_previous_releases_page_views_fixed():
    """Files staged before staged files recorded their column list load with these columns:
    the previous release's, pinned here, not derived from today's tables file (a column
    added to page_views since then must not change how such a file loads)."""
    from shardline.tables import PRE_COLUMN_LIST

    assert PRE_COLUMN_LIST == {"page_views": (
        "event_id", "occurred_at", "url", "url_host", "url_path", "url_query", "referrer",
        "referrer_host", "user_agent", "device_class", "ip_prefix", "user_id", "session_id",
        "shard_id", "sequence_number", "sub_sequence_number", "arrival_time", "staged_at")}
    # columns are only ever added: the old list is still a part of today's table
    assert set(PRE_COLUMN_LIST["page_views"]) <= set(PAGE_VIEWS.column_names)


def test_importing_the_tables_parses_no_file():
    import subprocess
    import sys

    code = ("import shardline.tables as t; import shardline.ddl; "
            "assert t.default_tables.cache_info().currsize == 0, 'parsed at import'; "
            "assert t.PAGE_VIEWS.name == 'page_views'; "
            "assert t.default_tables.cache_info().currsize == 1")
    subprocess.run([sys.executable, "-c", code], check=True)
