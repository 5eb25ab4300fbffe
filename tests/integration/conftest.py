"""Fixtures shared by the consumer integration tests."""
from __future__ import annotations

import pytest

from tests.stub_stage import Rig


@pytest.fixture
def rig(stack_env, pg_schema, pg_conn, stream_name, kinesis):
    """A stream, a stub stage worker and consumer subprocesses for one test."""
    r = Rig(stack_env, pg_schema, pg_conn, stream_name, kinesis)
    yield r
    r.cleanup()
