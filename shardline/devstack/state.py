"""The stack's record: ``dir/state.json``, its lock, and the StackInfo built from it.

state.json holds the ports, the bucket, the PostgreSQL paths and, per service, the PID
with its kernel start time. Everything that reads or writes it goes through here.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, NamedTuple

from .aws import boto_client
from .common import (
    CONTROL_DATABASE, DATABASE, DEFAULT_ISOLATION, DUMMY_AWS_ENV, HOST, PG_USER, RELAY, SERVICES,
    STATE_VERSION, Record, address, http_url,
)  # fmt: skip

if TYPE_CHECKING:  # botocore has no types here: Any to mypy, named for the reader
    from botocore.client import BaseClient


@dataclass
class StackInfo:
    """Where a running stack's services listen."""

    dir: Path
    gearman_port: int
    kinesis_port: int
    s3_port: int
    pg_port: int
    bucket: str
    pg_socket_dir: Path
    warehouse_mode: str = "postgres"
    relay_port: int | None = None  # redshift-like: the commit-latency relay before PostgreSQL
    commit_latency_ms: int = 0
    isolation: str = DEFAULT_ISOLATION  # redshift-like: serializable | snapshot

    @property
    def gearman_server(self) -> str:
        return address(self.gearman_port)

    @property
    def kinesis_endpoint_url(self) -> str:
        return http_url(self.kinesis_port)

    @property
    def s3_endpoint_url(self) -> str:
        return http_url(self.s3_port)

    @property
    def dsn(self) -> str:
        """The warehouse DSN (through the commit-latency relay when redshift-like)."""
        port = self.relay_port if self.relay_port else self.pg_port
        return f"host={HOST} port={port} dbname={DATABASE} user={PG_USER}"

    @property
    def direct_dsn(self) -> str:
        """The warehouse database without the relay (set-up, inspection)."""
        return f"host={HOST} port={self.pg_port} dbname={DATABASE} user={PG_USER}"

    @property
    def control_dsn(self) -> str:
        """The control store's own database on the same cluster, never relayed."""
        return f"host={HOST} port={self.pg_port} dbname={CONTROL_DATABASE} user={PG_USER}"

    @property
    def lake_catalog_uri(self) -> str:
        """The lake's SQL catalog: a SQLAlchemy URL of the control store's database."""
        return f"postgresql+psycopg2://{PG_USER}@{HOST}:{self.pg_port}/{CONTROL_DATABASE}"

    @property
    def dynamodb_endpoint_url(self) -> str:
        """moto serves DynamoDB on the same port as S3."""
        return self.s3_endpoint_url

    def describe_warehouse(self) -> str:
        if self.warehouse_mode == "postgres":
            return "warehouse: postgres"
        return (f"warehouse: {self.warehouse_mode} ({self.isolation.upper()} by default, COMMIT +"
                f"{self.commit_latency_ms} ms via {RELAY} on {address(self.relay_port or 0)})")

    def env(self) -> dict[str, str]:
        """Environment variables that point shardline (and boto3) at this stack."""
        return {
            "SHARDLINE_KINESIS_ENDPOINT_URL": self.kinesis_endpoint_url,
            "SHARDLINE_S3_ENDPOINT_URL": self.s3_endpoint_url,
            "SHARDLINE_S3_BUCKET": self.bucket,
            "SHARDLINE_GEARMAN_SERVERS": self.gearman_server,
            "SHARDLINE_WAREHOUSE_DSN": self.dsn,
            "SHARDLINE_WAREHOUSE_MODE": self.warehouse_mode,
            "SHARDLINE_CONTROL_BACKEND": "postgres",
            "SHARDLINE_CONTROL_DSN": self.control_dsn,
            "SHARDLINE_CONTROL_DYNAMODB_ENDPOINT_URL": self.dynamodb_endpoint_url,
            # the lake's SQL catalog (its tables beside the control store's; docs/lake.md);
            # the lake itself stays off until SHARDLINE_LAKE_TABLES names a table
            "SHARDLINE_LAKE_CATALOG": "sql",
            "SHARDLINE_LAKE_CATALOG_URI": self.lake_catalog_uri,
            **DUMMY_AWS_ENV,
        }

    def client(self, service: str, **kwargs: Any) -> BaseClient:
        """A boto3 client ("kinesis", "s3" or "dynamodb") for this stack, dummy credentials."""
        endpoint = {"kinesis": self.kinesis_endpoint_url, "s3": self.s3_endpoint_url,
                    "dynamodb": self.dynamodb_endpoint_url}[service]
        return boto_client(service, endpoint, **kwargs)


class ServiceStatus(NamedTuple):
    pid: int | None
    port: int
    alive: bool


def state_path(dir: Path) -> Path:
    return dir / "state.json"


def read_state(dir: Path) -> Record | None:
    try:
        state: Record = json.loads(state_path(dir).read_text())
        return state
    except FileNotFoundError:
        return None


def write_state(dir: Path, state: Record) -> None:
    """Write state.json atomically."""
    tmp = state_path(dir).with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, state_path(dir))


@contextlib.contextmanager
def locked(dir: Path) -> Iterator[None]:
    """Serialize up/down on one directory."""
    with open(dir / "state.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def service_names(state: Record) -> tuple[str, ...]:
    """The core services, plus the relay when the warehouse is redshift-like."""
    return SERVICES + ((RELAY,) if RELAY in state["ports"] else ())


def warehouse(state: Record) -> Record:
    """``{"mode": ..., "commit_latency_ms": ..., "isolation": ...}`` (stacks from before the
    modes: postgres; from before the isolation choice: serializable)."""
    wh = state.get("warehouse") or {"mode": "postgres", "commit_latency_ms": 0}
    return {"isolation": DEFAULT_ISOLATION, **wh}


def info_from_state(state: Record) -> StackInfo:
    ports, wh = state["ports"], warehouse(state)
    return StackInfo(
        dir=Path(state["dir"]),
        gearman_port=ports["gearman"],
        kinesis_port=ports["kinesis"],
        s3_port=ports["s3"],
        pg_port=ports["postgres"],
        bucket=state["bucket"],
        pg_socket_dir=Path(state["pg"]["socket_dir"]),
        warehouse_mode=wh["mode"],
        relay_port=ports.get(RELAY),
        commit_latency_ms=wh["commit_latency_ms"],
        isolation=wh["isolation"],
    )


def free_ports(count: int) -> list[int]:
    """Distinct TCP ports that are free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def new_state(
    dir: Path, ports: dict[str, int] | None, bucket: str, pg_layout: Callable[[Path], Record]
) -> Record:
    """A fresh record: requested ports, free ones for the rest, pg_layout(dir) for PostgreSQL."""
    unknown = set(ports or {}) - set(SERVICES)
    if unknown:
        raise ValueError(f"unknown service(s) in ports: {sorted(unknown)}; known: {SERVICES}")
    picked = dict(zip(SERVICES, free_ports(len(SERVICES)), strict=True))
    picked.update(ports or {})
    return {
        "version": STATE_VERSION,
        "dir": str(dir),
        "ports": picked,
        "bucket": bucket,
        "pg": pg_layout(dir),
        "services": {},
    }
