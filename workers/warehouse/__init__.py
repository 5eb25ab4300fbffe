"""The warehouse side of the loader: ONE load plan, two ways to run its COPY step.

- ``plan``: the manifest and the load plan (create staging, COPY, dedup merge, ledger
  ``loaded``, ``loads`` row, watermarks, drop), the same SQL on both warehouses;
- ``watermarks``: advancing ``shard_watermarks`` inside the load transaction;
- ``base``: ``Dialect``, which runs a plan in the caller's transaction;
- ``redshift``: COPY from S3 through the manifest with an IAM role;
- ``postgres``: stream the manifest's objects from S3 into ``COPY ... FROM STDIN``.

The names the loader, its command and the tests use are importable from here.
"""
from __future__ import annotations

from typing import Any

from shardline.errors import ConfigError
from shardline.workers.warehouse.base import Dialect, PlanResult, first_line
from shardline.workers.warehouse.plan import (POSITION_ORDER, AdvanceWatermarks, CopyManifest, Manifest,
                                    Sql, Step, build_plan, manifest_key, parse_s3_url)
from shardline.workers.warehouse.postgres import ManifestReader, PostgresDialect
from shardline.workers.warehouse.redshift import RedshiftDialect
from shardline.workers.warehouse.watermarks import advance_watermarks, position

__all__ = [
    "POSITION_ORDER", "AdvanceWatermarks", "CopyManifest", "Dialect", "Manifest",
    "ManifestReader", "PlanResult", "PostgresDialect", "RedshiftDialect", "Sql", "Step",
    "advance_watermarks", "build_plan", "first_line", "make_dialect", "manifest_key",
    "parse_s3_url", "position",
]


def make_dialect(settings: Any, s3: Any = None) -> Dialect:
    """The configured dialect; ``ConfigError`` at start when it cannot work."""
    name = settings.warehouse.dialect
    if name == "redshift":
        return RedshiftDialect(settings.warehouse.iam_role)
    if name == "postgres":
        if s3 is None:
            raise ConfigError("the postgres dialect needs an S3 client to stream staged files")
        return PostgresDialect(s3)
    raise ConfigError(f"warehouse.dialect {name!r} is not supported by the loader")
