"""The one Kinesis adapter: the client, ListShards, and what an AWS error means.

Everything that talks to Kinesis (consumers, the producer, ``status``,
``supervisor-config``, ``replay``) builds its client here and lists shards here;
the only thing that differs between local and production is the endpoint URL
in the settings. Errors are classified by AWS error code and HTTP status, never
by message text.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

from shardline.errors import (ConfigError, IteratorExpired, ServiceUnavailable, ShardlineError,
                              ThrottledError)

if TYPE_CHECKING:
    from shardline.settings import Settings

# botocore's Kinesis client (and the test doubles standing in for it). boto3 ships no types
# and boto3-stubs is not a dependency, so the client and its JSON answers are Any; the name
# says which client a parameter wants.
KinesisClient = Any
# One entry of GetRecords' ``Records``, as botocore decodes it.
RawRecord = dict[str, Any]

THROTTLE_CODES = frozenset({
    "ProvisionedThroughputExceededException", "LimitExceededException", "ThrottlingException",
    "Throttling", "RequestLimitExceeded", "KMSThrottlingException", "SlowDown",
})
EXPIRED_CODES = frozenset({"ExpiredIteratorException"})
UNAVAILABLE_CODES = frozenset({
    "InternalFailure", "InternalFailureException", "InternalServerError", "ServiceUnavailable",
    "ServiceUnavailableException", "RequestTimeout",
})
# A PutRecords entry (or call) failing with one of these is worth another try.
RETRIABLE_CODES = THROTTLE_CODES | UNAVAILABLE_CODES


class StreamNotFound(ConfigError):
    """The stream does not exist (a typo, or it was deleted)."""


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ``ClientError`` (``HTTP<status>`` if it has none)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = (response.get("Error") or {}).get("Code")
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if not code and status:
            return f"HTTP{status}"
        return code
    return None


def is_connection_error(exc: BaseException) -> bool:
    """True for botocore connection / HTTP client errors (no response at all)."""
    from botocore.exceptions import ConnectionError as BotoConnectionError, HTTPClientError

    return isinstance(exc, (BotoConnectionError, HTTPClientError))


def classify(exc: BaseException) -> ShardlineError | None:
    """The shardline error for a botocore exception, or None when it is not transient."""
    if is_connection_error(exc):
        return ServiceUnavailable(f"kinesis connection: {type(exc).__name__}")
    code = error_code(exc)
    if code is None:
        return None
    operation = getattr(exc, "operation_name", "kinesis")
    status = int(((getattr(exc, "response", None) or {}).get("ResponseMetadata") or {})
                 .get("HTTPStatusCode", 0) or 0)
    text = f"{operation}: {code}"
    if code in EXPIRED_CODES:
        return IteratorExpired(text)
    if code in THROTTLE_CODES:
        return ThrottledError(text)
    if code in UNAVAILABLE_CODES or status >= 500:
        return ServiceUnavailable(text)
    return None


def call(fn: Callable[..., Any], **kwargs: Any) -> Any:
    """One Kinesis call with botocore errors mapped to shardline classes."""
    try:
        return fn(**kwargs)
    except Exception as exc:  # noqa: BLE001 - mapped or re-raised unchanged
        mapped = classify(exc)
        if mapped is not None:
            raise mapped from exc
        if error_code(exc) == "ResourceNotFoundException":
            stream = kwargs.get("StreamName", "")
            raise StreamNotFound(f"stream {stream!r} (or a shard of it) does not exist "
                                 f"(ResourceNotFoundException); create it with `shardline "
                                 f"create-stream --stream {stream or 'S'} --shards N`") from None
        raise


def _epoch_seconds(value: Any) -> Any:
    """JSON-protocol timestamps are epoch numbers: keep them as they are.

    botocore's default builds a tzlocal() datetime per record, about a third of the CPU
    of a 10,000-record GetRecords, which the consumer then turned straight back into a
    number; anything that is not a number goes to botocore's own parser.
    """
    if isinstance(value, (int, float)):
        return value
    from botocore.utils import parse_timestamp

    return parse_timestamp(value)


# botocore's loader caches every file it parses for as long as it lives, and a client keeps
# its session's loader (for paginators and waiters). endpoints.json (1.2 MB, every service of
# every partition, about 8 MB of objects once parsed) is read only to build the session's
# endpoint resolver while the client is made, and of it a Kinesis client looks up one service.
# Kept whole, it was an eighth of a consumer's memory; freed later, the heap stays as large
# (its objects interleave with the client's), so it is trimmed as soon as it is parsed.
_ENDPOINTS = "endpoints"
# What a Kinesis client's session looks up in endpoints.json: Kinesis, and the services its
# credential providers call through the same session (AssumeRole's STS, SSO's portal and
# OIDC); any other service would resolve to its partition's default hostname.
CLIENT_ENDPOINTS = ("kinesis", "sts", "portal.sso", "oidc", "sso")


class _CacheWithoutEndpoints(dict[tuple[Any, ...], Any]):
    """A loader cache (``botocore.loaders.instance_cache`` keeps results in the instance's
    ``_cache`` dict) that does not keep endpoints.json."""

    def __setitem__(self, key: tuple[Any, ...], value: Any) -> None:
        if key != ("load_data_with_path", _ENDPOINTS):
            super().__setitem__(key, value)


def _loader(data_path: str | None, services: Iterable[str]) -> Any:
    """A botocore loader (the session's search paths) that hands out endpoints.json with
    only ``services`` in each partition, and does not keep it."""
    from botocore.loaders import Loader

    keep = frozenset(services)

    class ClientLoader(Loader):
        def load_data_with_path(self, name: str) -> tuple[Any, str]:
            data, path = super().load_data_with_path(name)
            if name != _ENDPOINTS:
                return data, path
            trimmed = {**data, "partitions": [
                {**partition, "services": {k: v for k, v in partition["services"].items()
                                           if k in keep}}
                for partition in data["partitions"]]}
            # Fresh objects (a JSON round trip of the small part): objects kept from the
            # parse would pin the parse's arenas, and the heap would not shrink.
            return json.loads(json.dumps(trimmed)), path

    paths = [os.path.expanduser(os.path.expandvars(p))
             for p in data_path.split(os.pathsep)] if data_path else None
    loader = ClientLoader(extra_search_paths=paths)  # botocore.loaders.create_loader's paths
    loader._cache = _CacheWithoutEndpoints()
    return loader


def kinesis_client(settings: Settings, *, botocore_retries: int = 1,
                   raw_timestamps: bool = False) -> KinesisClient:
    """The Kinesis client. botocore retries once by default: callers back off themselves.

    ``raw_timestamps=True`` (the consumer's hot path) leaves timestamps such as
    ``ApproximateArrivalTimestamp`` as epoch seconds instead of datetimes.
    One client per process: it keeps its connection pool (and TLS sessions).
    A botocore client, made without boto3: boto3's session adds nothing to a Kinesis client
    but its imports (about 3 MB in each consumer).
    """
    import botocore.session
    from botocore.config import Config

    config = Config(retries={"max_attempts": botocore_retries, "mode": "standard"},
                    connect_timeout=5, read_timeout=30, max_pool_connections=32)
    core = botocore.session.Session()
    core.register_component("data_loader",
                            _loader(core.get_config_variable("data_path"), CLIENT_ENDPOINTS))
    if raw_timestamps:
        from botocore.parsers import ResponseParserFactory

        factory = ResponseParserFactory()
        factory.set_parser_defaults(timestamp_parser=_epoch_seconds)
        core.register_component("response_parser_factory", factory)
    return core.create_client(
        "kinesis", region_name=settings.aws.region or None,
        endpoint_url=settings.kinesis.endpoint_url or None, config=config)


@dataclass(frozen=True)
class ShardInfo:
    """One shard as ListShards describes it."""

    shard_id: str
    parent: str | None = None
    adjacent_parent: str | None = None
    closed: bool = False
    starting_hash_key: int = 0

    @property
    def is_open(self) -> bool:
        return not self.closed

    @property
    def parents(self) -> tuple[str, ...]:
        return tuple(p for p in (self.parent, self.adjacent_parent) if p)


def list_shards(client: KinesisClient, stream: str) -> list[ShardInfo]:
    """Every shard of the stream (ListShards, following NextToken), in hash-key order.

    Raises ``StreamNotFound`` for a missing stream, a ``RetriableError`` for a transient
    failure (the caller decides how long to retry).
    """
    out: list[ShardInfo] = []
    args: dict[str, Any] = {"StreamName": stream}
    while True:
        resp = call(client.list_shards, **args)
        for s in resp.get("Shards", []):
            out.append(ShardInfo(
                s["ShardId"], s.get("ParentShardId"), s.get("AdjacentParentShardId"),
                "EndingSequenceNumber" in s.get("SequenceNumberRange", {}),
                int(s.get("HashKeyRange", {}).get("StartingHashKey", 0))))
        token = resp.get("NextToken")
        if not token:
            break
        args = {"NextToken": token}
    return sorted(out, key=lambda s: (s.starting_hash_key, s.shard_id))


def open_shards(client: KinesisClient, stream: str) -> list[ShardInfo]:
    """The stream's open shards, in hash-key order."""
    return [s for s in list_shards(client, stream) if s.is_open]


class ShardMap:
    """Which open shard a partition key's MD5 hash falls in (as Kinesis routes it)."""

    def __init__(self, shards: Iterable[ShardInfo]):
        opened = sorted((s for s in shards if s.is_open), key=lambda s: s.starting_hash_key)
        self.shard_ids = [s.shard_id for s in opened]
        self._starts = [s.starting_hash_key for s in opened]

    def __len__(self) -> int:
        return len(self.shard_ids)

    def slot(self, partition_key: str | bytes) -> int:
        """Index of the shard for ``partition_key`` (0 when the map is empty)."""
        if len(self._starts) <= 1:
            return 0
        raw = partition_key.encode("utf-8") if isinstance(partition_key, str) else partition_key
        h = int.from_bytes(hashlib.md5(raw).digest(), "big")
        return max(0, bisect.bisect_right(self._starts, h) - 1)
