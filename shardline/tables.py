"""Target tables: columns in staged-file order, byte limits and dedup keys.

The stage worker writes CSV columns in ``columns`` order and checks each value
against ``max_bytes`` (Redshift VARCHAR lengths count UTF-8 bytes); the loader
COPYs and merges with the same list. One definition, so they cannot drift.
"""
from __future__ import annotations

from dataclasses import dataclass

from shardline.errors import ConfigError

POSITION_KEY = ("shard_id", "sequence_number", "sub_sequence_number")


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # text | timestamp | int
    max_bytes: int | None = None
    nullable: bool = False


@dataclass(frozen=True)
class TableSpec:
    name: str
    columns: tuple[Column, ...]
    # Rows with equal dedup keys are one event. Tables with no natural key use
    # the Kinesis position, which still covers job retries, replays and overlaps.
    dedup_key: tuple[str, ...] = POSITION_KEY
    # The column the table is sorted by (Redshift SORTKEY; a BRIN index locally). Copies of
    # one event carry the same value, so the merge looks for stored copies only within
    # ``loader.dedup_window_s`` of the batch's range of it: a range predicate that zone maps
    # prune, so the merge's cost does not grow with the table. None: unbounded merge.
    sort_key: str | None = None

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def _text(name: str, max_bytes: int, nullable: bool = False) -> Column:
    return Column(name, "text", max_bytes, nullable)


PAGE_VIEWS = TableSpec(
    name="page_views",
    columns=(
        _text("event_id", 36),
        Column("occurred_at", "timestamp"),
        _text("url", 2048),
        _text("url_host", 255),
        _text("url_path", 2048),
        _text("url_query", 2048, nullable=True),
        _text("referrer", 2048, nullable=True),
        _text("referrer_host", 255, nullable=True),
        _text("user_agent", 1024),
        _text("device_class", 16),
        _text("ip_prefix", 64),
        _text("user_id", 128, nullable=True),
        _text("session_id", 128),
        _text("shard_id", 128),
        _text("sequence_number", 128),
        Column("sub_sequence_number", "int"),
        Column("arrival_time", "timestamp"),
        Column("staged_at", "timestamp"),
    ),
    dedup_key=("event_id",),
    sort_key="occurred_at",
)

TABLES: dict[str, TableSpec] = {PAGE_VIEWS.name: PAGE_VIEWS}


def table_spec(name: str) -> TableSpec:
    try:
        return TABLES[name]
    except KeyError:
        raise ConfigError(f"unknown target table {name!r}; known: {', '.join(TABLES)}") from None
