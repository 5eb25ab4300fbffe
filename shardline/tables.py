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
from typing import Callable, Mapping

from shardline import csvformat, tables_file
from shardline.records.tables import (
    LOADER_SYSTEM, MAX_CHAR, MAX_VARCHAR, POSITION_KEY, STAGED_SYSTEM, SYSTEM_NAMES, Column,
    Tables, TableSpec, column,
)  # fmt: skip
from shardline.settings import Settings

__all__ = [
    "LOADER_SYSTEM", "MAX_CHAR", "MAX_VARCHAR", "POSITION_KEY", "STAGED_SYSTEM", "SYSTEM_NAMES",
    "Column", "Tables", "TableSpec", "column", "default_tables", "load_tables", "table_spec",
    "DEFAULT_TABLES", "PAGE_VIEWS", "TABLES", "PRE_COLUMN_LIST", "MAX_ROW_BYTES", "copy_row_check",
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


MAX_ROW_BYTES = 4 * 1024 * 1024  # Redshift's COPY: one input row is at most 4 MB
_SYSTEM_ROW_BYTES = 512  # the staged system columns' share of a CSV line, generously
_OTHER_VALUE_BYTES = 32  # a number, timestamp or boolean as CSV text, at most


def copy_row_check(spec: TableSpec) -> Callable[[Mapping[str, object]], str | None] | None:
    """What Redshift's COPY refuses in a row whose every value passes its column's check:
    a character of more than one byte in a CHAR(n) column (CHAR takes single-byte
    characters only: error 1220) and an input row over 4 MB. With MAXERROR 0 either fails
    the whole file, so the stage worker makes such a record a dead letter instead, on
    every warehouse (a row valid locally is valid on Redshift). None when no row of the
    table can be refused (no CHAR column, and the columns' limits keep a row under 4 MB)."""
    columns = [c for c in spec.columns if not c.system]
    chars = tuple(c.name for c in columns if c.type.startswith("char("))
    # every character of a value quoted in the CSV line: at most twice its bytes, plus 3
    bound = _SYSTEM_ROW_BYTES + sum(2 * (c.max_bytes or _OTHER_VALUE_BYTES) + 3
                                    for c in columns)
    if not chars and bound <= MAX_ROW_BYTES:
        return None
    names = [c.name for c in columns]

    def check(row: Mapping[str, object]) -> str | None:
        for name in chars:
            value = row.get(name)
            if type(value) is str and not value.isascii():
                return (f"column {name}: CHAR takes single-byte characters only (Redshift "
                        f"COPY error 1220); use VARCHAR for text that is not ASCII")
        if bound > MAX_ROW_BYTES:
            try:
                size = len(csvformat.format_row([row.get(n) for n in names]).encode("utf-8"))
            except (UnicodeEncodeError, TypeError, ValueError):
                return None  # the column checks give the reason
            if size + _SYSTEM_ROW_BYTES > MAX_ROW_BYTES:
                return (f"row of about {size + _SYSTEM_ROW_BYTES} bytes as CSV, over "
                        f"Redshift COPY's limit of {MAX_ROW_BYTES} bytes per input row")
        return None
    return check


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
