"""The control store: leases, fenced checkpoints with history, shard status, the staged-file
ledger, host heartbeats and shard assignments, off the warehouse (see ``base.py`` for why).

    store = open_store(settings)        # [control] backend = postgres | dynamodb
    token = store.acquire_lease(stream, shard, owner, ttl_s=30)
    store.checkpoint(stream, shard, owner, token, 30, Checkpoint(seq, 0, True))

Modules: ``base.py`` (the interface and its records), ``memory.py`` (in-memory, for unit
tests of callers), ``postgres.py`` (a PostgreSQL database of its own; DDL in sql/control),
``dynamodb.py`` (DynamoDB tables made by ``create_tables``). One contract suite,
tests/contract/test_control_store.py, runs against all three.
"""
from __future__ import annotations

import time
from typing import Callable

from shardline.errors import ConfigError
from shardline.settings import Settings

from .base import (
    QUARANTINED, STATUS_FIELDS, ControlStore, Host, PendingStats, Quarantined, ShardStatus,
)  # fmt: skip
from .memory import MemoryStore

__all__ = ["QUARANTINED", "STATUS_FIELDS", "ControlStore", "Host", "MemoryStore",
           "PendingStats", "Quarantined", "ShardStatus", "dynamodb_client", "open_store"]


def dynamodb_client(settings: Settings) -> object:
    """A DynamoDB client for the control store (botocore retries throttling a few times)."""
    import boto3
    from botocore.exceptions import NoRegionError

    from shardline.clients import _boto_config

    try:
        return boto3.client("dynamodb", region_name=settings.aws.region or None,
                            endpoint_url=settings.control.dynamodb_endpoint_url or None,
                            config=_boto_config(4, read_timeout=10))
    except NoRegionError:
        raise ConfigError("aws.region is required for the dynamodb control store: set [aws] "
                          "region = ..., SHARDLINE_AWS_REGION or AWS_DEFAULT_REGION") from None


def open_store(settings: Settings, clock: Callable[[], float] = time.time) -> ControlStore:
    """The configured backend; nothing connects until the first call."""
    c = settings.control
    if c.backend == "postgres":
        if not c.dsn:
            raise ConfigError("control.dsn is required when control.backend is postgres: set "
                              "[control] dsn = ... or SHARDLINE_CONTROL_DSN (a database of its "
                              "own, not the warehouse)")
        from .postgres import PostgresStore

        return PostgresStore(c.dsn, c.schema, c.connect_timeout_s, clock=clock)
    if c.backend == "dynamodb":
        from .dynamodb import DynamoStore

        return DynamoStore(dynamodb_client(settings), c.table_prefix, clock=clock)
    raise ConfigError(f"control.backend: {c.backend!r} is not one of postgres, dynamodb")
