"""Redshift: COPY straight from S3 through the manifest, authenticated by an IAM role.

The role ARN is validated at start and never appears in a message or log line
(``redact``); a failed COPY is explained from ``STL_LOAD_ERRORS`` afterwards, down to the
staged file.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from shardline import csvformat
from shardline.errors import ConfigError, LoadFailed
from shardline.settings import iam_role_chain
from shardline.lifecycle import first_line
from shardline.loaders.warehouse.base import CopyErrors, Dialect
from shardline.loaders.warehouse.plan import CopyManifest, Manifest

# STL times are the cluster's UTC clock, the load's start the loader's: allow for skew
CLOCK_SKEW = timedelta(minutes=5)


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
        self.reported: int | None = None  # the STL_LOAD_ERRORS query last explained

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

    # This session's error rows since the load began. Not by pg_last_copy_id(): a COPY whose
    # transaction rolled back does not update it, so it names an older COPY, or none.
    STL_LOAD_ERRORS = (
        "SELECT query, TRIM(filename), line_number, TRIM(colname), TRIM(type), "
        "TRIM(raw_field_value), err_code, TRIM(err_reason) FROM stl_load_errors "
        "WHERE session = pg_backend_pid() AND starttime >= %s "
        "ORDER BY query DESC, line_number LIMIT 20")

    def copy_error_details(self, cur: Any, manifest: Manifest, since: datetime) -> CopyErrors:
        """The failed COPY's rows of STL_LOAD_ERRORS, each mapped to its staged file: the
        error text names no file, and ``filename`` is the object COPY read (a combined part's
        URL, cut at 256 characters), so the file is found from that URL and the line number
        (``Manifest.locate``)."""
        cur.execute(self.STL_LOAD_ERRORS, (since - CLOCK_SKEW,))
        # the latest COPY of the session, unless an earlier failure already reported it (this
        # COPY then failed before reading a row: an S3 error, say)
        rows = [r for r in cur.fetchall() if self.reported is None or r[0] > self.reported]
        last = max((r[0] for r in rows), default=None)
        self.reported = last if last is not None else self.reported
        lines, files = [], []
        for query, filename, line, col, kind, raw, code, reason in rows:
            if query != last:
                continue
            entry = manifest.locate(filename or "", int(line or 0))
            if entry is not None and entry not in files:
                files.append(entry)
            lines.append(self.redact(
                f"stl_load_errors query={query} file={filename} line={line} column={col} "
                f"type={kind} code={code} reason={reason!r} value={raw!r}"
                + (f" staged file={manifest.object_url(entry)}" if entry is not None else "")))
        return CopyErrors(tuple(lines), tuple(files))
