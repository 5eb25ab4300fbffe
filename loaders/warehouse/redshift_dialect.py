"""Redshift: COPY straight from S3 through the manifest, authenticated by an IAM role.

The role ARN is validated at start and never appears in a message or log line
(``redact``); a failed COPY is explained from ``STL_LOAD_ERRORS`` afterwards.
"""
from __future__ import annotations

from typing import Any

from shardline import csvformat
from shardline.errors import ConfigError, LoadFailed
from shardline.settings import iam_role_chain
from shardline.lifecycle import first_line
from shardline.loaders.warehouse.base import Dialect
from shardline.loaders.warehouse.plan import CopyManifest


class RedshiftDialect(Dialect):
    """COPY straight from S3 through the manifest, authenticated by an IAM role."""

    name = "redshift"

    def __init__(self, iam_role: str, region: str = ""):
        if not iam_role:
            raise ConfigError("warehouse.iam_role is required for the redshift dialect: the IAM "
                              "role ARN that COPY uses to read the staged files "
                              "(SHARDLINE_WAREHOUSE_IAM_ROLE)")
        try:
            roles = iam_role_chain(iam_role)
        except ValueError:
            # Do not echo the value: it never goes into a message.
            raise ConfigError("warehouse.iam_role does not look like an IAM role ARN "
                              "(arn:aws:iam::<12-digit account>:role/<name>; chain roles with ',')"
                              ) from None
        self.iam_role = ",".join(roles)
        if region and not region.replace("-", "").isalnum():
            raise ConfigError(f"aws.region {region!r} does not look like an AWS region")
        # REGION: the bucket's region, needed when it is not the cluster's (aws.region).
        self.region = region

    def copy_sql(self, step: CopyManifest) -> str:
        url = step.manifest.url.replace("'", "''")
        region = f"REGION '{self.region}' " if self.region else ""
        return (f"COPY {step.stage_table} ({', '.join(step.columns)}) FROM '{url}' "
                f"IAM_ROLE '{self.iam_role}' MANIFEST {region}"
                f"{csvformat.REDSHIFT_COPY_OPTIONS} "
                f"STATUPDATE OFF COMPUPDATE OFF")

    def redact(self, text: str) -> str:
        return text.replace(self.iam_role, "<warehouse.iam_role>")

    def copy(self, cur: Any, step: CopyManifest) -> None:
        import psycopg2

        try:
            cur.execute(self.copy_sql(step))
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            raise
        except psycopg2.Error as exc:
            raise LoadFailed(self.redact(f"COPY of {step.manifest.url} failed: "
                                         f"{first_line(exc)}")) from None

    STL_LOAD_ERRORS = (
        "SELECT query, TRIM(filename), line_number, TRIM(colname), TRIM(type), "
        "TRIM(raw_field_value), err_code, TRIM(err_reason) FROM stl_load_errors "
        "WHERE query = pg_last_copy_id() ORDER BY starttime, line_number LIMIT 20")

    def copy_error_details(self, cur: Any) -> list[str]:
        cur.execute(self.STL_LOAD_ERRORS)
        lines = []
        for query, filename, line, col, kind, raw, code, reason in cur.fetchall():
            lines.append(self.redact(
                f"stl_load_errors query={query} file={filename} line={line} column={col} "
                f"type={kind} code={code} reason={reason!r} value={raw!r}"))
        return lines
