"""Numbered SQL migrations in ``sql/migrations``, each applied once and recorded.

They ship in the wheel as package data of ``shardline.sql`` and are read with
``importlib.resources``, so an installed ``shardline migrate`` finds the same files
as a checkout. Finding none is an install error (``NoMigrations``), never "up to date".

One source for every target: ``/*postgres:...*/`` (PostgreSQL, plain and redshift-like),
``/*postgres-plain:...*/`` (plain PostgreSQL only), ``/*redshift-like:...*/`` (the local
Redshift stand-in: no index on the dedup key, BRIN on the sort key) and ``/*redshift:...*/``
comments hold the target-only parts; ``render`` keeps the target's and drops the others.
Each migration runs in its own transaction with its record.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from importlib.abc import Traversable
from typing import TYPE_CHECKING, Any

from shardline.errors import NoMigrations, SchemaMismatch
from shardline.logs import get_logger

if TYPE_CHECKING:
    from shardline.ddl import Change
    from shardline.records.tables import Tables
    from shardline.settings import Settings

SQL_DIR: Traversable = resources.files("shardline.sql") / "migrations"
_DIALECT_PART = re.compile(r"/\*(postgres-plain|postgres|redshift-like|redshift):(.*?)\*/",
                           re.DOTALL)
# target -> the part tags it keeps
_KEEPS = {"postgres": ("postgres", "postgres-plain"),
          "redshift-like": ("postgres", "redshift-like"), "redshift": ("redshift",)}
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")

log = get_logger("migrate")


def target(settings: Settings) -> str:
    """What the warehouse migrations render for: redshift, postgres or redshift-like."""
    w = settings.warehouse
    return "redshift-like" if w.dialect == "postgres" and w.mode == "redshift-like" \
        else w.dialect


def render(sql: str, dialect: str) -> list[str]:
    """The statements of a migration for one target (comments and empties dropped)."""
    keep = _KEEPS[dialect]
    text = _DIALECT_PART.sub(lambda m: m.group(2) if m.group(1) in keep else "", sql)
    text = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
    return [s.strip() for s in text.split(";") if s.strip()]


def migrations(directory: Traversable = SQL_DIR) -> list[tuple[int, str, Traversable]]:
    """``(version, name, file)`` in order; raises ``NoMigrations`` when there are none."""
    found = []
    paths = sorted((p for p in directory.iterdir() if p.name.endswith(".sql")),
                   key=lambda p: p.name) if directory.is_dir() else []
    for path in paths:
        match = _NAME.match(path.name)
        if not match:
            raise ValueError(f"{path.name}: migration files are named NNN_name.sql")
        found.append((int(match.group(1)), path.name[:-len(".sql")], path))
    if not found:
        raise NoMigrations(f"no migrations found in {directory} (shardline.sql is not "
                           f"installed with its package data): nothing was created")
    versions = [v for v, _, _ in found]
    if len(set(versions)) != len(versions):
        raise ValueError("two migrations share a number")
    return found


def pending(conn: Any, directory: Traversable = SQL_DIR) -> list[tuple[str, Traversable]]:
    """(name, file) of the migrations not recorded in ``schema_migrations``; reads only."""
    plan = migrations(directory)
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = "
                    "current_schema() AND table_name = 'schema_migrations'")
        recorded = set()
        if cur.fetchone() is not None:
            cur.execute("SELECT version FROM schema_migrations")
            recorded = {row[0] for row in cur.fetchall()}
    conn.rollback()
    return [(name, path) for version, name, path in plan if version not in recorded]


@dataclass(frozen=True)
class SchemaState:
    """Where a store stands against this release's migrations (names, e.g. 002_page_views)."""

    fresh: bool  # nothing recorded: never migrated (or the settings point somewhere else)
    missing: tuple[str, ...] = ()  # this release's, not applied yet
    unknown: tuple[str, ...] = ()  # applied, but not this release's: a newer one ran

    @property
    def current(self) -> bool:
        return not (self.fresh or self.missing or self.unknown)


