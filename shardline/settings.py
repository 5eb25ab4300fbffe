"""One validated settings object: ``shardline.ini``, then ``SHARDLINE_*`` env vars, then CLI flags.

Every key lives in a section (``[consumer] batch_max_records = 500``); its env
var is ``SHARDLINE_<SECTION>_<KEY>`` and its CLI override ``--set section.key=value``.
Unknown keys, in the file or the environment, are errors: a typo must not
silently fall back to a default. Nothing here connects anywhere.

No setting holds a secret: AWS credentials come from the standard AWS chain,
the warehouse password from PGPASSFILE/PGPASSWORD (or IAM auth), and Redshift
COPY authenticates with an IAM role ARN, which is not a secret.
"""
from __future__ import annotations

import configparser
import dataclasses
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlsplit

from shardline.errors import ConfigError

ENV_PREFIX = "SHARDLINE_"
# Env vars that are not settings keys.
ENV_RESERVED = {"SHARDLINE_CONFIG"}
DEFAULT_FILE = "shardline.ini"


def _opt(default: Any, help: str, *, choices: Iterable[str] | None = None,
         min: float | None = None, max: float | None = None,
         check: Callable[[Any], str | None] | None = None) -> Any:
    meta = {"help": help, "choices": tuple(choices) if choices else None,
            "min": min, "max": max, "check": check}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def _check_url(value: str) -> str | None:
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http(s) URL such as http://127.0.0.1:4567, or empty for real AWS"
    if parts.username or parts.password:
        return "must not contain credentials; they come from the standard AWS chain"
    try:
        port = parts.port
    except ValueError:
        return "has a bad port (must be 1-65535)"
    if port is not None and not 1 <= port <= 65535:
        return "has a bad port (must be 1-65535)"
    return None


def parse_host_port(item: str, default_port: int = 4730) -> tuple[str, int]:
    """'host:port' -> (host, port); raises ValueError with a readable reason."""
    host, sep, port_text = item.strip().rpartition(":")
    if not sep:
        host, port_text = item.strip(), str(default_port)
    if not host:
        raise ValueError(f"{item!r} has no host")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{item!r} has a bad port (must be 1-65535)")
    return host, int(port_text)


def _check_servers(value: list[str]) -> str | None:
    if not value:
        return "needs at least one host:port"
    for item in value:
        try:
            parse_host_port(item)
        except ValueError as exc:
            return str(exc)
    return None


_DSN_PASSWORD = re.compile(r"(^|\s)password\s*=|://[^/@\s]*:[^/@\s]*@", re.IGNORECASE)


def _check_dsn(value: str) -> str | None:
    if _DSN_PASSWORD.search(value):
        return ("must not contain a password; put it in PGPASSFILE (~/.pgpass) or PGPASSWORD, "
                "or use IAM authentication")
    return None


def _check_callable_path(value: str) -> str | None:
    if value and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", value):
        return "must look like package.module:function"
    return None


def _check_identifier(value: str) -> str | None:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", value):
        return "must be a lower-case SQL identifier ([a-z_][a-z0-9_]*, at most 63 characters)"
    return None


# Values below end up in S3 URLs inside SQL text (Redshift COPY ... FROM 's3://...'),
# in Gearman packets and in API calls: a strict shape keeps quoting out of the picture.
def _check_bucket(value: str) -> str | None:
    """S3 bucket naming rules (3-63 of a-z 0-9 . -, starts and ends alphanumeric)."""
    if value and (not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value)
                  or ".." in value or re.fullmatch(r"\d+\.\d+\.\d+\.\d+", value)):
        return ("must be an S3 bucket name: 3-63 characters of a-z, 0-9, '.' and '-', "
                "starting and ending with a letter or digit")
    return None


def _check_prefix(value: str) -> str | None:
    """A key prefix of safe characters, '/'-separated, no empty or '..' parts."""
    if not value:
        return None
    parts = value.split("/")
    if (not re.fullmatch(r"[A-Za-z0-9_.=/-]{1,200}", value)
            or any(part in ("", ".", "..") for part in parts)):
        return ("must be a key prefix like 'shardline' or 'prod/events': letters, digits, "
                "'_', '-', '.', '=' and '/' between non-empty parts (no leading or "
                "trailing '/', no '..')")
    return None


def _check_stream(value: str) -> str | None:
    if value and not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", value):
        return "must be a Kinesis stream name: 1-128 characters of a-z A-Z 0-9 _ . -"
    return None


