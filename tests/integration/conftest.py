"""Fixtures shared by the integration tests."""
from __future__ import annotations

import pytest

from shardline import clients
from shardline.settings import load
from tests.stub_stage import Rig


@pytest.fixture
def rig_settings() -> dict[str, str]:
    """Extra SHARDLINE_* settings for the rig's consumers; a test module overrides it."""
    return {}


@pytest.fixture
def rig(stack_env, pg_schema, pg_conn, stream_name, kinesis, rig_settings):
    """A stream, a stub stage worker and consumer subprocesses for one test."""
    r = Rig(stack_env, pg_schema, pg_conn, stream_name, kinesis, **rig_settings)
    yield r
    r.cleanup()


@pytest.fixture
def warehouse_connect(stack, pg_schema):
    """A connect function for the test's schema, made the way the pipeline makes it."""
    settings = load(None, env={"SHARDLINE_WAREHOUSE_DSN": stack.env()["SHARDLINE_WAREHOUSE_DSN"],
                               "SHARDLINE_WAREHOUSE_SCHEMA": pg_schema})
    return lambda: clients.warehouse_connect(settings)
