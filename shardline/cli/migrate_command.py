"""``shardline migrate``: every store the settings name, brought up to date: the warehouse
(migrations, then the tables file) and the control store (sql/control on PostgreSQL, or the
DynamoDB tables); ``--warehouse-only`` or ``--control`` does one of them; ``--print-sql`` and
``--dry-run`` apply nothing."""
from __future__ import annotations

import argparse
import re
import sys

from shardline import clients, ddl, migrate as migrate_mod, settings as settings_mod, upgrade
from shardline.cli.kit import command_parser, load_settings, parse_command_args
from shardline.errors import ConfigError
from shardline.exitcodes import ExitCode
from shardline.extras import lake_missing_message
from shardline.lake.config import lake_tables
from shardline.logs import get_logger
from shardline.tables import DEFAULT_TABLES, Tables, load_tables


def main(argv: list[str]) -> int:
    parser = command_parser("migrate", "Bring every store up to date: the warehouse (the "
                                       "numbered migrations in sql/migrations, shipped as "
                                       "shardline.sql, then the tables file (tables.file: "
                                       "CREATE TABLE for a new table, ALTER TABLE ... ADD "
                                       "COLUMN for a new column; docs/tables.md); a warehouse "
                                       "of the release before the control store is upgraded, "
                                       "its control tables carried into the control store "
                                       "(docs/operations.md)), then the control store.")
    parser.add_argument("--print-sql", action="store_true",
                        help="print the rendered SQL for the configured dialect (the "
                             "migrations, then the tables file's tables, then the control "
                             "store's), connect nowhere")
    parser.add_argument("--dry-run", action="store_true",
                        help="connect and print what would be applied (migrations not yet "
                             "applied, the tables file's CREATE/ALTER, the control store's "
                             "missing migrations or tables), apply nothing")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--control", action="store_true",
                       help="the control store only ([control] backend: a PostgreSQL "
                            "database of its own, or DynamoDB tables)")
    which.add_argument("--warehouse-only", action="store_true",
                       help="the warehouse only (the tables file's tables included)")
    args, code = parse_command_args(parser, argv)
    if args is None:
        return code
    settings = load_settings(args)
    lake_tables(settings, load_tables(settings))  # an unknown lake table stops it here
    if not args.warehouse_only and not args.print_sql:
        from shardline.controlstore import open_store

        open_store(settings).close()  # its settings checked before the warehouse changes
    if not args.control:
        code = _migrate_warehouse(settings, args)
        if code != ExitCode.OK:
            return code
    if not args.warehouse_only:
        code = _migrate_control(settings, args.print_sql, args.dry_run)
        if code != ExitCode.OK:
            return code
    if not args.control and not args.print_sql and not args.dry_run:
        return _migrate_lake(settings)
    return ExitCode.OK


def _migrate_lake(settings: settings_mod.Settings) -> int:
    """The lake (``lake.tables``): the namespace and each table, created or evolved."""
    if not settings.lake.tables:
        return ExitCode.OK
    if (missing := lake_missing_message("migrate")) is not None:
        print(missing, file=sys.stderr)
        return ExitCode.NOT_INSTALLED
    from shardline.lake.catalog import migrate as migrate_lake

    log = get_logger("migrate", lake=settings.lake.catalog)
    for change in migrate_lake(settings):
        log.info("lake table %s.%s: %s", settings.lake.namespace, change.table, change.action)
    return ExitCode.OK