def _check_function_name(value: str) -> str | None:
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,128}", value):
        return "must be 1-128 characters of letters, digits, '_', '.', ':' and '-'"
    return None


# arn:<partition>:iam::<12-digit account>:role/<path><name>, path and name ASCII
# letters, digits and +=.@_-/ (AWS allows ',' in names too, but Redshift chains roles
# with ',', so such a role could not be used here).
IAM_ROLE_ARN = re.compile(r"arn:aws[-a-z]*:iam::\d{12}:role/[A-Za-z0-9+=.@_/-]{1,512}",
                          re.ASCII)


def iam_role_chain(value: str) -> list[str]:
    """``warehouse.iam_role`` -> its role ARNs (one, or a Redshift chain joined by ',').

    ``ValueError`` (not echoing the value) when a part is not a role ARN."""
    roles = [r.strip() for r in value.split(",")] if value else []
    if not all(IAM_ROLE_ARN.fullmatch(r) for r in roles):
        raise ValueError("must be an IAM role ARN like arn:aws:iam::123456789012:role/"
                         "RedshiftCopy (chain roles with ',')")
    return roles


def _check_iam_role(value: str) -> str | None:
    try:
        iam_role_chain(value)
    except ValueError as exc:
        return str(exc)
    return None


@dataclass
class AwsSettings:
    region: str = _opt("", "AWS region; empty: the standard chain (AWS_DEFAULT_REGION, profile)")


@dataclass
class KinesisSettings:
    endpoint_url: str = _opt("", "Kinesis endpoint; empty means real AWS", check=_check_url)
    stream: str = _opt("", "stream name (the --stream flag sets it)", check=_check_stream)


@dataclass
class ProducerSettings:
    """The embedded producer (shardline.producer.Producer); docs/producer.md. The one
    definition of its options: ``ProducerConfig`` is this section plus the stream."""

    linger_ms: float = _opt(50.0, "a batch waits at most this long for more records", min=0.1)
    aggregate: bool = _opt(False, "KPL-aggregate user records, grouped by shard")
    aggregate_max_records: int = _opt(0, "user records per aggregate; 0 = as many as fit 1 MB",
                                      min=0)
    max_buffer_bytes: int = _opt(32 * 1024 * 1024, "bytes of events held in memory",
                                 min=1024 * 1024)
    on_full: str = _opt("", "buffer full: spill (to the spool), block, drop; empty = spill "
                            "with a spool, else drop", choices=("", "spill", "block", "drop"))
    block_timeout_ms: float = _opt(20.0, "block/spill: longest wait of put() for room", min=0)
    spool_dir: str = _opt("", "spool directory; empty = memory only")
    spool_after_ms: float = _opt(500.0, "an event not acknowledged this long goes to the spool",
                                 min=1)
    sync_interval_ms: float = _opt(100.0, "fsync spool writes at most this late; 0 = each write",
                                   min=0)
    max_spool_bytes: int = _opt(1024 ** 3, "spool size limit; beyond it events are dropped",
                                min=1024 * 1024)
    segment_bytes: int = _opt(16 * 1024 * 1024, "spool segment size", min=4096)
    lanes: int = _opt(2, "sender threads, each owning a group of shards", min=1, max=64)
    backoff_base_ms: float = _opt(50.0, "first retry backoff", min=1)
    backoff_max_ms: float = _opt(2000.0, "longest retry backoff", min=1)
    close_timeout_s: float = _opt(10.0, "close()/exit waits this long to send what is left",
                                  min=0)
    shard_refresh_s: float = _opt(300.0, "re-read the shard map this often", min=1)


@dataclass
class S3Settings:
    endpoint_url: str = _opt("", "S3 endpoint; empty means real AWS", check=_check_url)
    bucket: str = _opt("", "bucket for staged batches, manifests and dead letters",
                       check=_check_bucket)
    prefix: str = _opt("shardline", "key prefix under the bucket", check=_check_prefix)
    archive: bool = _opt(True, "stage workers keep every batch's source records under "
                         "{prefix}/archive/ (reprocess --from-archive; docs/iterating.md)")


@dataclass
class GearmanSettings:
    # The annotation's text picks the parser (_convert: "list"), so it stays a bare list.
    servers: list = _opt(["127.0.0.1:4730"],  # type: ignore[type-arg]
                         "comma-separated host:port list; several for failover",
                         check=_check_servers)
    stage_function: str = _opt("shardline_stage", "Gearman function name of the stage job",
                               check=_check_function_name)
    job_timeout_s: float = _opt(120.0, "a submitted job not done by then counts as lost", min=1)


