"""The lake's configuration, without pyiceberg: which tables go to the lake, the catalog's
name and properties (what ``pyiceberg.catalog.load_catalog(name, **properties)`` takes), the
table identifiers. Stage workers read ``lake_tables`` here without the lake extra installed.
"""
from __future__ import annotations

import re

from shardline.errors import ConfigError
from shardline.records.tables import Tables
from shardline.settings import Settings

# Snapshot summary properties of a lake load: what each Iceberg commit records of itself.
LOAD_ID_PROPERTY = "shardline.load-id"
MANIFEST_PROPERTY = "shardline.manifest"  # the S3 key of the load's file list
FILES_PROPERTY = "shardline.files"
LOAD_ID_PREFIX = "lake-"
# A stage worker's clock and a loader's may disagree: the reconcile reads snapshots from
# this much before the oldest lake-pending file was staged (and expire keeps them).
CLOCK_SKEW_MS = 3_600_000  # manifests under the table's manifests/ never collide with COPY's
_SECRET_KEYS = re.compile(r"(secret|password|token|access-key|credential)", re.IGNORECASE)
_URI_PASSWORD = re.compile(r"(://[^/@:\s]*:)[^/@\s]*@")


def lake_tables(settings: Settings, tables: Tables) -> tuple[str, ...]:
    """``lake.tables``, each checked against the tables file (ConfigError naming it)."""
    for name in settings.lake.tables:
        if name not in tables:
            raise ConfigError(f"lake.tables names {name!r}, which the tables file "
                              f"{tables.source} does not define (it defines: "
                              f"{', '.join(tables.names)})")
    return tuple(settings.lake.tables)


def warehouse_location(settings: Settings) -> str:
    """``lake.warehouse``, or ``s3://<s3.bucket>/<s3.prefix>/lake``."""
    if settings.lake.warehouse:
        return settings.lake.warehouse.rstrip("/")
    settings.require("s3.bucket")
    prefix = settings.s3.prefix.strip("/")
    return f"s3://{settings.s3.bucket}/{prefix + '/' if prefix else ''}lake"


def catalog_properties(settings: Settings) -> dict[str, str]:
    """The catalog's properties: no key, no password (S3 and Glue credentials come from the
    standard AWS chain, the catalog database's password from PGPASSFILE/PGPASSWORD)."""
    lake = settings.lake
    props = {"type": lake.catalog, "warehouse": warehouse_location(settings)}
    region = lake.glue_region or settings.aws.region
    if lake.catalog == "sql":
        if not lake.catalog_uri:
            raise ConfigError("lake.catalog_uri is required for the sql catalog: set it in "
                              "[lake] catalog_uri = postgresql+psycopg2://user@host:port/db, "
                              "or SHARDLINE_LAKE_CATALOG_URI")
        props["uri"] = lake.catalog_uri
        props["init_catalog_tables"] = "true"
    else:
        if region:
            props["glue.region"] = region
        if lake.glue_endpoint_url:
            props["glue.endpoint"] = lake.glue_endpoint_url
    if settings.s3.endpoint_url:
        props["s3.endpoint"] = settings.s3.endpoint_url
        props["s3.path-style-access"] = "true"
    if region:
        props["s3.region"] = region
        props.setdefault("client.region", region)
    elif settings.s3.endpoint_url:
        props["s3.region"] = "us-east-1"  # a local endpoint ignores it; pyarrow wants one
    return props


def redacted(properties: dict[str, str]) -> dict[str, str]:
    """Properties safe to print or log: secret-looking keys dropped, URI passwords masked."""
    return {k: _URI_PASSWORD.sub(r"\1***@", v) for k, v in properties.items()
            if not _SECRET_KEYS.search(k)}


def identifier(settings: Settings, table: str) -> str:
    """``namespace.table``: the Iceberg table identifier (in Glue: database.table)."""
    return f"{settings.lake.namespace}.{table}"
