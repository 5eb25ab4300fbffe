"""Start-up checks, in one place for every command: what a first run gets wrong, found before
the command reads, stages, loads or moves anything.

    preflight.require(settings, CONTROL, STREAM, GEARMAN)     # the consumer's start

Each mistake raises one error whose message names what is wrong and the command or setting
that fixes it; ``shardline.cli`` prints it as one line with its exit code:

- a store not at this release's schema (never migrated, behind, or migrated by a newer
  release): ``NotMigrated`` (NOT_MIGRATED), "run shardline migrate";
- no such stream or bucket, a bucket in another region than ``aws.region``: ``ConfigError``
  (CONFIG);
- an endpoint or gearmand that does not answer at all: ``Unreachable`` (UNAVAILABLE);
- an IAM denial: ``AccessDenied`` (DENIED).

A service that does not answer is asked again for ``START_PATIENCE_S`` before the command
gives up (a restart or an outage that passes must not cost a process restart), and a check
that cannot decide (throttling, a 5xx) lets the command start: its own retries deal with
trouble that passes, and a busy service must not stop a fleet's restart.
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from shardline.aws_access import aws_errors
from shardline.errors import ConfigError, NotMigrated, RetriableError, Unreachable
from shardline.logs import get_logger
from shardline.migrate import SchemaState
from shardline.settings import Settings, parse_host_port

WAREHOUSE, CONTROL, STREAM, BUCKET, GEARMAN = "warehouse", "control", "stream", "bucket", "gearman"

# How long a starting command keeps asking a service that does not answer (a gearmand or
# PostgreSQL restart takes seconds) before it says so; supervisord starts it again either way.
START_PATIENCE_S = 10.0
MIGRATE = "run shardline migrate"

log = get_logger("preflight")
T = TypeVar("T")


def require(settings: Settings, *needs: str, kinesis: Any = None) -> None:
    """Check what a command ``needs`` (``WAREHOUSE``, ``CONTROL``, ``STREAM``, ``BUCKET``,
    ``GEARMAN``); raises the first mistake found, every unmigrated store in one error.
    ``kinesis``: the command's own Kinesis client for the stream check (a second client
    would stay in the process's heap: about 3 MB of every consumer)."""
    problems = []
    if WAREHOUSE in needs:
        problems += patiently(lambda: warehouse_problems(settings))
    if CONTROL in needs:
        problems += patiently(lambda: control_problems(settings))
    if problems:
        raise not_migrated(problems)
    if STREAM in needs:
        patiently(lambda: require_stream(settings, kinesis))
    if BUCKET in needs:
        patiently(lambda: require_bucket(settings))
    if GEARMAN in needs:
        require_gearman(settings)


def patiently(check: Callable[[], T], patience_s: float = START_PATIENCE_S) -> T:
    """``check()``, asked again while it fails with a retriable error (no answer, a database
    restarting, throttling) for up to ``patience_s``; then that error is raised."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            return check()
        except RetriableError as exc:
            if time.monotonic() >= deadline:
                raise
            log.warning("start-up check: %s; asking again", exc)
            time.sleep(1.0)


# -- the stores' schemas -----------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    """One store not at this release's schema: "<store> <state>: <fix>"."""

    store: str
    state: str
    fix: str = MIGRATE


def not_migrated(problems: list[Problem]) -> NotMigrated:
    """One line for every problem (two fresh stores read "A and B are not migrated")."""
    if len({p.fix for p in problems}) == 1:
        if len(problems) > 1 and all(p.state == "is not migrated" for p in problems):
            text = " and ".join(p.store for p in problems) + " are not migrated"
        else:
            text = "; ".join(f"{p.store} {p.state}" for p in problems)
        return NotMigrated(f"{text}: {problems[0].fix}")
    return NotMigrated("; ".join(f"{p.store} {p.state}: {p.fix}" for p in problems))


def schema_problems(store: str, state: SchemaState) -> list[Problem]:
    """A ``migrate.SchemaState`` as problems of ``store`` (none when it is current)."""
    if state.unknown:
        many = "s" if len(state.unknown) > 1 else ""
        return [Problem(store, f"has migration{many} {', '.join(state.unknown)}, which this "
                               f"release does not know", "run the shardline release that made it")]
    if state.fresh:
        return [Problem(store, "is not migrated")]
    if state.missing:  # migrations by name (NNN_name), or DynamoDB's "table x", "index x.y"
        noun = "" if not state.missing[0][:1].isdigit() else \
            "migrations " if len(state.missing) > 1 else "migration "
        return [Problem(store, f"lacks {noun}{', '.join(state.missing)}")]
    return []