@dataclass
class WarehouseSettings:
    dialect: str = _opt("postgres", "SQL dialect of the warehouse",
                        choices=("postgres", "redshift"))
    dsn: str = _opt("", "libpq DSN without password (host=... port=... dbname=... user=...)",
                    check=_check_dsn)
    mode: str = _opt("postgres", "postgres dialect only: redshift-like = the local Redshift "
                     "stand-in (no index on the dedup key, BRIN on the sort key)",
                     choices=("postgres", "redshift-like"))
    schema: str = _opt("public", "schema holding the target tables and the load record",
                       check=_check_identifier)
    iam_role: str = _opt("", "Redshift: IAM role ARN that COPY uses to read S3",
                         check=_check_iam_role)
    connect_timeout_s: int = _opt(10, "warehouse connect timeout", min=1, max=300)


def _check_table_prefix(value: str) -> str | None:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{0,200}", value):
        return "must be at most 200 characters of letters, digits, '_', '.' and '-' (DynamoDB)"
    return None


@dataclass
class ControlSettings:
    """The control store (leases, checkpoints, status, the staged-file ledger): not the
    warehouse; see shardline.controlstore."""

    backend: str = _opt("postgres", "control store backend", choices=("postgres", "dynamodb"))
    dsn: str = _opt("", "postgres backend: libpq DSN of the control database (not the "
                        "warehouse), without password", check=_check_dsn)
    schema: str = _opt("public", "postgres backend: schema of the control tables",
                       check=_check_identifier)
    connect_timeout_s: int = _opt(10, "postgres backend: connect timeout", min=1, max=300)
    dynamodb_endpoint_url: str = _opt("", "dynamodb backend: endpoint; empty means real AWS",
                                      check=_check_url)
    table_prefix: str = _opt("shardline_", "dynamodb backend: prefix of the table names",
                             check=_check_table_prefix)


@dataclass
class ConsumerSettings:
    initial_position: str = _opt("TRIM_HORIZON", "where a shard with no checkpoint starts",
                                 choices=("TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"))
    initial_timestamp: str = _opt("", "ISO-8601 time for AT_TIMESTAMP")
    get_records_limit: int = _opt(10000, "GetRecords Limit", min=1, max=10000)
    max_calls_per_s: float = _opt(5.0, "GetRecords calls per second per shard (AWS limit: 5)",
                                  min=0.1, max=5)
    max_bytes_per_s: int = _opt(2_000_000, "bytes read per second per shard (AWS limit: 2 MB)",
                                min=1000)
    idle_sleep_s: float = _opt(1.0, "pause after an empty GetRecords", min=0, max=60)
    iterator_max_age_s: float = _opt(60.0, "never use an iterator older than this (AWS: 300)",
                                     min=1, max=280)
    batch_max_records: int = _opt(500, "a batch closes at this many records", min=1, max=100000)
    batch_max_bytes: int = _opt(1_000_000, "... or this many data bytes", min=1000,
                                max=64_000_000)
    batch_max_age_s: float = _opt(1.0, "... or when its first record is this old", min=0.01)
    window_max_batches: int = _opt(8, "in-flight batches before reading pauses", min=1, max=1000)
    window_max_bytes: int = _opt(32_000_000, "in-flight bytes before reading pauses", min=1000)
    checkpoint_interval_s: float = _opt(5.0, "checkpoint at least this often", min=0.1)
    checkpoint_every_records: int = _opt(10000, "... or after this many staged records", min=1)
    lease_ttl_s: float = _opt(30.0, "a lease not renewed for this long is free", min=2)
    lease_renew_s: float = _opt(10.0, "renew the lease this often (< lease_ttl_s / 2)", min=0.5)
    shutdown_timeout_s: float = _opt(20.0, "graceful stop waits this long for in-flight batches "
                                           "(keep below supervisord stopwaitsecs)", min=0)
    job_max_attempts: int = _opt(8, "tries per batch before the consumer stops (backoff 0.5 s "
                                    "doubling: 8 tries span ~35 s)", min=1, max=100)
    job_retry_max_s: float = _opt(10.0, "longest backoff between tries of a batch", min=0.01)
    dispatch_threads: int = _opt(4, "parallel Gearman submitters", min=1, max=64)
    report_interval_s: float = _opt(5.0, "status row refresh period", min=0.1)
    parent_poll_s: float = _opt(2.0, "child shard: how often to look for the parents' SHARD_END",
                                min=0.05)


