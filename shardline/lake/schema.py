"""The Iceberg table of a ``TableSpec``: its schema, partition spec and sort order, derived
from the tables file's one definition (the user's columns, ``STAGED_SYSTEM``,
``LOADER_SYSTEM``), with the same names and portable types.

Timestamps are Iceberg ``timestamp`` (no zone): every value the pipeline writes is UTC, as
in the warehouse. A NOT NULL column is a required field at creation; a column added later
(``evolve``) is optional, as Iceberg requires (older data files do not have it).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, cast

import pyarrow as pa
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.sorting import NullOrder, SortDirection, SortField, SortOrder
from pyiceberg.transforms import DayTransform, HourTransform
from pyiceberg.types import (BooleanType, DoubleType, IcebergType, IntegerType, LongType,
                             NestedField, StringType, TimestampType)

from shardline.errors import SchemaMismatch
from shardline.records.tables import LOADER_SYSTEM, Column, TableSpec

# Column.kind (the tables file's portable type, as the stage worker checks it) -> Iceberg.
ICEBERG_TYPES: dict[str, IcebergType] = {
    "text": StringType(),  # varchar(n), char(n): Iceberg strings have no length
    "timestamp": TimestampType(),  # naive UTC
    "int": LongType(),  # bigint
    "int4": IntegerType(),  # int
    "float": DoubleType(),
    "bool": BooleanType(),
}
# The column the partitions and the sort order follow when a table has no sort key.
FALLBACK_TIME_COLUMN = "arrival_time"
PARTITION_FIELD_ID = 1000  # Iceberg's first partition field id


def lake_columns(spec: TableSpec) -> tuple[Column, ...]:
    """What a lake row holds: the staged columns, then what the loader adds."""
    return spec.columns + LOADER_SYSTEM


def iceberg_type(col: Column) -> IcebergType:
    try:
        return ICEBERG_TYPES[col.kind]
    except KeyError:
        raise SchemaMismatch(f"column {col.name}: type {col.type!r} has no Iceberg type "
                             f"(shardline.lake.schema ICEBERG_TYPES)") from None


def iceberg_schema(spec: TableSpec) -> Schema:
    return Schema(*(NestedField(i, c.name, iceberg_type(c), required=not c.nullable)
                    for i, c in enumerate(lake_columns(spec), start=1)))


def time_column(spec: TableSpec) -> str:
    return spec.sort_key or FALLBACK_TIME_COLUMN


def partition_spec(spec: TableSpec, schema: Schema, granularity: str) -> PartitionSpec:
    """day (or hour) of the table's sort key."""
    source = schema.find_field(time_column(spec))
    field = PartitionField(source_id=source.field_id, field_id=PARTITION_FIELD_ID,
                           transform=HourTransform() if granularity == "hour"
                           else DayTransform(),
                           name=f"{source.name}_{granularity}")
    return PartitionSpec(field)


def sort_order(spec: TableSpec, schema: Schema) -> SortOrder:
    from pyiceberg.transforms import IdentityTransform

    source = schema.find_field(time_column(spec))
    return SortOrder(SortField(source_id=source.field_id, transform=IdentityTransform(),
                               direction=SortDirection.ASC, null_order=NullOrder.NULLS_FIRST))


@dataclass(frozen=True)
class SchemaChange:
    table: str
    added: tuple[str, ...]


def evolve(table: Table, spec: TableSpec) -> SchemaChange:
    """Columns of the tables file the Iceberg table lacks, added (optional: old data files
    read them as NULL); a type change or a column gone is a ``SchemaMismatch``."""
    current = {f.name: f for f in table.schema().fields}
    wanted = lake_columns(spec)
    for col in wanted:
        field = current.get(col.name)
        if field is not None and field.field_type != iceberg_type(col):
            raise SchemaMismatch(f"lake table {spec.name}: column {col.name} is "
                                 f"{field.field_type} in the lake, {iceberg_type(col)} in the "
                                 f"tables file (a type change needs a new table)")
    gone = set(current) - {c.name for c in wanted}
    if gone:
        raise SchemaMismatch(f"lake table {spec.name}: columns {', '.join(sorted(gone))} are "
                             f"in the lake but not in the tables file (columns are never "
                             f"dropped)")
    added = tuple(c.name for c in wanted if c.name not in current)
    if added:
        with table.update_schema() as update:
            # the tables file's TOML default (str, int, float or bool, checked against the
            # type there) is the column's initial default: what rows written before it read
            # as (pyiceberg honours it; an engine that does not reads NULL there). Its
            # parameter is a constrained type variable, which a union cannot name.
            add_column = cast(Callable[..., object], update.add_column)
            for col in wanted:
                if col.name in added:
                    add_column(col.name, iceberg_type(col), default_value=col.default)
    return SchemaChange(spec.name, added)


def arrow_schema(table: Table) -> pa.Schema:
    """The Arrow schema a write to ``table`` must have (its current Iceberg schema)."""
    return table.schema().as_arrow()
