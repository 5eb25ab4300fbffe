"""The warehouse side of the loader: ONE load plan, two ways to run its COPY step.

- ``plan``: the manifest and the load plan (fence, create staging, COPY, bounded dedup
  merge, the insert-only ``loaded_files``/``loads`` record, drop), the same SQL on both;
- ``record``: reading that record back (reconciling the control store's ledger, status);
- ``base``: ``Dialect``, which runs a plan in the caller's transaction;
- ``redshift_dialect``: COPY from S3 through the manifest with an IAM role;
- ``postgres_dialect``: stream the manifest's objects from S3 into ``COPY ... FROM STDIN``.

Import names from their module; this package itself only picks the configured dialect.
"""
from __future__ import annotations

from typing import Any

from shardline.errors import ConfigError
from shardline.loaders.warehouse.base import Dialect
from shardline.loaders.warehouse.postgres_dialect import PostgresDialect
from shardline.loaders.warehouse.redshift_dialect import RedshiftDialect


def make_dialect(settings: Any, s3: Any = None) -> Dialect:
    """The configured dialect (settings allow only these two); ``ConfigError`` at start
    when it cannot work."""
    if settings.warehouse.dialect == "redshift":
        return RedshiftDialect(settings.warehouse.iam_role, settings.aws.region)
    if s3 is None:
        raise ConfigError("the postgres dialect needs an S3 client to stream staged files")
    return PostgresDialect(s3)
