"""Factories for the outside world. Nothing connects at import time.

The only difference between local and production is here: an endpoint URL
(empty = real AWS) and, for the warehouse, the SQL dialect. The Kinesis client is
``shardline.kinesis.kinesis_client`` (with ListShards and the error classifier).
"""
from __future__ import annotations

from typing import Any

from shardline.errors import ConfigError, ServiceUnavailable
from shardline.lifecycle import first_line
from shardline.settings import Settings, parse_host_port, redact_dsn


def _boto_config(retries: int, read_timeout: float = 30.0) -> Any:
    from botocore.config import Config

    return Config(retries={"max_attempts": retries, "mode": "standard"},
                  connect_timeout=5, read_timeout=read_timeout, max_pool_connections=32)


def s3_client(settings: Settings) -> Any:
    import boto3
    from botocore.config import Config

    cfg = _boto_config(5, read_timeout=60).merge(Config(s3={"addressing_style": "path"})) \
        if settings.s3.endpoint_url else _boto_config(5, read_timeout=60)
    return boto3.client("s3", region_name=settings.aws.region or None,
                        endpoint_url=settings.s3.endpoint_url or None, config=cfg)


def warehouse_connect(settings: Settings, *, autocommit: bool = False) -> Any:
    """A psycopg2 connection with search_path set to the configured schema."""
    import psycopg2

    if not settings.warehouse.dsn:
        raise ConfigError("warehouse.dsn is required (SHARDLINE_WAREHOUSE_DSN)")
    try:
        conn = psycopg2.connect(settings.warehouse.dsn,
                                connect_timeout=settings.warehouse.connect_timeout_s)
    except psycopg2.OperationalError as exc:
        raise ServiceUnavailable(f"warehouse {redact_dsn(settings.warehouse.dsn)}: "
                                 f"{first_line(exc)}") from None
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'SET search_path TO "{settings.warehouse.schema}"')
    conn.autocommit = autocommit
    return conn


def gearman_servers(settings: Settings) -> list[str]:
    return [f"{h}:{p}" for h, p in map(parse_host_port, settings.gearman.servers)]


def gearman_client(settings: Settings) -> Any:
    """A fresh client. After any connection error, throw it away and build a new one."""
    import gearman

    return gearman.GearmanClient(gearman_servers(settings))


# A stage job's payload is a whole batch (~200 KB for 500 page views). pygearman reads
# 4 KiB per round of its poll loop, so one payload took ~50 rounds of pure-Python event
# handling (~2 ms of worker CPU a job, about 4 µs a record); a worker reads up to 1 MiB.
WORKER_READ_BYTES = 1 << 20


def gearman_worker(settings: Settings) -> Any:
    import gearman
    from gearman.connection import GearmanConnection

    class BulkReadConnection(GearmanConnection):
        def read_data_from_socket(self, bytes_to_read: int = WORKER_READ_BYTES) -> int:
            n: int = super().read_data_from_socket(max(bytes_to_read, WORKER_READ_BYTES))
            return n

    class Worker(gearman.GearmanWorker):
        connection_class = BulkReadConnection

    return Worker(gearman_servers(settings))