def warehouse_problems(settings: Settings) -> list[Problem]:
    """The warehouse against the migrations and the tables file (reads only)."""
    from shardline import clients, migrate, upgrade
    from shardline.tables import load_tables

    w = settings.warehouse
    settings.require("warehouse.dsn")
    store = f"the warehouse ({migrate.describe_postgres(w.dialect, w.dsn, w.schema)})"
    tables = load_tables(settings)  # a bad tables file: ConfigError, before connecting
    conn = clients.warehouse_connect(settings)
    try:
        if upgrade.legacy_layout(conn):
            return [Problem(store, "holds the control tables of the release before the "
                                   "control store")]
        problems = schema_problems(store, migrate.schema_state(conn))
        if problems:
            return problems
        changes = migrate.table_changes(conn, migrate.target(settings), tables)
    finally:
        conn.close()
    if changes:
        wanted = ", ".join(dict.fromkeys(f"{c.table} ({c.action})" for c in changes))
        return [Problem(store, f"lacks the tables file's {wanted}")]
    return []


def control_problems(settings: Settings) -> list[Problem]:
    """The control store (either backend) against this release's tables (reads only)."""
    from shardline.controlstore import open_store

    store = open_store(settings)
    try:
        return schema_problems(f"the control store ({store.describe()})", store.schema_state())
    finally:
        store.close()


# -- AWS: stream, bucket -----------------------------------------------------------------

def _inconclusive(what: str, call: Callable[[], Any]) -> Any:
    """``call()``; a botocore error nothing here classified (throttling, 5xx) is logged and
    the command starts anyway (None)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call()
    except (ClientError, BotoCoreError) as exc:
        log.warning("start-up check of %s inconclusive (%s); starting anyway", what,
                    type(exc).__name__)
        return None


def require_stream(settings: Settings, client: Any = None) -> None:
    """The stream exists where the settings point (ListShards: the consumer's own call, so
    its IAM policy needs nothing more); asked with ``client`` if given."""
    from botocore.exceptions import ClientError

    from shardline.kinesis import StreamNotFound, error_code, kinesis_client

    settings.require("kinesis.stream")
    stream = settings.kinesis.stream
    client = client or kinesis_client(settings, botocore_retries=3)
    endpoint, region = client.meta.endpoint_url, client.meta.region_name

    def probe() -> None:
        with aws_errors("kinesis:ListShards", f"stream {stream!r}", "Kinesis", endpoint,
                        "kinesis.endpoint_url"):
            try:
                client.list_shards(StreamName=stream, MaxResults=1)
            except ClientError as exc:
                if error_code(exc) != "ResourceNotFoundException":
                    raise
                raise StreamNotFound(
                    f"stream {stream!r} does not exist at {endpoint} (region {region}, "
                    f"ResourceNotFoundException): "
                    f"create it with shardline create-stream --stream {stream} --shards N, "
                    f"or fix kinesis.stream") from None

    _inconclusive(f"stream {stream!r}", probe)


def require_bucket(settings: Settings) -> None:
    """The bucket exists, in the region the settings name (Redshift's COPY reads it there).
    GetBucketLocation, not HeadBucket: its IAM action (s3:GetBucketLocation) reveals no key,
    where HeadBucket's is s3:ListBucket on the whole bucket, which a role limited to its
    prefixes should not need."""
    from botocore.exceptions import ClientError

    from shardline import clients
    from shardline.kinesis import error_code

    settings.require("s3.bucket")
    bucket = settings.s3.bucket
    s3 = clients.s3_client(settings)
    endpoint, region = s3.meta.endpoint_url, s3.meta.region_name

    def probe() -> str:
        with aws_errors("s3:GetBucketLocation", f"bucket {bucket!r}", "S3", endpoint,
                        "s3.endpoint_url"):
            try:
                answer = s3.get_bucket_location(Bucket=bucket)
            except ClientError as exc:
                if error_code(exc) in ("404", "NoSuchBucket"):
                    raise ConfigError(f"bucket {bucket!r} does not exist at {endpoint} "
                                      f"(region {region}): create it, or fix s3.bucket"
                                      ) from None
                raise
        # S3's oldest regions answer in their legacy names: none is us-east-1, EU eu-west-1
        where = str(answer.get("LocationConstraint") or "us-east-1")
        return "eu-west-1" if where == "EU" else where

    where = _inconclusive(f"bucket {bucket!r}", probe)
    if where and region and where != region:
        raise ConfigError(f"bucket {bucket!r} is in region {where}, not {region} (aws.region): "
                          f"set aws.region to the region of the bucket and the stream")


# -- gearmand ------------------------------------------------------------------------------

def require_gearman(settings: Settings, wait_s: float = START_PATIENCE_S) -> None:
    """At least one of ``gearman.servers`` accepts a connection within ``wait_s``."""
    servers = [parse_host_port(s) for s in settings.gearman.servers]
    deadline = time.monotonic() + wait_s
    while True:
        reasons: list[str] = []
        for host, port in servers:
            try:
                socket.create_connection((host, port), timeout=2).close()
                return
            except OSError as exc:
                reasons.append((exc.strerror or str(exc) or type(exc).__name__).lower())
        if time.monotonic() >= deadline:
            listed = ", ".join(f"{h}:{p}" for h, p in servers)
            raise Unreachable(f"gearmand is unreachable at {listed} "
                              f"({reasons[0] if reasons else 'no servers'}): check "
                              f"gearman.servers and that gearmand runs")
        time.sleep(0.5)
