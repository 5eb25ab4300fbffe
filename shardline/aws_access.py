"""What an AWS call's failure at a command's start means, for a person: the service did not
answer at all (``Unreachable``: a wrong endpoint or region) or refused the caller
(``AccessDenied``: the IAM policy lacks the action). Used by ``shardline.preflight`` and by
the control store's own schema check (DynamoDB), which preflight calls.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from shardline.errors import AccessDenied, ShardlineError, Unreachable

# AWS's answers to a caller its policy does not allow (or whose credentials it rejects).
DENIED_CODES = frozenset({
    "AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AuthorizationError",
    "UnrecognizedClientException", "InvalidClientTokenId", "InvalidAccessKeyId",
    "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException",
})


def http_status(exc: BaseException) -> int:
    """The HTTP status of a botocore ``ClientError`` (0 without a response)."""
    meta = (getattr(exc, "response", None) or {}).get("ResponseMetadata") or {}
    return int(meta.get("HTTPStatusCode") or 0)


@contextlib.contextmanager
def aws_errors(action: str, resource: str, service: str, endpoint: str,
               endpoint_setting: str) -> Iterator[None]:
    """An unanswered call -> ``Unreachable``, a refused one -> ``AccessDenied`` (naming the
    IAM ``action`` on ``resource``; "dynamodb:{operation}" names the call that was refused);
    anything else is raised unchanged."""
    from shardline.kinesis import error_code, is_connection_error
    from shardline.lifecycle import first_line

    try:
        yield
    except ShardlineError:
        raise
    except Exception as exc:  # noqa: BLE001 - classified here, re-raised if unknown
        if is_connection_error(exc):
            raise Unreachable(f"{service} at {endpoint} is unreachable ({type(exc).__name__}): "
                              f"check {endpoint_setting} (empty for AWS) and aws.region"
                              ) from None
        code = error_code(exc)
        if code in DENIED_CODES or http_status(exc) == 403:
            message = ((getattr(exc, "response", None) or {}).get("Error") or {}).get("Message")
            said = f"{code}: {first_line(message)}" if message else f"{code}"
            named = action.format(operation=getattr(exc, "operation_name", "?"))
            raise AccessDenied(f"{named} on {resource} ({said}): allow it in the IAM policy "
                               f"of this host's role") from None
        raise
