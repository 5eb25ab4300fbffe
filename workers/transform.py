"""Loading transforms: the tables file's ``transform`` of each table (``module:function``,
or ``worker.transform`` overriding one), imported for the stage worker, and the version
each one records (``transform_version``).

What a transform is, and the helpers for writing one, are the public API
``shardline.transforms`` (docs/tables.md, "Writing a transform"); the default page-view
transform is ``shardline.transforms.page_views``.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
from typing import TYPE_CHECKING, cast

from shardline.errors import ConfigError
from shardline.transforms import Transform
# Tables files written before the transform API name the default transform
# ``shardline.workers.transform:page_view``: it stays importable from here.
from shardline.transforms.page_views import page_view  # noqa: F401

if TYPE_CHECKING:
    from shardline.settings import Settings
    from shardline.tables import Tables

__all__ = ["MAX_VERSION_BYTES", "Transform", "load_table_transforms", "load_transform",
           "page_view", "table_transform", "transform_version"]

MAX_VERSION_BYTES = 64  # staged_files.transform_version, page_views.transform_version


def transform_version(func: Transform) -> str:
    """Which transform made a row: the ``VERSION`` string its module declares (a function
    attribute ``VERSION`` wins), else ``sha1:`` + 12 hex digits of the module's source, so
    any code change is a new version even when nobody bumps a string. Recorded in the
    ledger, the load record and every row (docs/iterating.md)."""
    declared = getattr(func, "VERSION", None)
    module = inspect.getmodule(func)
    if declared is None and module is not None:
        declared = getattr(module, "VERSION", None)
    if declared is not None:
        text = str(declared)
        if not text or len(text.encode("utf-8")) > MAX_VERSION_BYTES:
            raise ConfigError(f"transform VERSION {text[:80]!r} must be 1-{MAX_VERSION_BYTES} "
                              "bytes")
        return text
    try:
        source = inspect.getsource(module if module is not None else func)
    except (OSError, TypeError):  # no source (a C function, a REPL lambda): its name
        source = f"{getattr(func, '__module__', '?')}:{getattr(func, '__qualname__', '?')}"
    return "sha1:" + hashlib.sha1(source.encode("utf-8")).hexdigest()[:12]


def load_table_transforms(tables: Tables, settings: Settings | None = None
                          ) -> dict[str, Transform]:
    """Each table's transform (table name -> callable), the tables file's ``python_path``
    put first on ``sys.path``; ``worker.transform`` (when set) replaces the transform of
    table ``worker.target_table``. ConfigError naming the table when one does not import."""
    import sys

    for directory in reversed(tables.python_path):
        if directory not in sys.path:
            sys.path.insert(0, directory)
    override = settings.worker.transform if settings is not None else ""
    target = settings.worker.target_table if settings is not None else ""
    if override and target not in tables:
        raise ConfigError(f"worker.target_table {target!r}: no such table in the tables file "
                          f"{tables.source} (worker.transform overrides a table's transform)")
    out: dict[str, Transform] = {}
    for spec in tables.tables:
        if override and spec.name == target:
            out[spec.name] = load_transform(override)
        else:
            out[spec.name] = load_transform(
                spec.transform, f"tables file {tables.source}: [tables.{spec.name}] transform")
    return out


def table_transform(settings: Settings, table: str | None = None) -> Transform:
    """The transform the stage workers run for ``table`` (default: the tables file's first),
    as they load it: what ``reprocess`` and ``redrive`` compare versions with."""
    from shardline.tables import load_tables

    tables = load_tables(settings)
    return load_table_transforms(tables, settings)[table or tables.names[0]]


def load_transform(path: str, what: str = "worker.transform") -> Transform:
    """``package.module:function`` -> the callable; ConfigError naming ``what`` if not."""
    module_name, sep, func_name = path.partition(":")
    if not sep or not module_name or not func_name:
        raise ConfigError(f"{what} {path!r} must look like package.module:function")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module raising at import
        raise ConfigError(f"{what} {path!r}: cannot import {module_name}: "
                          f"{type(exc).__name__}: {exc}") from None
    func = getattr(module, func_name, None)
    if func is None:
        raise ConfigError(f"{what} {path!r}: module {module_name} has no "
                          f"attribute {func_name}")
    if not callable(func):
        raise ConfigError(f"{what} {path!r}: {func_name} is a "
                          f"{type(func).__name__}, not a callable")
    return cast(Transform, func)  # a callable; its signature is the author's promise
