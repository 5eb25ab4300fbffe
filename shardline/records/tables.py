"""Target table records: ``Column``, ``TableSpec``, ``Tables`` and the system columns.

Every table is the user's columns followed by the pipeline's own *system columns*, appended
to every table and never written in the tables file:

- ``STAGED_SYSTEM``: filled by the stage worker from the Kinesis record and the batch,
  the last columns of every staged CSV row (``shard_id`` .. ``staged_at``);
- ``LOADER_SYSTEM``: written by the loader's INSERT (``loaded_at``, ``transform_version``),
  never staged.

The stage worker writes CSV columns in ``columns`` order and checks each value against
``max_bytes`` (Redshift VARCHAR lengths count UTF-8 bytes); the loader COPYs the column
list each staged file records (``StagedFile.column_list``) and merges on the dedup key.
One definition, so they cannot drift. The tables file is read by ``shardline.tables_file``
(above this module) and the configured tables are loaded by ``shardline.tables``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from shardline.errors import ConfigError

POSITION_KEY = ("shard_id", "sequence_number", "sub_sequence_number")

# portable type -> the value check the stage worker runs (``rows.check_value``)
_KIND = {"varchar": "text", "char": "text", "timestamp": "timestamp", "bigint": "int",
         "int": "int4", "double": "float", "boolean": "bool"}
_TYPE = re.compile(r"(varchar|char)\((\d+)\)|(timestamp|bigint|int|double|boolean)")
MAX_VARCHAR = 65535  # Redshift's limit, in bytes
MAX_CHAR = 4096


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # the value check: text | timestamp | int (BIGINT) | int4 | float | bool
    max_bytes: int | None = None
    nullable: bool = False
    type: str = ""  # the portable SQL type (varchar(n), char(n), timestamp, bigint, ...)
    # a value for rows that predate the column (ADD COLUMN ... DEFAULT): the tables file's
    # TOML value, which it checks against the type (str, int, float, bool)
    default: object = None
    system: bool = False  # the pipeline's own: appended to every table


def column(name: str, type_text: str, *, not_null: bool = False, default: object = None,
           system: bool = False) -> Column:
    """A column from its portable type text; ValueError naming what is wrong."""
    match = _TYPE.fullmatch(type_text.strip().lower())
    if not match:
        raise ValueError(f"unknown type {type_text!r} (known: varchar(n), char(n), timestamp, "
                         f"bigint, int, double, boolean)")
    if match.group(1):
        base, n = match.group(1), int(match.group(2))
        top = MAX_VARCHAR if base == "varchar" else MAX_CHAR
        if not 1 <= n <= top:
            raise ValueError(f"{base}(n) takes 1 <= n <= {top} (bytes), not {n}")
        return Column(name, _KIND[base], n, not not_null, f"{base}({n})", default, system)
    base = match.group(3)
    return Column(name, _KIND[base], None, not not_null, base, default, system)


STAGED_SYSTEM: tuple[Column, ...] = (
    column("shard_id", "varchar(128)", not_null=True, system=True),
    column("sequence_number", "varchar(128)", not_null=True, system=True),
    column("sub_sequence_number", "bigint", not_null=True, system=True),
    column("arrival_time", "timestamp", not_null=True, system=True),  # Kinesis, UTC
    column("staged_at", "timestamp", not_null=True, system=True),
)
# Written by the loader's INSERT, not staged (loaded_at's default only fills the staging
# table): when, and which transform made the row (the file's ledger entry says; NULL for
# rows loaded before versions were kept: sql/migrations/003_transform_version.sql).
LOADER_SYSTEM: tuple[Column, ...] = (
    column("loaded_at", "timestamp", not_null=True, system=True),
    column("transform_version", "varchar(64)", system=True),
)
SYSTEM_NAMES = frozenset(c.name for c in STAGED_SYSTEM + LOADER_SYSTEM)


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[Column, ...]  # user columns, then STAGED_SYSTEM: the staged CSV order
    # Rows with equal dedup keys are one event. Tables with no natural key use
    # the Kinesis position, which still covers job retries, replays and overlaps.
    dedup_key: tuple[str, ...] = POSITION_KEY
    # The column the table is sorted by (Redshift SORTKEY; a BRIN index locally). Copies of
    # one event carry the same value, so the merge looks for stored copies only within
    # ``loader.dedup_window_s`` of the batch's range of it: a range predicate that zone maps
    # prune, so the merge's cost does not grow with the table. None: unbounded merge.
    sort_key: str | None = None
    transform: str = ""  # package.module:function
    route: tuple[str, ...] = ()  # values of the routing field that go to this table
    default_route: bool = False  # events matching no route come here
    dist_style: str = "even"  # Redshift: key | even | all | auto
    dist_key: str | None = None
    # Rows whose arrival hour is older than this many hours are deleted from the warehouse
    # once the lake holds them (``warehouse_retention`` in the tables file; None: kept).
    warehouse_retention_h: int | None = None

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def user_columns(self) -> tuple[Column, ...]:
        return tuple(c for c in self.columns if not c.system)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


@dataclass(frozen=True)
class Tables:
    """Every table of a tables file, in file order, and how events are routed to them."""

    tables: tuple[TableSpec, ...]
    route_field: str | None = None  # None: one table takes every event
    source: str = "<default>"
    by_value: dict[str, str] = field(default_factory=dict)  # route value -> table name
    python_path: tuple[str, ...] = ()  # where its transforms are imported from

    def __getitem__(self, name: str) -> TableSpec:
        for t in self.tables:
            if t.name == name:
                return t
        raise ConfigError(f"unknown target table {name!r}; the tables file {self.source} "
                          f"defines: {', '.join(self.names)}")

    def __contains__(self, name: object) -> bool:
        return any(t.name == name for t in self.tables)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tables]

    @property
    def default(self) -> TableSpec | None:
        return next((t for t in self.tables if t.default_route), None)
