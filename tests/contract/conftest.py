"""Backends for the loader contract suite: the same scenarios, two warehouses.

- ``postgres``: the real local stack (moto S3 + PostgreSQL) through tests/conftest.py;
  the scenarios execute and check the stored rows.
- ``redshift``: no Redshift here; a recording fake connection answers the ledger and the
  scenarios check the generated plan (SQL text) instead of rows.
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
                           request.getfixturevalue("s3_prefix"))


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.integration), "redshift"])
def backend(request: Any) -> Backend:
    if request.param == "postgres":
        return _postgres_backend(request)
    return RedshiftBackend()

