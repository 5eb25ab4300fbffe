"""boto3 clients for the emulators (kinesalite, moto S3), with the dummy credentials.

One shared session (its parsed service models are reused by every client) and cached
fail-fast clients for the health checks. boto3 is imported lazily: ``devstack env`` and
``devstack status`` do not need it.
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any

from .common import DUMMY_AWS_ENV, http_url

if TYPE_CHECKING:  # boto3 and botocore have no types here: Any to mypy, named for the reader
    import boto3
    from botocore.client import BaseClient

_BOTO_LOCK = threading.Lock()


@functools.lru_cache(maxsize=None)
def _boto_session() -> boto3.session.Session:
    """One shared session: creating clients from it reuses the parsed service models."""
    import boto3  # imported lazily: `devstack env/status` do not need it

    return boto3.session.Session()


def boto_client(service: str, endpoint_url: str, **kwargs: Any) -> BaseClient:
    params = {
        "endpoint_url": endpoint_url,
        "region_name": DUMMY_AWS_ENV["AWS_DEFAULT_REGION"],
        "aws_access_key_id": DUMMY_AWS_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": DUMMY_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    }
    params.update(kwargs)
    with _BOTO_LOCK:  # sessions are not thread-safe, the clients they make are
        return _boto_session().client(service, **params)


@functools.lru_cache(maxsize=32)
def probe_client(service: str, port: int) -> BaseClient:
    """A client that fails fast, for health checks."""
    import botocore.config

    config = botocore.config.Config(
        connect_timeout=1, read_timeout=2, retries={"max_attempts": 1, "mode": "standard"}
    )
    return boto_client(service, http_url(port), config=config)


def warm_up_clients(ports: dict[str, int]) -> None:
    """Build the probe clients ahead of time (boto3 import and model loading are slow)."""
    probe_client("kinesis", ports["kinesis"])
    probe_client("s3", ports["s3"])
    probe_client("dynamodb", ports["s3"])
