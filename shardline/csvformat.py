"""The staged-file format, written by stage workers and read by both loaders' COPY.

Why CSV and not JSON lines: PostgreSQL's COPY reads CSV natively (it has no
JSON-lines COPY), Redshift's CSV COPY is its fastest text path and needs no
jsonpaths file, and a CSV row is about 40% smaller than the same row as JSON
(no key names). One format, one set of rules, both dialects:

- UTF-8, gzip'd, one row per ``\\n``-terminated record, ``,`` delimiter, no header;
- every non-NULL value is double-quoted, a ``"`` inside doubled; newlines,
  commas, tabs and backslashes inside quotes are literal (CSV has no backslash
  escapes, so ``\\`` needs no care);
- NULL is the unquoted marker ``\\N``; a quoted ``"\\N"`` is the two-character text;
- timestamps are UTC ``YYYY-MM-DD HH:MM:SS.ffffff``;
- NUL (U+0000) cannot be stored by either warehouse: the stage worker rejects it.

The COPY options below are the reading side of exactly these rules.
"""
from __future__ import annotations

from datetime import datetime
from typing import Iterable

NULL = "\\N"

POSTGRES_COPY_OPTIONS = "(FORMAT csv, DELIMITER ',', QUOTE '\"', NULL '\\N', ENCODING 'UTF8')"
# Redshift: CSV implies QUOTE '"'; ESCAPE is not allowed with CSV; TIMEFORMAT
# 'YYYY-MM-DD HH:MI:SS' accepts the fractional seconds we write; no ACCEPTINVCHARS,
# since stage workers already refuse invalid UTF-8 and a bad byte must fail loud.
REDSHIFT_COPY_OPTIONS = ("FORMAT AS CSV DELIMITER ',' NULL AS '\\\\N' GZIP ENCODING UTF8 "
                         "TIMEFORMAT 'YYYY-MM-DD HH:MI:SS' MAXERROR 0")


def format_value(value: object) -> str:
    if value is None:
        return NULL
    if isinstance(value, datetime):
        value = value.strftime("%Y-%m-%d %H:%M:%S.%f")
    elif not isinstance(value, str):
        value = str(value)
    return '"' + value.replace('"', '""') + '"'


def format_row(values: Iterable[object]) -> str:
    return ",".join(map(format_value, values)) + "\n"