@dataclass
class WorkerSettings:
    transform: str = _opt("", "overrides the tables file's transform of table "
                          "worker.target_table (package.module:function; empty: the file's)",
                          check=_check_callable_path)
    target_table: str = _opt("page_views", "the table whose transform worker.transform "
                             "overrides", check=_check_identifier)
    reconnect_max_s: float = _opt(5.0, "longest pause between Gearman reconnects", min=0.01)


@dataclass
class TablesSettings:
    file: str = _opt("", "the tables file (TOML: tables, columns, keys, routes, transforms; "
                     "docs/tables.md); empty: the packaged default (page_views only)")


@dataclass
class LoaderSettings:
    # Production cadence by default (AWS: micro-batches every 2-5 minutes, COPY reading files
    # of 1 MB-1 GB compressed, a multiple of the slice count); the demo and tests set theirs.
    min_bytes: int = _opt(256 * 1024 * 1024, "load when this many staged bytes are pending "
                          "(rounded up to a multiple of slices x 1 MB)", min=1)
    min_files: int = _opt(0, "... or this many files (0: no file-count trigger)", min=0)
    max_interval_s: float = _opt(180.0, "... or the oldest pending file is this old", min=0)
    max_files_per_load: int = _opt(5000, "files in one COPY manifest", min=1)
    slices: int = _opt(4, "slices of the Redshift cluster: COPY parts and the byte trigger "
                       "are sized to a multiple of it", min=1)
    combine_min_bytes: int = _opt(1024 * 1024, "staged files smaller than this are combined "
                                  "into parts of at least this size before COPY (0: never)",
                                  min=0)
    poll_s: float = _opt(1.0, "how often the loader looks at the ledger", min=0.01)
    dedup_window_s: float = _opt(3600.0, "the merge looks for stored copies of an event only "
                                 "this far around the batch's occurred_at range (sort key)",
                                 min=0)
    lease_ttl_s: float = _opt(60.0, "the loader lease (one loader per table) lapses after "
                              "this long without renewal", min=1)
    quarantine_after: int = _opt(3, "a file whose COPY failed this many times is quarantined",
                                 min=1)


def _check_lake_warehouse(value: str) -> str | None:
    if value and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9_.=/-]*)?",
                                  value):
        return "must be s3://bucket/prefix, or empty for s3://<s3.bucket>/<s3.prefix>/lake"
    return None


_URI_PASSWORD = re.compile(r"://[^/@\s]*:[^/@\s]*@|password=", re.IGNORECASE)


def _check_catalog_uri(value: str) -> str | None:
    if _URI_PASSWORD.search(value):
        return ("must not contain a password; put it in PGPASSFILE (~/.pgpass) or PGPASSWORD "
                "(libpq reads them)")
    if value and not re.fullmatch(r"postgresql(\+psycopg2)?://\S+", value):
        return "must be a SQLAlchemy URL: postgresql+psycopg2://user@host:port/dbname"
    return None


def _check_names(value: list[str]) -> str | None:
    for name in value:
        if problem := _check_identifier(name):
            return f"{name!r} {problem}"
    return None


@dataclass
class LakeSettings:
    """The lake: the tables that also go to Apache Iceberg tables on S3 (docs/lake.md). The
    lake loader reuses the loader section's trigger, lease, poll and dedup window."""

    # The annotation's text picks the parser (_convert: "list"), so it stays a bare list.
    tables: list = _opt([],  # type: ignore[type-arg]
                        "tables of the tables file that also go to the lake (comma-separated); "
                        "empty: no lake", check=_check_names)
    catalog: str = _opt("sql", "the Iceberg catalog: sql (a PostgreSQL database; local) or glue "
                        "(AWS Glue Data Catalog)", choices=("sql", "glue"))
    catalog_name: str = _opt("shardline", "the catalog's name (the SQL catalog keys its rows by "
                             "it)", check=_check_identifier)
    catalog_uri: str = _opt("", "sql catalog: SQLAlchemy URL without password "
                            "(postgresql+psycopg2://user@host:port/dbname)",
                            check=_check_catalog_uri)
    glue_region: str = _opt("", "glue catalog: region; empty: aws.region")
    glue_endpoint_url: str = _opt("", "glue catalog: endpoint; empty means real AWS",
                                  check=_check_url)
    warehouse: str = _opt("", "where data and metadata files go: s3://bucket/prefix; empty: "
                          "s3://<s3.bucket>/<s3.prefix>/lake", check=_check_lake_warehouse)
    namespace: str = _opt("shardline", "the Iceberg namespace (Glue database) of the tables",
                          check=_check_identifier)
    partition: str = _opt("day", "partition by day or hour of the table's sort key",
                          choices=("day", "hour"))
    target_file_bytes: int = _opt(128 * 1024 * 1024, "target data file size of writes and of "
                                  "lake compact (>= 64 MB in production)", min=1)
    max_load_bytes: int = _opt(64 * 1024 * 1024, "staged (gzip) bytes one lake load reads at "
                               "most: its rows are held in memory (about 5-10 x this)", min=1)
    snapshot_retention_s: float = _opt(7 * 86400.0, "lake expire removes snapshots older than "
                                       "this (never the current one)", min=0)


