"""A tables file -> warehouse DDL for each target, and what ``migrate`` changes in a warehouse.

Targets as in ``shardline.migrate``: ``postgres`` (plain: plain indexes on the dedup key and
the Kinesis position), ``redshift-like`` (the local stand-in: no index on a key, a BRIN index
on the sort key playing zone maps) and ``redshift`` (DISTSTYLE, DISTKEY, COMPOUND SORTKEY).
No target declares a key: the dedup key is unique only within the loader's dedup window, and
Redshift's planner trusts declared keys. For page_views of the default tables file this is,
statement for statement, what ``sql/migrations/002_page_views.sql`` makes as
``005_no_unguaranteed_keys.sql`` leaves it (tests/unit/test_tables.py holds them equal), so
existing warehouses stay valid.

``plan_changes`` compares a table with the warehouse's catalog (``information_schema``):
a missing table is a CREATE TABLE; a column of the file the table lacks is an ``ALTER TABLE
... ADD COLUMN`` (only nullable or with a default: the table has rows); a column whose type
differs, or a column the file no longer has, is refused (``SchemaMismatch``): changing or
dropping data is never done behind a user's back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from shardline.errors import SchemaMismatch
from shardline.tables import LOADER_SYSTEM, POSITION_KEY, Column, TableSpec

TARGETS = ("postgres", "redshift-like", "redshift")
_SQL_TYPE = {"timestamp": "TIMESTAMP", "bigint": "BIGINT", "int": "INTEGER",
             "double": "DOUBLE PRECISION", "boolean": "BOOLEAN"}
# information_schema.columns data_type -> the portable type's base
_CATALOG = {"character varying": "varchar", "character": "char", "bpchar": "char",
            "timestamp without time zone": "timestamp", "bigint": "bigint",
            "integer": "int", "double precision": "double", "boolean": "boolean"}
_LOADED_AT_DEFAULT = {"postgres": "DEFAULT (clock_timestamp() AT TIME ZONE 'utc')",
                      "redshift-like": "DEFAULT (clock_timestamp() AT TIME ZONE 'utc')",
                      "redshift": "DEFAULT SYSDATE"}


def sql_type(col: Column) -> str:
    if col.type.startswith(("varchar(", "char(")):
        return col.type.upper()
    return _SQL_TYPE[col.type]


def literal(value: object) -> str:
    """A default value as SQL text (validated by the tables file: str, int, float, bool)."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def column_sql(col: Column, target: str) -> str:
    parts = [col.name, sql_type(col)]
    if not col.nullable:
        parts.append("NOT NULL")
    if col.name == "loaded_at" and col.system:
        parts.append(_LOADED_AT_DEFAULT[target])
    elif col.default is not None:
        parts.append(f"DEFAULT {literal(col.default)}")
    return " ".join(parts)


def all_columns(spec: TableSpec) -> tuple[Column, ...]:
    """Every column of the warehouse table: the staged ones, then the loader's."""
    return (*spec.columns, *LOADER_SYSTEM)


