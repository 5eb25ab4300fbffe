"""Opening the lake's catalog and its tables (pyiceberg), and ``migrate``'s part: the
namespace and the tables of ``lake.tables``, created or evolved."""
from __future__ import annotations

from dataclasses import dataclass

from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError
from pyiceberg.table import Table

from shardline.errors import ConfigError, NotMigrated
from shardline.lake import schema as lake_schema
from shardline.lake.config import catalog_properties, identifier, lake_tables
from shardline.records.tables import TableSpec
from shardline.settings import Settings
from shardline.tables import load_tables

TARGET_FILE_PROPERTY = "write.target-file-size-bytes"
# pyiceberg retries a commit refused for a concurrent one on the refreshed table, and an
# append always applies there: a lake loader whose lease lapsed would then add files the
# new holder also adds. No retry: a refused commit fails, the loader reconciles (and the
# compaction is run again).
COMMIT_RETRIES_PROPERTY = "commit.retry.num-retries"


def table_properties(settings: Settings) -> dict[str, str]:
    """What ``migrate`` sets on every lake table (and keeps set)."""
    return {TARGET_FILE_PROPERTY: str(settings.lake.target_file_bytes),
            COMMIT_RETRIES_PROPERTY: "0"}


def open_catalog(settings: Settings) -> Catalog:
    return load_catalog(settings.lake.catalog_name, **catalog_properties(settings))


def open_table(settings: Settings, table: str, catalog: Catalog | None = None) -> Table:
    """The lake table of ``table``; ``NotMigrated`` (one line) when migrate has not made it
    or not set what the loader relies on."""
    catalog = catalog or open_catalog(settings)
    try:
        found = catalog.load_table(identifier(settings, table))
    except NoSuchTableError:
        raise NotMigrated(f"the lake table {identifier(settings, table)} does not exist in "
                          f"the {settings.lake.catalog} catalog {settings.lake.catalog_name}: "
                          f"run `shardline migrate`") from None
    if found.properties.get(COMMIT_RETRIES_PROPERTY) != "0":
        raise NotMigrated(f"the lake table {identifier(settings, table)} retries refused "
                          f"commits ({COMMIT_RETRIES_PROPERTY} is not 0): run `shardline "
                          f"migrate`")
    return found


def lake_spec(settings: Settings, table: str) -> TableSpec:
    """The tables file's spec of a table that is in ``lake.tables`` (ConfigError if not)."""
    tables = load_tables(settings)
    if table not in lake_tables(settings, tables):
        raise ConfigError(f"table {table!r} is not in lake.tables "
                          f"({', '.join(settings.lake.tables) or 'empty: no lake'})")
    return tables[table]


@dataclass(frozen=True)
class LakeChange:
    table: str
    action: str  # created | added columns ... | unchanged


def migrate(settings: Settings) -> list[LakeChange]:
    """Create the namespace and each lake table; add the columns the tables file gained."""
    tables = load_tables(settings)
    names = lake_tables(settings, tables)
    if not names:
        return []
    catalog = open_catalog(settings)
    try:
        catalog.create_namespace(settings.lake.namespace)
    except NamespaceAlreadyExistsError:
        pass
    out = []
    for name in names:
        spec = tables[name]
        ident = identifier(settings, name)
        try:
            table = catalog.load_table(ident)
        except NoSuchTableError:
            schema = lake_schema.iceberg_schema(spec)
            catalog.create_table(
                ident, schema=schema,
                partition_spec=lake_schema.partition_spec(spec, schema,
                                                          settings.lake.partition),
                sort_order=lake_schema.sort_order(spec, schema),
                properties={**table_properties(settings), "format-version": "2"})
            out.append(LakeChange(name, "created"))
            continue
        change = lake_schema.evolve(table, spec)
        wanted = table_properties(settings)
        stale = {k: v for k, v in wanted.items() if table.properties.get(k) != v}
        if stale:
            with table.transaction() as tx:
                tx.set_properties(stale)
        done = [f"added columns {', '.join(change.added)}"] if change.added else []
        done += [f"set {', '.join(f'{k}={v}' for k, v in sorted(stale.items()))}"] \
            if stale else []
        out.append(LakeChange(name, "; ".join(done) or "unchanged"))
    return out
