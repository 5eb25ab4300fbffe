"""Reading and validating a tables file (TOML; the format is in docs/tables.md).

Why TOML: ``tomllib`` is in the standard library (no dependency for a config file), its
types are explicit (a length is an integer, a flag a boolean, never "yes" turned into
true), and a column fits on one line as an inline table.

Strict, like the settings: an unknown key, a bad type, a key naming a column the table does
not have, two default routes... is a ``ConfigError`` naming the file, the table and the key,
raised when a command starts (exit code ``CONFIG``). Nothing here connects anywhere or
imports a transform (``shardline.workers.transform.load_table_transforms`` does).
"""
from __future__ import annotations

import dataclasses
import re
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from shardline.errors import ConfigError
from shardline.records.tables import (
    POSITION_KEY, STAGED_SYSTEM, SYSTEM_NAMES, Column, Tables, TableSpec, column,
)  # fmt: skip

DEFAULT_FILE = resources.files("shardline") / "default_tables.toml"
_IDENT = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_CALLABLE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
# Tables of the warehouse's own (sql/migrations, shardline.migrate): never a target.
RESERVED = frozenset(("loads", "loaded_files", "load_fence", "load_hours",
                      "schema_migrations", "table_changes"))
_TOP_KEYS = {"tables", "python_path"}
_TABLE_KEYS = {"transform", "route", "columns", "dedup_key", "sort_key", "dist_style",
               "dist_key", "warehouse_retention"}
_RETENTION = re.compile(r"(\d+)\s*([dh])")
_UNIT_H = {"d": 24, "h": 1}
_COLUMN_KEYS = {"name", "type", "not_null", "default"}
DIST_STYLES = ("key", "even", "all", "auto")


class _Where:
    """Builds errors that say where: the file, the table, the key."""

    def __init__(self, source: str, table: str | None = None):
        self.source, self.table = source, table

    def __call__(self, key: str, problem: str) -> ConfigError:
        at = f"[tables.{self.table}] " if self.table else ""
        return ConfigError(f"tables file {self.source}: {at}{key}: {problem}")


def load(path: str | Path | None = None) -> Tables:
    """The tables of ``path`` (the packaged default file when None)."""
    if path is None:
        source, text, base = "<default: shardline/default_tables.toml>", \
            DEFAULT_FILE.read_text(encoding="utf-8"), None
    else:
        p = Path(path)
        source = str(p)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"tables.file {source}: cannot read it: {exc.strerror}") from None
        base = p.resolve().parent
    return parse(text, source, base)


