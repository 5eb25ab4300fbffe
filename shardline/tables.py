"""Target tables: the tables of the configured tables file, and the packaged default's.

The tables are defined in a *tables file* (TOML, ``tables.file``; the package ships
``default_tables.toml`` with page_views; the format is in docs/tables.md and
``shardline.tables_file``, which reads it). Their records (``Column``, ``TableSpec``,
``Tables``, the system columns ``STAGED_SYSTEM`` / ``LOADER_SYSTEM``) are
``shardline.records.tables``, re-exported here for the callers that load tables.

Nothing is read at import: the packaged default is parsed at its first use
(``default_tables()``, also behind ``DEFAULT_TABLES`` and ``PAGE_VIEWS``) and kept.
"""
from __future__ import annotations

import functools
from typing import Callable

from shardline import tables_file
from shardline.records.tables import (
    LOADER_SYSTEM, MAX_CHAR, MAX_VARCHAR, POSITION_KEY, STAGED_SYSTEM, SYSTEM_NAMES, Column,
    Tables, TableSpec, column,
)  # fmt: skip
from shardline.settings import Settings

__all__ = [
    "LOADER_SYSTEM", "MAX_CHAR", "MAX_VARCHAR", "POSITION_KEY", "STAGED_SYSTEM", "SYSTEM_NAMES",
    "Column", "Tables", "TableSpec", "column", "default_tables", "load_tables", "table_spec",
    "DEFAULT_TABLES", "PAGE_VIEWS", "TABLES", "PRE_COLUMN_LIST",
]  # fmt: skip

# The column list of every file staged before staged files recorded theirs: the release
# before the tables file staged page_views only, with these columns. Fixed history, not
# today's page_views (a column added since must not appear here).
PRE_COLUMN_LIST: dict[str, tuple[str, ...]] = {
    "page_views": ("event_id", "occurred_at", "url", "url_host", "url_path", "url_query",
                   "referrer", "referrer_host", "user_agent", "device_class", "ip_prefix",
                   "user_id", "session_id", "shard_id", "sequence_number",
                   "sub_sequence_number", "arrival_time", "staged_at"),
}


def load_tables(settings: Settings | None = None) -> Tables:
    """The tables file named by ``tables.file`` (the packaged default when empty)."""
    # getattr: callers' test doubles of the settings may carry no [tables] section
    path = getattr(getattr(settings, "tables", None), "file", "") if settings else ""
    return tables_file.load(path or None)


@functools.cache
def default_tables() -> Tables:
    """The packaged default file's tables, parsed once, at first use."""
    return tables_file.load(None)


def table_spec(name: str, settings: Settings | None = None) -> TableSpec:
    """A table of the configured tables file (the packaged default without settings)."""
    tables = load_tables(settings) if settings is not None else default_tables()
    return tables[name]


# The packaged default's tables as module attributes, resolved at first access (``__getattr__``)
DEFAULT_TABLES: Tables
PAGE_VIEWS: TableSpec
TABLES: dict[str, TableSpec]

_LAZY: dict[str, Callable[[], object]] = {
    "DEFAULT_TABLES": default_tables,
    "PAGE_VIEWS": lambda: default_tables()["page_views"],
    "TABLES": lambda: {t.name: t for t in default_tables().tables},
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return _LAZY[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
