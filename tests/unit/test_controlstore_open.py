"""``open_store(settings)``: the [control] section picks the backend; nothing connects."""
from __future__ import annotations

import pytest

from shardline import settings
from shardline.controlstore import open_store
from shardline.controlstore.dynamodb import DynamoStore
from shardline.controlstore.postgres import PostgresStore
from shardline.errors import ConfigError


def test_postgres_backend_gets_its_own_dsn_and_schema() -> None:
    s = settings.load(None, env={"SHARDLINE_CONTROL_DSN": "host=db dbname=ctl user=u",
                                 "SHARDLINE_CONTROL_SCHEMA": "ops",
                                 "SHARDLINE_WAREHOUSE_DSN": "host=rs dbname=dw user=u"})
    store = open_store(s, clock=lambda: 0.0)
    assert isinstance(store, PostgresStore)
    assert (store.dsn, store.schema) == ("host=db dbname=ctl user=u", "ops")
    assert store.now().year == 1970  # the injected clock


def test_postgres_backend_never_falls_back_to_the_warehouse() -> None:
    s = settings.load(None, env={"SHARDLINE_WAREHOUSE_DSN": "host=rs dbname=dw user=u"})
    with pytest.raises(ConfigError, match="control.dsn is required"):
        open_store(s)


def test_dynamodb_backend_uses_endpoint_and_prefix() -> None:
    s = settings.load(None, env={"SHARDLINE_CONTROL_BACKEND": "dynamodb",
                                 "SHARDLINE_CONTROL_DYNAMODB_ENDPOINT_URL": "http://127.0.0.1:9",
                                 "SHARDLINE_CONTROL_TABLE_PREFIX": "prod_",
                                 "SHARDLINE_AWS_REGION": "eu-west-1"})
    store = open_store(s)
    assert isinstance(store, DynamoStore)
    assert store.t["leases"] == "prod_leases"
    assert store.client.meta.endpoint_url == "http://127.0.0.1:9"
    assert store.client.meta.region_name == "eu-west-1"


@pytest.mark.parametrize("key, value", [("SHARDLINE_CONTROL_BACKEND", "etcd"),
                                        ("SHARDLINE_CONTROL_TABLE_PREFIX", "bad prefix!"),
                                        ("SHARDLINE_CONTROL_SCHEMA", "Ops"),
                                        ("SHARDLINE_CONTROL_CONNECT_TIMEOUT_S", "0"),
                                        ("SHARDLINE_CONTROL_COLOUR", "blue")])
def test_bad_control_settings_name_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key.removeprefix("SHARDLINE_CONTROL_").lower()):
        settings.load(None, env={key: value})
