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


def open_catalog(settings: Settings) -> Catalog:
    return load_catalog(settings.lake.catalog_name, **catalog_properties(settings))


def open_table(settings: Settings, table: str, catalog: Catalog | None = None) -> Table:
    """The lake table of ``table``; ``NotMigrated`` (one line) when migrate has not made it."""
    catalog = catalog or open_catalog(settings)
    try:
        return catalog.load_table(identifier(settings, table))
    except NoSuchTableError:
        raise NotMigrated(f"the lake table {identifier(settings, table)} does not exist in "
                          f"the {settings.lake.catalog} catalog {settings.lake.catalog_name}: "
                          f"run `shardline migrate`") from None


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
                properties={TARGET_FILE_PROPERTY: str(settings.lake.target_file_bytes),
                            "format-version": "2"})
            out.append(LakeChange(name, "created"))
            continue
        change = lake_schema.evolve(table, spec)
        out.append(LakeChange(name, f"added columns {', '.join(change.added)}"
                              if change.added else "unchanged"))
    return out
