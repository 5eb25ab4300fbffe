"""The lake's schema is derived from the tables file (one definition), its settings are
strict, and what it prints holds no secret."""
from __future__ import annotations

import pytest

from shardline import settings as settings_mod
from shardline.errors import ConfigError
from shardline.lake import schema as lake_schema
from shardline.lake.config import catalog_properties, lake_tables, redacted
from shardline.records import tables as records_tables
from shardline.records.tables import LOADER_SYSTEM, STAGED_SYSTEM
from shardline.tables import PAGE_VIEWS, load_tables


def test_every_column_kind_of_the_tables_file_has_an_iceberg_type() -> None:
    # _KIND is the tables file's portable types -> kinds: a new kind without a lake type fails
    kinds = set(records_tables._KIND.values())
    assert kinds <= set(lake_schema.ICEBERG_TYPES), kinds - set(lake_schema.ICEBERG_TYPES)


def test_the_iceberg_schema_is_the_tables_files_columns_with_portable_types() -> None:
    schema = lake_schema.iceberg_schema(PAGE_VIEWS)
    names = [f.name for f in schema.fields]
    assert names == [c.name for c in PAGE_VIEWS.columns + LOADER_SYSTEM]
    assert names[-len(STAGED_SYSTEM) - 2:] == ["shard_id", "sequence_number",
                                              "sub_sequence_number", "arrival_time",
                                              "staged_at", "loaded_at", "transform_version"]
    types = {f.name: (str(f.field_type), f.required) for f in schema.fields}
    assert types["event_id"] == ("string", True)
    assert types["occurred_at"] == ("timestamp", True)
    assert types["user_id"] == ("string", False)
    assert types["sub_sequence_number"] == ("long", True)
    assert types["transform_version"] == ("string", False)
    for granularity in ("day", "hour"):
        spec = lake_schema.partition_spec(PAGE_VIEWS, schema, granularity)
        (field,) = spec.fields
        assert (field.name, str(field.transform)) == (f"occurred_at_{granularity}", granularity)
        assert field.source_id == schema.find_field("occurred_at").field_id


def test_lake_settings_are_strict() -> None:
    base = settings_mod.load(env={})
    assert base.lake.tables == [] and base.lake.target_file_bytes == 128 * 1024 * 1024
    s = settings_mod.load(env={"SHARDLINE_LAKE_TABLES": "page_views"})
    assert lake_tables(s, load_tables(s)) == ("page_views",)
    bad = settings_mod.load(env={"SHARDLINE_LAKE_TABLES": "page_views,clicks"})
    with pytest.raises(ConfigError, match="lake.tables names 'clicks'"):
        lake_tables(bad, load_tables(bad))
    for key, value in [("SHARDLINE_LAKE_CATALOG", "hive"),
                       ("SHARDLINE_LAKE_PARTITION", "week"),
                       ("SHARDLINE_LAKE_WAREHOUSE", "/tmp/lake"),
                       ("SHARDLINE_LAKE_CATALOG_URI", "postgresql://u:secret@h/db"),
                       ("SHARDLINE_LAKE_TABLES", "Page-Views")]:
        with pytest.raises(ConfigError) as err:
            settings_mod.load(env={key: value})
        assert "\n" not in str(err.value) and "secret" not in str(err.value)


def test_catalog_properties_derive_the_warehouse_and_never_hold_a_secret() -> None:
    s = settings_mod.load(env={"SHARDLINE_S3_BUCKET": "bkt1", "SHARDLINE_S3_PREFIX": "p/q",
                               "SHARDLINE_S3_ENDPOINT_URL": "http://127.0.0.1:9",
                               "SHARDLINE_LAKE_CATALOG_URI":
                                   "postgresql+psycopg2://me@127.0.0.1:5432/cat"})
    props = catalog_properties(s)
    assert props["warehouse"] == "s3://bkt1/p/q/lake"
    assert props["type"] == "sql" and props["s3.endpoint"] == "http://127.0.0.1:9"
    with pytest.raises(ConfigError, match="lake.catalog_uri is required"):
        catalog_properties(settings_mod.load(env={"SHARDLINE_S3_BUCKET": "bkt1"}))
    assert redacted({"uri": "postgresql://u:pw@h/db", "s3.secret-access-key": "x",
                     "s3.access-key-id": "y", "warehouse": "s3://b"}) == {
        "uri": "postgresql://u:***@h/db", "warehouse": "s3://b"}
    glue = settings_mod.load(env={"SHARDLINE_S3_BUCKET": "bkt1", "SHARDLINE_LAKE_CATALOG": "glue",
                                  "SHARDLINE_LAKE_GLUE_REGION": "eu-west-1"})
    assert catalog_properties(glue)["glue.region"] == "eu-west-1"