def schema_state(conn: Any, directory: Traversable = SQL_DIR) -> SchemaState:
    """The connection's schema against the migrations in ``directory``; reads only."""
    plan = migrations(directory)
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = "
                    "current_schema() AND table_name = 'schema_migrations'")
        recorded: dict[int, str] = {}
        if cur.fetchone() is not None:
            cur.execute("SELECT version, name FROM schema_migrations")
            recorded = dict(cur.fetchall())
    conn.rollback()
    names = {version: name for version, name, _ in plan}
    return SchemaState(
        fresh=not recorded,
        missing=tuple(name for version, name, _ in plan if version not in recorded),
        unknown=tuple(name for version, name in sorted(recorded.items())
                      if names.get(version) != name))


def describe_postgres(kind: str, dsn: str, schema: str) -> str:
    """"postgres database shardline, schema public": where a store is, never its secrets."""
    from psycopg2.extensions import parse_dsn

    try:
        database = parse_dsn(dsn).get("dbname") or "(default)"
    except Exception:  # noqa: BLE001 - a DSN libpq refuses is reported when connecting
        database = "(unparsed DSN)"
    return f"{kind} database {database}, schema {schema}"


def migrate(conn: Any, dialect: str, directory: Traversable = SQL_DIR) -> list[str]:
    """Apply what is missing; returns the names applied. Safe to run again."""
    plan = migrations(directory)  # before touching the database: none found is an error
    conn.autocommit = False
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS schema_migrations ("
                    "version INTEGER NOT NULL PRIMARY KEY, name VARCHAR(256) NOT NULL, "
                    "applied_at TIMESTAMP NOT NULL)")
        conn.commit()
        cur.execute("SELECT version, name FROM schema_migrations")
        recorded = dict(cur.fetchall())
    conn.commit()
    names = {version: name for version, name, _ in plan}
    foreign = sorted(f"{v} {n}" for v, n in recorded.items() if names.get(v, n) != n)
    if foreign:  # e.g. the release before the control store: shardline/upgrade.py
        raise SchemaMismatch(f"schema_migrations records {', '.join(foreign)}, which this "
                             f"release does not have under those numbers ({directory}); "
                             f"nothing was applied")
    done = set(recorded)
    applied = []
    for version, name, path in plan:
        if version in done:
            continue
        with conn.cursor() as cur:
            for statement in render(path.read_text(encoding="utf-8"), dialect):
                cur.execute(statement)
            cur.execute("INSERT INTO schema_migrations (version, name, applied_at) "
                        "VALUES (%s, %s, %s)",
                        (version, name, datetime.now(timezone.utc).replace(tzinfo=None)))
        conn.commit()
        log.info("applied migration %s", name)
        applied.append(name)
    return applied


# -- the tables file (shardline.ddl): after the numbered migrations ----------------------

def table_changes(conn: Any, dialect: str, tables: Tables) -> list[Change]:
    """What the tables file still needs in this warehouse (``ddl.Change`` list); reads only."""
    from shardline import ddl

    try:
        with conn.cursor() as cur:
            return ddl.changes_for(cur, tables.tables, dialect)
    finally:
        conn.rollback()


def migrate_tables(conn: Any, dialect: str, tables: Tables) -> list[Change]:
    """Create the file's missing tables and add its new columns, each change in its own
    transaction with its record in ``table_changes`` (what was applied, when). Every table
    is checked before anything is applied: a refused change (``SchemaMismatch``) leaves the
    warehouse as it was."""
    changes = table_changes(conn, dialect, tables)
    if not changes:  # nothing to record: no bookkeeping table in a warehouse that needs none
        return []
    conn.autocommit = False
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS table_changes ("
                    "target_table VARCHAR(128) NOT NULL, action VARCHAR(16) NOT NULL, "
                    "statement VARCHAR(65535) NOT NULL, applied_at TIMESTAMP NOT NULL)")
    conn.commit()
    for change in changes:
        now = datetime.now(timezone.utc).replace(tzinfo=None)
        with conn.cursor() as cur:
            for statement in change.statements:
                cur.execute(statement)
                cur.execute("INSERT INTO table_changes (target_table, action, statement, "
                            "applied_at) VALUES (%s, %s, %s, %s)",
                            (change.table, change.action, statement, now))
        conn.commit()
        log.info("table %s: %s applied (%s)", change.table, change.action,
                 "; ".join(change.statements)[:300])
    return changes