def _migrate_warehouse(settings: settings_mod.Settings, args: argparse.Namespace) -> int:
    """The warehouse: the migrations, then the tables file (or what that would apply)."""
    tables = load_tables(settings)  # a bad tables file stops here (exit CONFIG)
    target = migrate_mod.target(settings)
    if args.print_sql:
        made = set()
        for _, name, path in migrate_mod.migrations():
            print(f"-- {name}")
            for statement in migrate_mod.render(path.read_text(encoding="utf-8"), target):
                made |= set(_CREATED.findall(statement))
                print(statement + ";\n")
        print(f"-- tables file {tables.source}")
        for spec in tables.tables:
            if spec.name in made:  # as the default file defines it (a unit test holds it)
                print(f"-- {spec.name}: created by the migrations above")
                base = ddl.catalog_of(DEFAULT_TABLES[spec.name]) \
                    if spec.name in DEFAULT_TABLES else None
                changes = ddl.plan_changes(spec, base, target) if base is not None else []
                statements = [s for c in changes for s in c.statements]
            else:
                statements = ddl.create_table(spec, target)
            for statement in statements:
                print(statement + ";\n")
        return ExitCode.OK
    settings.require("warehouse.dsn")
    conn = clients.warehouse_connect(settings)
    try:
        if args.dry_run:
            return _dry_run(conn, target, tables)
        if settings.warehouse.dialect == "postgres":  # plain and redshift-like
            with conn.cursor() as cur:
                cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{settings.warehouse.schema}"')
            conn.commit()
        if upgrade.legacy_layout(conn):  # the release before the control store
            _upgrade_legacy(settings, conn)
        applied = migrate_mod.migrate(conn, target)
        changes = migrate_mod.migrate_tables(conn, target, tables)
    finally:
        conn.close()
    get_logger("migrate", schema=settings.warehouse.schema).info(
        "schema is up to date (%d migrations and %d table changes applied now)",
        len(applied), len(changes))
    return ExitCode.OK


_CREATED = re.compile(r"^CREATE TABLE (\w+)", re.MULTILINE)


def _dry_run(conn: object, target: str, tables: Tables) -> int:
    """``migrate --dry-run``: what would be applied, nothing applied."""
    pending = migrate_mod.pending(conn)
    made = set()
    for name, path in pending:
        print(f"-- migration {name} (not applied yet)")
        for statement in migrate_mod.render(path.read_text(encoding="utf-8"), target):
            made |= set(_CREATED.findall(statement))
            print(statement + ";\n")
    specs = [spec for spec in tables.tables if spec.name not in made]
    changes = migrate_mod.table_changes(conn, target, type(tables)(tuple(specs)))
    for change in changes:
        print(f"-- table {change.table}: {change.action}")
        for statement in change.statements:
            print(statement + ";\n")
    if not pending and not changes:
        print("-- nothing to apply: the warehouse matches the migrations and the tables file")
    return ExitCode.OK


def _upgrade_legacy(settings: settings_mod.Settings, conn: object) -> None:
    """The warehouse holds the old control tables: carry them into the control store (its
    tables made first, as ``migrate --control`` does) and bring the warehouse up to date."""
    from shardline.controlstore import open_store

    c, w = settings.control, settings.warehouse
    if c.backend == "postgres" and c.dsn == w.dsn and c.schema == w.schema:
        raise ConfigError("control.dsn/control.schema name the warehouse's own schema: the "
                          "control store must be a database (or at least a schema) of its "
                          "own before the control tables can leave the warehouse")
    store = open_store(settings)
    try:
        store.create_tables()
        upgrade.upgrade(conn, migrate_mod.target(settings), store)
    finally:
        store.close()


def _migrate_control(settings: settings_mod.Settings, print_sql: bool,
                     dry_run: bool = False) -> int:
    """The control store: sql/control on PostgreSQL, or the DynamoDB tables."""
    from shardline.controlstore import open_store

    log = get_logger("migrate", control=settings.control.backend)
    if print_sql:
        if settings.control.backend != "postgres":
            log.info("the dynamodb backend has no SQL; its tables are made by create_tables()")
            return ExitCode.OK
        from shardline.controlstore.postgres import SQL_DIR

        for _, name, path in migrate_mod.migrations(SQL_DIR):
            print(f"-- {name}")
            for statement in migrate_mod.render(path.read_text(encoding="utf-8"), "postgres"):
                print(statement + ";\n")
        return ExitCode.OK
    store = open_store(settings)
    try:
        if dry_run:
            state = store.schema_state()
            if state.unknown:
                raise ConfigError(f"the control store ({store.describe()}) has "
                                  f"{', '.join(state.unknown)}, which this release does not "
                                  f"know: nothing would be applied")
            for name in state.missing:
                print(f"-- control store: {name} (not applied yet)")
            if not state.missing:
                print(f"-- nothing to apply: the control store ({store.describe()}) is up "
                      f"to date")
            return ExitCode.OK
        created = store.create_tables()
    finally:
        store.close()
    log.info("control store is up to date (%d created now: %s)", len(created),
             ", ".join(created) or "-")
    return ExitCode.OK

