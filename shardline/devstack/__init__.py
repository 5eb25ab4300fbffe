"""Local development stack: gearmand, kinesalite (Kinesis), moto (S3, DynamoDB) and PostgreSQL.

Every service listens on 127.0.0.1 only; data, logs and the state file live under one
directory (default ``.devstack/`` in the repository, git-ignored).

    shardline devstack up        # start (or repair) the stack, print its status
    eval "$(shardline devstack env)"
    shardline devstack status
    shardline devstack stop postgres; shardline devstack start postgres   # outage drills
    shardline devstack down      # stop exactly what ``up`` started
    shardline devstack up --warehouse redshift-like [--commit-latency-ms 300] \
        [--isolation serializable|snapshot]

PostgreSQL holds two databases: ``shardline`` (the warehouse) and ``shardline_control`` (the
control store, see shardline.controlstore; moto serves the DynamoDB backend on the S3 port).
``--warehouse redshift-like`` makes Redshift's isolation level the warehouse database's
default (``--isolation``: SERIALIZABLE, or SNAPSHOT as REPEATABLE READ) and starts ``pgrelay``
(relay.py), which holds every COMMIT back for the given latency, answers Redshift's COPY from
S3 as Redshift does (redshift_copy.py) and gives the loader's fence tables Redshift's
per-table write lock, in front of it; ``SHARDLINE_WAREHOUSE_DSN`` then points at the relay.
The mode is kept in the state.

``dir/state.json`` records ports, PIDs (with their kernel start time, so a recycled PID
is never mistaken for ours), the bucket and the PostgreSQL paths. A second ``up`` reuses
it and restarts only the services that do not answer.

PostgreSQL is a throwaway cluster: ``initdb`` runs as the ``postgres`` user when we are
root (``initdb`` refuses root). When that user cannot reach ``dir`` (e.g. a parent is
mode 0700, as pytest's tmp directories are), the cluster lives in a ``/tmp/shardline-pg-*``
directory recorded in the state. ``down`` deletes the cluster and keeps its log in ``dir``.

This package's public API is re-exported here; the modules, bottom up:

    common.py    constants, logger, DevstackError (imports nothing from the package)
    aws.py       boto3 clients for kinesalite and moto, dummy credentials
    state.py     StackInfo, ServiceStatus, state.json and its lock
    procs.py     spawn / alive / terminate / wait_ready, port ownership checks
    pg_server.py the throwaway PostgreSQL cluster
    services.py  gearmand, kinesalite, moto, pgrelay; the start and health-check tables
    relay.py     TCP relay: outage cut/restore, PostgreSQL commit latency
    moto_server.py  moto with DynamoDB calls serialised (atomic conditional writes)
    stack.py     up, down, status, load, stop_service, start_service
    cli.py       main(argv), also run by ``python -m shardline.devstack``
"""

from __future__ import annotations

import shutil  # noqa: F401 - kept reachable: tests patch ``devstack.shutil.which``

from .cli import main
from .common import (
    DATABASE, DEFAULT_BUCKET, DEFAULT_DIR, DUMMY_AWS_ENV, HOST, KINESALITE_SCRIPT, PG_USER,
    REPO_ROOT, SERVICES, START_TIMEOUT, STATE_VERSION, STOP_TIMEOUT, DevstackError, log,
)  # fmt: skip
from .stack import down, load, start_service, status, stop_service, up
from .state import ServiceStatus, StackInfo

__all__ = [
    "DATABASE", "DEFAULT_BUCKET", "DEFAULT_DIR", "DUMMY_AWS_ENV", "HOST", "KINESALITE_SCRIPT",
    "PG_USER", "REPO_ROOT", "SERVICES", "START_TIMEOUT", "STATE_VERSION", "STOP_TIMEOUT",
    "DevstackError", "ServiceStatus", "StackInfo", "down", "load", "log", "main",
    "start_service", "status", "stop_service", "up",
]  # fmt: skip
