"""The ledger row has one definition, ``StagedFile`` (``shardline.records.ledger``): the
PostgreSQL control store's migrated ``staged_files`` table must be exactly the columns derived
from it (plus what the store keeps beside the record), so a field added without its
``sql/control`` migration, or a migration without its field, fails here.

PostgreSQL itself renders both sides: the migrated table, and a scratch table made from the
derived column definitions, compared by ``format_type`` and NOT NULL.
"""
from __future__ import annotations

import uuid
from typing import Any

import psycopg2
import pytest

from shardline.controlstore.postgres import PostgresStore
from shardline.records.ledger import LEDGER_COLUMNS, STORE_COLUMNS, StagedFile

pytestmark = pytest.mark.integration


def _columns(cur: Any, schema: str, table: str) -> dict[str, tuple[str, bool]]:
    cur.execute("SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull "
                "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 "
                "AND NOT a.attisdropped", (schema, table))
    return {name: (kind, not_null) for name, kind, not_null in cur.fetchall()}


def test_the_migrated_staged_files_table_is_the_dataclass_derived_schema(stack: Any) -> None:
    schema = f"ls_{uuid.uuid4().hex[:8]}"
    store = PostgresStore(stack.control_dsn, schema)
    store.create_tables()
    store.close()
    conn = psycopg2.connect(stack.control_dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            derived = ", ".join(c.ddl for c in LEDGER_COLUMNS + STORE_COLUMNS)
            cur.execute(f'CREATE TABLE "{schema}".derived_staged_files ({derived})')
            expected = _columns(cur, schema, "derived_staged_files")
            migrated = _columns(cur, schema, "staged_files")
            # the primary key makes s3_key NOT NULL on both sides
            assert migrated == expected
            assert set(migrated) == {c.name for c in LEDGER_COLUMNS + STORE_COLUMNS}
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA "{schema}" CASCADE')
        conn.close()


def test_every_field_of_the_record_is_a_ledger_column() -> None:
    import dataclasses

    assert [c.name for c in LEDGER_COLUMNS] == [f.name for f in dataclasses.fields(StagedFile)]
    by_name = {c.name: c for c in LEDGER_COLUMNS}
    assert by_name["s3_key"].max_bytes == 1024 and not by_name["s3_key"].nullable
    assert by_name["dead_letter_key"].nullable and by_name["column_list"].max_bytes is None
    assert not by_name["load_id"].staged  # the loader's, not the stage worker's