def _check_host_id(value: str) -> str | None:
    if value and not re.fullmatch(r"[A-Za-z0-9_.:-]{1,128}", value):
        return "must be 1-128 characters of letters, digits, '_', '.', ':' and '-'"
    return None


def _check_serverurl(value: str) -> str | None:
    if value and not re.fullmatch(r"(unix://\S+|http://[^/@\s]+(:\d+)?/?)", value):
        return ("must be unix:///path/to/supervisor.sock or http://host:port (no credentials), "
                "or empty for $SUPERVISOR_SERVER_URL")
    return None


def _check_metrics_address(value: str) -> str | None:
    if value and not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}", value):
        return "must be host:port (e.g. 127.0.0.1:9641; port 0: any free port), or empty"
    return None


@dataclass
class AgentSettings:
    """``shardline agent``: one per host under supervisord (see shardline.fleet)."""

    host_id: str = _opt("", "this host's id in the fleet; empty: the machine's hostname",
                        check=_check_host_id)
    poll_s: float = _opt(5.0, "heartbeat, ListShards and assignment check period", min=0.1,
                         max=300)
    heartbeat_ttl_s: float = _opt(20.0, "a host whose heartbeat is older than this is dead "
                                        "(its shards move; at least 2 x poll_s)", min=1)
    include_file: str = _opt("", "the supervisord include file the agent writes its consumer "
                                 "programs to (the --include flag sets it)")
    serverurl: str = _opt("", "supervisord's XML-RPC URL; empty: $SUPERVISOR_SERVER_URL (set "
                              "by supervisord for its programs)", check=_check_serverurl)
    metrics_address: str = _opt("127.0.0.1:9641", "this host's Prometheus scrape target "
                                "(/metrics of every program supervisord runs here), served by "
                                "the agent, or by the metrics program without --agent; empty: "
                                "none", check=_check_metrics_address)


@dataclass
class StatusSettings:
    """``shardline status``'s alert thresholds (exit 3 past any of them)."""

    max_lag_ms: int = _opt(300_000, "status exits non-zero past this MillisBehindLatest / age",
                           min=0)
    max_pending_age_s: float = _opt(0.0, "alert when the oldest pending staged file is older "
                                    "(the loader is not loading); 0: 3 x loader.max_interval_s, "
                                    "at least 60 s", min=0)
    max_dead_letter_ratio: float = _opt(0.05, "alert when dead letters / staged records of a "
                                        "stream over dead_letter_window_s exceed this (1: never)",
                                        min=0, max=1)
    dead_letter_window_s: float = _opt(900.0, "the recent window of the dead-letter count and "
                                       "ratio", min=1)
    dead_host_alert_s: float = _opt(86400.0, "a host whose heartbeat stopped alerts for this "
                                    "long, then is only listed (0: as long as it is registered)",
                                    min=0)

    def pending_age_limit_s(self, loader_max_interval_s: float) -> float:
        """``max_pending_age_s``, or the default sized from the loader's cadence."""
        return self.max_pending_age_s or max(3 * loader_max_interval_s, 60.0)


@dataclass
class ReconcileSettings:
    """Reconciliation, hour by hour (docs/reconciliation.md), and warehouse retention."""

    grace_s: float = _opt(1800.0, "an hour is judged once it ended this long ago and no file "
                          "with rows in it is pending for any target (records can arrive "
                          "late: consumer lag, retries)", min=0)
    hours: int = _opt(48, "how many hours back status, /metrics and `shardline reconcile` "
                      "judge", min=1, max=24 * 90)
    refresh_s: float = _opt(300.0, "status --serve judges the hours again at most this often "
                            "(it reads every ledger entry of the window); a one-shot status "
                            "or `shardline reconcile` always reads them", min=0)
    retention_interval_s: float = _opt(600.0, "how often a loader whose table has a "
                                       "warehouse_retention looks for hours to delete "
                                       "(between loads)", min=0)
    retention_hours_per_pass: int = _opt(6, "at most this many hours deleted per retention "
                                         "pass: one bounded DELETE and commit each", min=1)


