"""Shared fixtures: a real local stack (gearmand, kinesalite, moto S3, PostgreSQL).

The `stack` fixture starts its own stack in a fresh temporary directory on free ports,
so tests never touch a developer's `.devstack/`. If a service cannot start, the fixture
raises: integration tests fail, they are never skipped.
"""

from __future__ import annotations

import os
import re
import uuid
from typing import Iterator

import psycopg2
import pytest

from shardline import devstack
from shardline.devstack import StackInfo

# Variables that could point boto3 at real AWS (or at a missing profile) in this process.
_AWS_VARS_TO_DROP = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
)


@pytest.fixture(scope="session", autouse=True)
def _dummy_aws_credentials() -> Iterator[None]:
    """Fake AWS credentials for the emulators, in the test process only."""
    with pytest.MonkeyPatch.context() as mp:
        for name in _AWS_VARS_TO_DROP:
            mp.delenv(name, raising=False)
        for name, value in devstack.DUMMY_AWS_ENV.items():
            mp.setenv(name, value)
        yield


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, _dummy_aws_credentials: None
) -> Iterator[StackInfo]:
    """A running stack for the whole session, stopped at the end."""
    dir = tmp_path_factory.mktemp("devstack")
    try:
        info = devstack.up(dir)
    except BaseException:
        devstack.down(dir)  # stop whatever did start before re-raising
        raise
    try:
        yield info
    finally:
        devstack.down(dir)


def _short_name(request: pytest.FixtureRequest, limit: int = 24) -> str:
    """The test's name reduced to [a-z0-9-], for use in resource names."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    return name.removeprefix("test-")[:limit].strip("-") or "test"


@pytest.fixture
def stream_name(request: pytest.FixtureRequest) -> str:
    """A unique Kinesis stream name (not created): t-<test>-<uuid8>."""
    return f"t-{_short_name(request)}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def s3_prefix(request: pytest.FixtureRequest) -> str:
    """A unique key prefix in the stack's bucket: t/<test>-<uuid8> (keys are <prefix>/...)."""
    return f"t/{_short_name(request)}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pg_schema(stack: StackInfo) -> Iterator[str]:
    """A fresh schema t_<uuid8> in the `shardline` database (the warehouse) and the same name
    in `shardline_control` (the control store), both dropped CASCADE afterwards."""
    schema = f"t_{uuid.uuid4().hex[:8]}"
    conns = [psycopg2.connect(dsn) for dsn in (stack.direct_dsn, stack.control_dsn)]
    try:
        for conn in conns:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE SCHEMA "{schema}"')
        yield schema
        for conn in conns:
            with conn.cursor() as cur:
                # Fail rather than hang if a test left a transaction holding locks.
                cur.execute("SET lock_timeout = '10s'")
                cur.execute(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        for conn in conns:
            conn.close()


@pytest.fixture
def stack_env(stack: StackInfo, pg_schema: str, s3_prefix: str) -> dict[str, str]:
    """Environment for subprocesses: os.environ + the stack + this test's schema/prefix
    (the warehouse schema and the control store's schema share the name)."""
    return {
        **os.environ,
        **stack.env(),
        "SHARDLINE_WAREHOUSE_SCHEMA": pg_schema,
        "SHARDLINE_CONTROL_SCHEMA": pg_schema,
        "SHARDLINE_S3_PREFIX": s3_prefix,
    }


@pytest.fixture(scope="session")
def rs_stack(tmp_path_factory: pytest.TempPathFactory,
             _dummy_aws_credentials: None) -> Iterator[StackInfo]:
    """A second stack whose warehouse is redshift-like (SERIALIZABLE, 300 ms per COMMIT)."""
    dir = tmp_path_factory.mktemp("redshift-like")
    try:
        info = devstack.up(dir, warehouse="redshift-like", commit_latency_ms=300)
    except BaseException:
        devstack.down(dir)
        raise
    try:
        yield info
    finally:
        devstack.down(dir)


@pytest.fixture
def rs_schema(rs_stack: StackInfo):
    """(schema, autocommit warehouse connection through the relay, control store) on the
    redshift-like stack; the schema is dropped in both databases afterwards."""
    from shardline.controlstore.postgres import PostgresStore

    schema = f"t_{uuid.uuid4().hex[:8]}"
    admin = [psycopg2.connect(dsn) for dsn in (rs_stack.direct_dsn, rs_stack.control_dsn)]
    for conn in admin:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE SCHEMA "{schema}"')
    conn = psycopg2.connect(rs_stack.dsn, options=f"-c search_path={schema}")
    conn.autocommit = True
    store = PostgresStore(rs_stack.control_dsn, schema)
    store.create_tables()
    try:
        yield schema, conn, store
    finally:
        store.close()
        conn.close()
        for c in admin:
            with c.cursor() as cur:
                cur.execute("SET lock_timeout = '10s'")
                cur.execute(f'DROP SCHEMA "{schema}" CASCADE')
            c.close()


@pytest.fixture
def control_store(stack: StackInfo, pg_schema: str):
    """The control store (PostgreSQL backend) in this test's schema, tables created."""
    from shardline.controlstore.postgres import PostgresStore

    store = PostgresStore(stack.control_dsn, pg_schema)
    store.create_tables()
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def control_conn(stack: StackInfo, pg_schema: str) -> Iterator[psycopg2.extensions.connection]:
    """Autocommit connection to the control database with search_path = pg_schema."""
    yield from _schema_conn(stack.control_dsn, pg_schema)


@pytest.fixture(scope="session")
def _kinesis_client(stack: StackInfo):
    return stack.client("kinesis")


@pytest.fixture(scope="session")
def _s3_client(stack: StackInfo):
    return stack.client("s3")


@pytest.fixture
def kinesis(_kinesis_client):
    """boto3 Kinesis client for the stack's kinesalite (shared; clients are stateless)."""
    return _kinesis_client


@pytest.fixture
def s3(_s3_client):
    """boto3 S3 client for the stack's moto server (shared; clients are stateless)."""
    return _s3_client


@pytest.fixture
def pg_conn(stack: StackInfo, pg_schema: str) -> Iterator[psycopg2.extensions.connection]:
    """Autocommit connection to the `shardline` database with search_path = pg_schema."""
    yield from _schema_conn(stack.dsn, pg_schema)


def _schema_conn(dsn: str, schema: str) -> Iterator[psycopg2.extensions.connection]:
    conn = psycopg2.connect(dsn, options=f"-c search_path={schema}")
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()

