"""Backends for the loader contract suite: the same scenarios, two warehouses.

- ``postgres``: the real local stack (moto S3 + PostgreSQL) through tests/conftest.py;
  the scenarios execute and check the stored rows.
- ``redshift-like``: the same on the Redshift stand-in (``devstack up --warehouse
  redshift-like``: SERIALIZABLE, 300 ms per COMMIT, no index on event_id, BRIN on
  occurred_at), with the PostgreSQL control store beside it;
- ``redshift``: no Redshift here; a recording fake connection keeps the load record, an
  in-memory control store the ledger, and the scenarios check the plan (SQL text).
"""
from __future__ import annotations

from typing import Any

import pytest

from tests.contract.loader_kit import Backend, PostgresBackend, RedshiftBackend


def _postgres_backend(request: Any) -> PostgresBackend:
    stack = request.getfixturevalue("stack")
    request.getfixturevalue("stack_env")
    return PostgresBackend(stack.env(), request.getfixturevalue("pg_conn"),
                           request.getfixturevalue("pg_schema"),
                           request.getfixturevalue("s3"),
                           request.getfixturevalue("s3_prefix"),
                           request.getfixturevalue("control_store"))


def _redshift_like_backend(request: Any) -> PostgresBackend:
    rs = request.getfixturevalue("rs_stack")
    schema, conn, store = request.getfixturevalue("rs_schema")
    return PostgresBackend(rs.env(), conn, schema, rs.client("s3"),
                           request.getfixturevalue("s3_prefix"), store, target="redshift-like")


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.integration),
                        pytest.param("redshift-like", marks=pytest.mark.integration),
                        "redshift"])
def backend(request: Any) -> Backend:
    if request.param == "postgres":
        return _postgres_backend(request)
    if request.param == "redshift-like":
        return _redshift_like_backend(request)
    return RedshiftBackend()