@dataclass
class TailSettings:
    """``shardline tail``: log files to the stream, one event per line (docs/tail.md)."""

    state_dir: str = _opt("", "where the tailer keeps its offsets (SQLite), on local disk; "
                              "empty: <producer.spool_dir>/tail")
    max_line_bytes: int = _opt(65536, "a longer line is cut to this many bytes and sent as a "
                                      "dead letter, the rest skipped", min=256, max=900_000)
    poll_s: float = _opt(0.25, "how often an idle tailer looks for new lines and files",
                         min=0.01, max=60)
    rotate_wait_s: float = _opt(10.0, "a file rotated away is kept open this long after its "
                                      "last write (a writer may still append)", min=0)
    report_interval_s: float = _opt(5.0, "how often the tailer writes each file's offset, "
                                         "bytes behind and oldest unsent line's age for "
                                         "status and /metrics", min=0.1)
    stall_alert_s: float = _opt(60.0, "status alerts when a file has unsent lines and its "
                                      "offset has not moved for this long (a stalled tailer)",
                                min=1)
    metrics_address: str = _opt("", "HOST:PORT where the tailer serves its own /metrics "
                                    "(a host without supervisor-config's metrics program); "
                                    "empty: none", check=_check_metrics_address)


def _check_mode(value: str) -> str | None:
    if not re.fullmatch(r"0?[0-7]{3}", value):
        return "must be an octal file mode such as 0660"
    return None


def _check_loopback_address(value: str) -> str | None:
    if value and not re.fullmatch(r"(127\.0\.0\.1|localhost):\d{1,5}", value):
        return "must be 127.0.0.1:PORT (the relay never listens beyond this host), or empty"
    if value and int(value.rpartition(":")[2]) > 65535:
        return "has a bad port (must be 0-65535)"
    return None


@dataclass
class RelaySettings:
    """``shardline relay``: a local daemon that takes newline-delimited JSON events from any
    language and ships them through the producer (docs/producer.md)."""

    socket_path: str = _opt("", "the unix socket the relay listens on; empty: "
                                "<state_dir>/relay.sock")
    socket_mode: str = _opt("0660", "the unix socket's file mode (who may send: the socket's "
                                    "group, e.g. www-data's)", check=_check_mode)
    tcp_address: str = _opt("", "also listen on this loopback address (127.0.0.1:PORT); "
                                "empty: unix socket only", check=_check_loopback_address)
    state_dir: str = _opt("", "the relay's journal of acknowledged events, on local disk; "
                              "empty: <producer.spool_dir>/relay")
    max_event_bytes: int = _opt(65536, "a longer line is answered ERR too_large",
                                min=256, max=1_000_000)
    max_pending_bytes: int = _opt(256 * 1024 * 1024, "journal bytes not yet durable in the "
                                  "producer (Kinesis or its spool); beyond it: ERR full",
                                  min=1024 * 1024)
    segment_bytes: int = _opt(4 * 1024 * 1024, "journal segment size (a segment is deleted "
                              "once every event in it is durable in the producer)", min=4096)
    segment_age_s: float = _opt(1.0, "a segment is closed after this long, so that a quiet "
                                "relay deletes what was shipped", min=0.01, max=3600)
    missing_event_id: str = _opt("assign", "an event without event_id: assign (a uuid4, "
                                 "written to the journal, so re-sends keep it) or refuse "
                                 "(ERR invalid)", choices=("assign", "refuse"))
    drain_s: float = _opt(5.0, "graceful stop: wait this long for open connections to finish",
                          min=0, max=300)
    metrics_address: str = _opt("", "serve /metrics on this address (host:port); empty: only "
                                    "the host's scrape target (agent / shardline metrics)",
                                check=_check_metrics_address)


