"""Backends for the loader contract suite: the same scenarios, two warehouses.

- ``postgres``: the real local stack (moto S3 + PostgreSQL) through tests/conftest.py;
  the scenarios execute and check the stored rows.
- ``redshift-like-serializable`` / ``redshift-like-snapshot``: the same on the Redshift
  stand-in (``devstack up --warehouse redshift-like``: 300 ms per COMMIT, no index on
  event_id, BRIN on occurred_at) under each of Redshift's isolation levels (``--isolation``;
  SNAPSHOT is PostgreSQL's REPEATABLE READ), with the PostgreSQL control store beside it;
- ``redshift``: no Redshift here; a recording fake connection keeps the load record, an
  in-memory control store the ledger, and the scenarios check the plan (SQL text).
"""
from __future__ import annotations

from typing import Any

import pytest

from shardline import devstack
from shardline.devstack.common import ISOLATIONS
from tests.contract.loader_kit import Backend, PostgresBackend, RedshiftBackend


def _postgres_backend(request: Any) -> PostgresBackend:
    stack = request.getfixturevalue("stack")
    request.getfixturevalue("stack_env")
    return PostgresBackend(stack.env(), request.getfixturevalue("pg_conn"),
                           request.getfixturevalue("pg_schema"),
                           request.getfixturevalue("s3"),
                           request.getfixturevalue("s3_prefix"),
                           request.getfixturevalue("control_store"))


def _redshift_like_backend(request: Any, isolation: str) -> PostgresBackend:
    rs = request.getfixturevalue("rs_stack")
    # the stack's default isolation for this test's sessions; back to the recorded one after
    devstack.up(rs.dir, isolation=isolation)
    request.addfinalizer(lambda: devstack.up(rs.dir, isolation=rs.isolation))
    schema, conn, store = request.getfixturevalue("rs_schema")
    return PostgresBackend(rs.env(), conn, schema, rs.client("s3"),
                           request.getfixturevalue("s3_prefix"), store, target="redshift-like",
                           isolation=ISOLATIONS[isolation])


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.integration),
                        *(pytest.param(f"redshift-like-{level}", marks=pytest.mark.integration)
                          for level in ISOLATIONS),
                        "redshift"])
def backend(request: Any) -> Backend:
    if request.param == "postgres":
        return _postgres_backend(request)
    if request.param.startswith("redshift-like-"):
        return _redshift_like_backend(request, request.param.removeprefix("redshift-like-"))
    return RedshiftBackend()

