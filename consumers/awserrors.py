"""botocore errors -> shardline error classes, by error code and HTTP status, never by message."""
from __future__ import annotations

from typing import Any

from shardline.errors import IteratorExpired, ServiceUnavailable, ShardlineError, ThrottledError

THROTTLE_CODES = frozenset({
    "ProvisionedThroughputExceededException", "LimitExceededException", "ThrottlingException",
    "Throttling", "RequestLimitExceeded", "KMSThrottlingException", "SlowDown",
})
EXPIRED_CODES = frozenset({"ExpiredIteratorException"})
UNAVAILABLE_CODES = frozenset({
    "InternalFailure", "InternalFailureException", "InternalServerError", "ServiceUnavailable",
    "ServiceUnavailableException",
})


def map_error(exc: BaseException) -> ShardlineError | None:
    """The shardline error for a botocore exception, or None when it is not transient."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(exc, ClientError):
        err: dict[str, Any] = exc.response.get("Error", {}) or {}
        code = str(err.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        text = f"{exc.operation_name}: {code or 'HTTP ' + str(status)}"
        if code in EXPIRED_CODES:
            return IteratorExpired(text)
        if code in THROTTLE_CODES:
            return ThrottledError(text)
        if code in UNAVAILABLE_CODES or status >= 500:
            return ServiceUnavailable(text)
        return None
    if isinstance(exc, (ConnectionError, HTTPClientError)):
        return ServiceUnavailable(f"kinesis connection: {type(exc).__name__}")
    return None