def parse(text: str, source: str = "<text>", base: Path | None = None) -> Tables:
    where = _Where(source)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"tables file {source}: not valid TOML: {exc}") from None
    _no_unknown(data, _TOP_KEYS, where, "")
    paths = data.get("python_path", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise where("python_path", "must be a list of directories (relative to the file)")
    raw = data.get("tables")
    if not isinstance(raw, dict) or not raw:
        raise where("tables", "no table defined (a [tables.NAME] section per table)")
    specs, routes = [], {}
    for name, body in raw.items():
        w = _Where(source, name)
        if not _IDENT.fullmatch(name):
            raise w("name", "must be a lower-case SQL identifier ([a-z_][a-z0-9_]*, at most "
                            "63 characters)")
        if name in RESERVED:
            raise w("name", f"{name} is one of shardline's own warehouse tables")
        if not isinstance(body, dict):
            raise w("name", "must be a table ([tables.NAME])")
        spec, route = _table(name, body, w, single=len(raw) == 1)
        specs.append(spec)
        routes[name] = route
    tables = _routed(specs, routes, where, source)
    dirs = tuple(str(((base or Path.cwd()) / d).resolve()) for d in paths)
    return dataclasses.replace(tables, python_path=dirs)


def _no_unknown(data: dict[str, Any], known: set[str], w: _Where, prefix: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise w(prefix + unknown[0], f"unknown key (known: {', '.join(sorted(known))})")


def _table(name: str, body: dict[str, Any], w: _Where, single: bool) -> tuple[TableSpec, Any]:
    _no_unknown(body, _TABLE_KEYS, w, "")
    transform = body.get("transform")
    if not isinstance(transform, str) or not _CALLABLE.fullmatch(transform):
        raise w("transform", "required, package.module:function (importable: on PYTHONPATH "
                             "or under the file's python_path)")
    cols_raw = body.get("columns")
    if not isinstance(cols_raw, list) or not cols_raw:
        raise w("columns", "required: a list of {name = ..., type = ...}")
    columns: "list[Column]" = []
    for i, c in enumerate(cols_raw):
        columns.append(_column(c, w, f"columns[{i}]"))
    names = [c.name for c in columns]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise w(f"columns.{dup}", "defined twice")
    allc = {c.name: c for c in (*columns, *STAGED_SYSTEM)}

    def ref(key: str, value: Any) -> Column:
        if not isinstance(value, str) or value not in allc:
            raise w(key, f"{value!r} is not a column of the table (columns: "
                         f"{', '.join(allc)})")
        return allc[value]

    dedup = body.get("dedup_key", list(POSITION_KEY))
    if isinstance(dedup, str):
        dedup = [dedup]
    if not isinstance(dedup, list) or not dedup:
        raise w("dedup_key", "a column name or a list of them")
    for k in dedup:
        if ref("dedup_key", k).nullable:
            raise w("dedup_key", f"{k} must be not_null = true (a NULL key matches nothing)")
    sort_key = body.get("sort_key")
    if sort_key is not None:
        sk = ref("sort_key", sort_key)
        if sk.kind != "timestamp" or sk.nullable:
            raise w("sort_key", f"{sort_key} must be a not_null timestamp column (the dedup "
                                f"window is a time range on it)")
    style = body.get("dist_style", "key" if "dist_key" in body else "even")
    if style not in DIST_STYLES:
        raise w("dist_style", f"{style!r} is not one of {', '.join(DIST_STYLES)}")
    dist_key = body.get("dist_key")
    if (style == "key") != (dist_key is not None):
        raise w("dist_key", "dist_style = \"key\" and dist_key go together")
    if dist_key is not None:
        ref("dist_key", dist_key)
    spec = TableSpec(name=name, columns=(*columns, *STAGED_SYSTEM), dedup_key=tuple(dedup),
                     sort_key=sort_key, transform=transform, dist_style=style,
                     dist_key=dist_key, warehouse_retention_h=_retention(body, w))
    route = body.get("route", "default" if single else None)
    if route is None:
        raise w("route", "required when the file defines several tables: "
                         "route = { FIELD = \"value\" } or route = \"default\"")
    return spec, route


def _retention(body: dict[str, Any], w: _Where) -> int | None:
    """``warehouse_retention = "90d"`` (or ``"36h"``) -> hours; None when absent."""
    text = body.get("warehouse_retention")
    if text is None:
        return None
    match = _RETENTION.fullmatch(text.strip().lower()) if isinstance(text, str) else None
    if not match or int(match.group(1)) < 1:
        raise w("warehouse_retention", f"{text!r}: a whole number of days or hours, e.g. "
                                       f"\"90d\" or \"36h\" (at least 1)")
    return int(match.group(1)) * _UNIT_H[match.group(2)]


def _column(c: Any, w: _Where, key: str) -> Column:
    if not isinstance(c, dict):
        raise w(key, "must be an inline table {name = ..., type = ...}")
    _no_unknown(c, _COLUMN_KEYS, w, f"{key}.")
    name = c.get("name")
    if not isinstance(name, str) or not _IDENT.fullmatch(name):
        raise w(f"{key}.name", f"{name!r} must be a lower-case SQL identifier")
    if name in SYSTEM_NAMES:
        raise w(f"columns.{name}", "is a system column, which shardline adds to every table "
                                   "itself (docs/tables.md)")
    kind = c.get("type")
    not_null = c.get("not_null", False)
    if not isinstance(not_null, bool):
        raise w(f"columns.{name}.not_null", "must be true or false")
    if not isinstance(kind, str):
        raise w(f"columns.{name}.type", "required (varchar(n), char(n), timestamp, bigint, "
                                        "int, double, boolean)")
    try:
        col = column(name, kind, not_null=not_null, default=c.get("default"))
    except ValueError as exc:
        raise w(f"columns.{name}.type", str(exc)) from None
    if col.default is not None:
        _check_default(col, w)
    return col


def _check_default(col: Column, w: _Where) -> None:
    d = col.default
    ok = {"text": isinstance(d, str), "int": type(d) is int, "int4": type(d) is int,
          "float": type(d) in (int, float), "bool": type(d) is bool,
          "timestamp": False}[col.kind]
    if not ok:
        raise w(f"columns.{col.name}.default", f"{d!r} does not fit type {col.type} "
                                               f"(timestamps take no default)")
    if col.kind == "text" and isinstance(d, str) and (
            len(d.encode("utf-8")) > (col.max_bytes or 0) or "\x00" in d):
        raise w(f"columns.{col.name}.default", f"longer than {col.type} or holds a NUL")


def _routed(specs: list[TableSpec], routes: dict[str, Any], where: _Where,
            source: str) -> Tables:
    """Routes -> one routing field, a value -> table map and at most one default."""
    route_field: str | None = None
    by_value: dict[str, str] = {}
    out: list[TableSpec] = []
    default: str | None = None
    for spec in specs:
        route, w = routes[spec.name], _Where(source, spec.name)
        if route == "default":
            if default is not None:
                raise w("route", f"a second default route (table {default} has one)")
            default = spec.name
            out.append(dataclasses.replace(spec, default_route=True))
            continue
        if not isinstance(route, dict) or len(route) != 1:
            raise w("route", "must be \"default\" or { FIELD = \"value\" } (or a list of "
                             "values)")
        (fld, values), = route.items()
        values = [values] if isinstance(values, str) else values
        if not isinstance(values, list) or not values or \
                not all(isinstance(v, str) for v in values):
            raise w(f"route.{fld}", "a string value or a list of them")
        if route_field is not None and fld != route_field:
            raise w("route", f"routes on {fld!r}, another table on {route_field!r}: every "
                             f"route of a file uses the same event field")
        route_field = fld
        for v in values:
            if v in by_value:
                raise w(f"route.{fld}", f"{v!r} already routes to table {by_value[v]}")
            by_value[v] = spec.name
        out.append(dataclasses.replace(spec, route=tuple(values)))
    if len(out) == 1 and route_field is None:
        return Tables(tuple(out), None, source, {})
    return Tables(tuple(out), route_field, source, by_value)