def create_table(spec: TableSpec, target: str) -> list[str]:
    """CREATE TABLE (and its indexes) for one target."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}")
    key = spec.dedup_key or POSITION_KEY
    lines = [column_sql(c, target) for c in all_columns(spec)]
    table = f"CREATE TABLE {spec.name} (\n    " + ",\n    ".join(lines) + "\n)"
    if target == "redshift":
        dist = f"DISTSTYLE {spec.dist_style.upper()}"
        if spec.dist_style == "key":
            dist += f" DISTKEY ({spec.dist_key})"
        table += " " + dist
        if spec.sort_key:
            table += f" COMPOUND SORTKEY ({spec.sort_key})"
    out = [table]
    if target == "postgres":  # the merge's join, and a reprocess load's delete by position
        for cols in dict.fromkeys((tuple(key), POSITION_KEY)):
            name = "position" if cols == POSITION_KEY else "_".join(cols)
            out.append(f"CREATE INDEX {spec.name}_{name} ON {spec.name} ({', '.join(cols)})")
    if target == "redshift-like":  # BRIN plays Redshift's zone maps: the sort key's, and
        # arrival_time's, which bounds a reprocess load's delete (sql/migrations/004)
        for col in dict.fromkeys(c for c in (spec.sort_key, "arrival_time") if c):
            out.append(f"CREATE INDEX {spec.name}_{col} ON {spec.name} USING brin ({col})")
    return out


def add_column(spec: TableSpec, col: Column, target: str) -> str:
    if not col.nullable and col.default is None:
        raise SchemaMismatch(f"table {spec.name}: column {col.name} is new and not_null "
                             f"without a default; the table already has rows: make it "
                             f"nullable or give it a default")
    return f"ALTER TABLE {spec.name} ADD COLUMN {column_sql(col, target)}"


def normalize(statement: str) -> str:
    """One statement with comments and layout whitespace dropped (for comparing DDL)."""
    import re

    text = "\n".join(line.split("--", 1)[0] for line in statement.splitlines())
    text = re.sub(r"\s+", " ", text).strip()
    return re.sub(r"\s*([(),])\s*", r"\1", text)


@dataclass(frozen=True)
class CatalogColumn:
    name: str
    type: str  # portable form: varchar(255), timestamp, ... (raw data_type when unknown)
    nullable: bool


def catalog_of(spec: TableSpec) -> list[CatalogColumn]:
    """The catalog a table made exactly as ``spec`` says would show."""
    return [CatalogColumn(c.name, c.type, c.nullable) for c in all_columns(spec)]


def catalog_type(data_type: str, length: int | None) -> str:
    base = _CATALOG.get(data_type.lower(), data_type.lower())
    return f"{base}({length})" if base in ("varchar", "char") else base


def read_catalog(cur: Any, table: str) -> list[CatalogColumn] | None:
    """The table's columns in the connection's schema, None when there is no such table."""
    cur.execute("SELECT column_name, data_type, character_maximum_length, is_nullable "
                "FROM information_schema.columns WHERE table_schema = current_schema() "
                "AND table_name = %s ORDER BY ordinal_position", (table,))
    rows = cur.fetchall()
    if not rows:
        return None
    return [CatalogColumn(name, catalog_type(kind, length), nullable == "YES")
            for name, kind, length, nullable in rows]


@dataclass(frozen=True)
class Change:
    table: str
    action: str  # create | add_column
    statements: tuple[str, ...]


def plan_changes(spec: TableSpec, catalog: list[CatalogColumn] | None,
                 target: str) -> list[Change]:
    """What brings the warehouse table to the file's definition (nothing when it is there).

    Raises ``SchemaMismatch`` for a type change or a column the file dropped."""
    if catalog is None:
        return [Change(spec.name, "create", tuple(create_table(spec, target)))]
    have = {c.name: c for c in catalog}
    wanted = all_columns(spec)
    problems = []
    for col in wanted:
        got = have.get(col.name)
        if got is not None and got.type != col.type:
            problems.append(f"column {col.name} is {got.type} in the warehouse, {col.type} in "
                            f"the tables file (a type change is not done by migrate: add a "
                            f"column under a new name instead)")
    names = {c.name for c in wanted}
    dropped = [c.name for c in catalog if c.name not in names]
    if dropped:
        problems.append(f"column(s) {', '.join(dropped)} are in the warehouse but not in the "
                        f"tables file (migrate never drops a column: put them back in the "
                        f"file, or drop them yourself)")
    if problems:
        raise SchemaMismatch(f"table {spec.name}: " + "; ".join(problems) + "; nothing applied")
    return [Change(spec.name, "add_column", (add_column(spec, col, target),))
            for col in wanted if col.name not in have]


def read_keys(cur: Any, table: str, target: str) -> list[str]:
    """Statements that drop the unique keys a table of an earlier release declared: its
    primary key (informational on Redshift, enforced on PostgreSQL) and, on PostgreSQL, its
    unique indexes, each replaced by a plain index on the same columns."""
    cur.execute("SELECT constraint_name FROM information_schema.table_constraints WHERE "
                "table_schema = current_schema() AND table_name = %s AND constraint_type = "
                "'PRIMARY KEY'", (table,))
    out = [f"ALTER TABLE {table} DROP CONSTRAINT {name}" for (name,) in cur.fetchall()]
    if target == "postgres":
        cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = "
                    "current_schema() AND tablename = %s AND indexdef LIKE 'CREATE UNIQUE %%'",
                    (table,))
        for name, definition in cur.fetchall():
            if name.endswith("_pkey"):
                continue  # the primary key's own index: dropped with it above
            out += [f"DROP INDEX {name}",
                    definition.replace("CREATE UNIQUE INDEX", "CREATE INDEX", 1)]
        if out and out[0].startswith("ALTER TABLE"):
            out += create_table_keys(table, cur)
    return out


def create_table_keys(table: str, cur: Any) -> list[str]:
    """The plain index that replaces a dropped primary key (its columns, from the catalog)."""
    cur.execute("SELECT kcu.column_name FROM information_schema.table_constraints tc JOIN "
                "information_schema.key_column_usage kcu ON tc.constraint_name = "
                "kcu.constraint_name AND tc.table_schema = kcu.table_schema WHERE "
                "tc.table_schema = current_schema() AND tc.table_name = %s AND "
                "tc.constraint_type = 'PRIMARY KEY' ORDER BY kcu.ordinal_position", (table,))
    cols = [c for (c,) in cur.fetchall()]
    if not cols:
        return []
    name = "position" if tuple(cols) == POSITION_KEY else "_".join(cols)
    return [f"CREATE INDEX {table}_{name} ON {table} ({', '.join(cols)})"]


def changes_for(cur: Any, specs: Iterable[TableSpec], target: str) -> list[Change]:
    """Every table's changes against the connection's catalog (all checked before any);
    a table an earlier release made with a declared key gets it dropped (``read_keys``)."""
    out: list[Change] = []
    for spec in specs:
        catalog = read_catalog(cur, spec.name)
        out += plan_changes(spec, catalog, target)
        if catalog is not None:
            drops = read_keys(cur, spec.name, target)
            if drops:
                out.append(Change(spec.name, "drop_key", tuple(drops)))
    return out