@dataclass
class LogSettings:
    level: str = _opt("INFO", "log level", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    format: str = _opt("text", "text, or json: one JSON object per line (time, level, logger, "
                       "message, the context fields such as shard or load_id, exception)",
                       choices=("text", "json"))


@dataclass
class Settings:
    aws: AwsSettings = field(default_factory=AwsSettings)
    kinesis: KinesisSettings = field(default_factory=KinesisSettings)
    producer: ProducerSettings = field(default_factory=ProducerSettings)
    s3: S3Settings = field(default_factory=S3Settings)
    gearman: GearmanSettings = field(default_factory=GearmanSettings)
    warehouse: WarehouseSettings = field(default_factory=WarehouseSettings)
    control: ControlSettings = field(default_factory=ControlSettings)
    consumer: ConsumerSettings = field(default_factory=ConsumerSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    tables: TablesSettings = field(default_factory=TablesSettings)
    loader: LoaderSettings = field(default_factory=LoaderSettings)
    lake: LakeSettings = field(default_factory=LakeSettings)
    agent: AgentSettings = field(default_factory=AgentSettings)
    status: StatusSettings = field(default_factory=StatusSettings)
    reconcile: ReconcileSettings = field(default_factory=ReconcileSettings)
    tail: TailSettings = field(default_factory=TailSettings)
    relay: RelaySettings = field(default_factory=RelaySettings)
    log: LogSettings = field(default_factory=LogSettings)

    def replace(self, **overrides: str) -> "Settings":
        """A copy with ``{"section.key": "text"}`` overrides applied and validated."""
        new = dataclasses.replace(self, **{
            f.name: dataclasses.replace(getattr(self, f.name)) for f in fields(self)})
        for dotted, text in overrides.items():
            _apply(new, dotted, text, "override")
        _validate(new)
        return new

    def require(self, *dotted: str) -> None:
        """Stop at start when a setting this command needs is empty."""
        for key in dotted:
            section, name = key.split(".")
            if not getattr(getattr(self, section), name):
                env = f"{ENV_PREFIX}{section.upper()}_{name.upper()}"
                raise ConfigError(f"{key} is required: set it in [{section}] {name} = ..., "
                                  f"or {env}")


def sections() -> dict[str, type]:
    return {f.name: f.default_factory for f in fields(Settings)}  # type: ignore[misc]


def describe() -> list[tuple[str, str, Any, str]]:
    """(key, env var, default, help) for every setting, for docs and --help."""
    rows = []
    for sname, cls in sections().items():
        for f in fields(cls):
            default = (f.default_factory()  # type: ignore[operator]  # MISSING not narrowed
                       if f.default is dataclasses.MISSING else f.default)
            if isinstance(default, list):
                default = ",".join(default)
            rows.append((f"{sname}.{f.name}", f"{ENV_PREFIX}{sname.upper()}_{f.name.upper()}",
                         default, f.metadata["help"]))
    return rows


MARKDOWN_INTRO = """\
# Settings

<!-- Generated by `shardline settings --markdown > docs/settings.md`: edit the settings in
shardline/settings.py, not this file (tests/unit/test_settings.py checks it is current). -->

One validated settings object, read from `shardline.ini` (or `--config`, or
`$SHARDLINE_CONFIG`), then `SHARDLINE_<SECTION>_<KEY>` environment variables, then
`--set section.key=value` flags and each command's own flags. Unknown keys and bad values
stop the process at start with a message naming the key, exit code 78.
`shardline settings` lists them; `shardline settings --check` validates the current
configuration (and the tables file).

No setting holds a secret: AWS credentials come from the standard AWS chain (instance role,
`AWS_PROFILE`, env), the warehouse password from `PGPASSFILE`/`PGPASSWORD` (a DSN with a
password is refused), and Redshift COPY uses an IAM role ARN.

```ini
# shardline.ini
[kinesis]
stream = page-views
[s3]
bucket = my-staging-bucket
[gearman]
servers = gearman-1:4730, gearman-2:4730
[warehouse]
dialect = redshift
dsn = host=cluster.example.internal port=5439 dbname=analytics user=shardline
iam_role = arn:aws:iam::123456789012:role/shardline-copy
[tables]
file = /etc/shardline/tables.toml   # the tables file; empty: page_views only (docs/tables.md)
```

| key | env var | default | what |
|---|---|---|---|
"""


def markdown() -> str:
    """docs/settings.md: the intro above, then one table row per setting (``describe()``)."""
    rows = [f"| `{k}` | `{e}` | `{d}` | {h} |" for k, e, d, h in describe()]
    return MARKDOWN_INTRO + "\n".join(rows) + "\n"


def _field(section: str, key: str, source: str) -> dataclasses.Field[Any]:
    cls = sections().get(section)
    if cls is None:
        raise ConfigError(f"{source}: unknown section [{section}]; known sections: "
                          f"{', '.join(sections())}")
    for f in fields(cls):
        if f.name == key:
            return f
    known = ", ".join(f.name for f in fields(cls))
    raise ConfigError(f"{source}: unknown key {section}.{key}; known keys in [{section}]: {known}")


def _convert(f: dataclasses.Field[Any], text: str, where: str) -> Any:
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    text = text.strip()
    try:
        if kind == "int":
            return int(text.replace("_", ""))
        if kind == "float":
            return float(text)
        if kind == "list":
            return [item.strip() for item in text.split(",") if item.strip()]
        if kind == "bool":
            lowered = text.lower()
            if lowered in ("true", "yes", "on", "1"):
                return True
            if lowered in ("false", "no", "off", "0"):
                return False
            raise ValueError(text)
    except ValueError:
        raise ConfigError(f"{where}: {text!r} is not a valid {kind}") from None
    return text


def _apply(settings: Settings, dotted: str, text: str, source: str) -> None:
    section, _, key = dotted.partition(".")
    f = _field(section, key, source)
    value = _convert(f, text, f"{source}: {dotted}")
    setattr(getattr(settings, section), key, value)


def _validate(settings: Settings) -> None:
    for sname in sections():
        obj = getattr(settings, sname)
        for f in fields(obj):
            value, meta, key = getattr(obj, f.name), f.metadata, f"{sname}.{f.name}"
            if meta["choices"] and value not in meta["choices"]:
                raise ConfigError(f"{key}: {value!r} is not one of {', '.join(meta['choices'])}")
            if meta["min"] is not None and value < meta["min"]:
                raise ConfigError(f"{key}: {value} is below the minimum {meta['min']}")
            if meta["max"] is not None and value > meta["max"]:
                raise ConfigError(f"{key}: {value} is above the maximum {meta['max']}")
            if meta["check"] and (problem := meta["check"](value)):
                raise ConfigError(f"{key} {problem}")
    c = settings.consumer
    if c.lease_renew_s * 2 > c.lease_ttl_s:
        raise ConfigError("consumer.lease_renew_s must be at most half of consumer.lease_ttl_s")
    a = settings.agent
    if a.poll_s * 2 > a.heartbeat_ttl_s:
        raise ConfigError("agent.heartbeat_ttl_s must be at least twice agent.poll_s")
    if c.initial_position == "AT_TIMESTAMP" and not c.initial_timestamp:
        raise ConfigError("consumer.initial_timestamp is required when initial_position is "
                          "AT_TIMESTAMP")


def load(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None,
         overrides: Mapping[str, str] | None = None) -> Settings:
    """Build the settings: defaults < file < environment < overrides (CLI).

    ``path`` None means $SHARDLINE_CONFIG, else ./shardline.ini if it exists.
    """
    env = os.environ if env is None else env
    settings = Settings()
    explicit = path is not None or "SHARDLINE_CONFIG" in env
    file = Path(path if path is not None else env.get("SHARDLINE_CONFIG", DEFAULT_FILE))
    if file.exists():
        parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
        # keep keys as written so a typo in case is reported (typeshed: a method)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        try:
            parser.read(file, encoding="utf-8")
        except configparser.Error as exc:
            raise ConfigError(f"{file}: cannot parse: {exc.message.splitlines()[0]}") from None
        for section in parser.sections():
            for key, text in parser.items(section):
                _apply(settings, f"{section}.{key}", text, str(file))
    elif explicit:
        raise ConfigError(f"settings file {file} does not exist")
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX) or name in ENV_RESERVED:
            continue
        rest = name[len(ENV_PREFIX):].lower()
        section = next((s for s in sections() if rest.startswith(s + "_")),  # type: ignore[assignment]
                       None)
        if section is None:
            raise ConfigError(f"environment: unknown variable {name}; settings variables look "
                              f"like SHARDLINE_<SECTION>_<KEY>, sections: {', '.join(sections())}")
        _apply(settings, f"{section}.{rest[len(section) + 1:]}", env[name], f"environment {name}")
    for dotted, text in (overrides or {}).items():
        _apply(settings, dotted, text, "command line")
    _validate(settings)
    return settings


def parse_set_flags(items: Iterable[str]) -> dict[str, str]:
    """``--set section.key=value`` flags -> overrides dict."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        out[key.strip()] = value
    return out


def redact_dsn(dsn: str) -> str:
    """A DSN safe to log (passwords are refused anyway; belt and braces)."""
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn, flags=re.IGNORECASE)
