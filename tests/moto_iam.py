"""moto's server as tests/integration/test_deploy_stack.py runs it: the devstack's
(``shardline.devstack.moto_server``: DynamoDB requests serialised), with its IAM check
made to ask what AWS asks: DynamoDB requests checked resource by resource, S3 requests
under their IAM action names.

moto's IAM check (on after ``/moto-api/reset-auth``) checks the action of every request, but
passes ``*`` as the resource of a DynamoDB request, so a policy naming its tables could not
be checked at all. Here a DynamoDB request's resource is its table's ARN (with
``/index/NAME`` for a Query or Scan of an index), and a ``TransactWriteItems`` is checked
item by item as ``PutItem``, ``UpdateItem``, ``DeleteItem`` or ``ConditionCheckItem`` on the
item's table: AWS has no ``dynamodb:TransactWriteItems`` action, it authorises each item
("Using IAM with DynamoDB transactions", DynamoDB Developer Guide).

moto names the action of an S3 request after its API operation (``s3:ListObjectsV2``), but
IAM has no such action: AWS checks ``s3:ListBucket`` for it ("Amazon S3 API operations and
permissions", S3 User Guide), so a correct policy would be refused. Here the operations
whose IAM action has another name are checked under that name.

With ``MOTO_IAM_LOG=FILE`` every request the check let through is appended to FILE as a JSON
line ``[access key, action, resource]``: the deploy test checks that each right of a policy
was used.

    python -m tests.moto_iam -p PORT     (from the repository root)
"""
from __future__ import annotations

import json
import os
import re
import sys
import threading
from typing import Any

# A transaction item's kind -> the IAM action AWS checks for it.
TRANSACT_ITEM_ACTIONS = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                         "ConditionCheck": "ConditionCheckItem"}
# S3 API operation -> the IAM action AWS checks for it, where the names differ.
S3_IAM_ACTIONS = {
    "ListObjectsV2": "ListBucket", "ListObjects": "ListBucket", "HeadBucket": "ListBucket",
    "ListObjectVersions": "ListBucketVersions", "HeadObject": "GetObject",
    "CreateMultipartUpload": "PutObject", "UploadPart": "PutObject",
    "CompleteMultipartUpload": "PutObject", "ListParts": "ListMultipartUploadParts",
    "ListMultipartUploads": "ListBucketMultipartUploads", "DeleteObjects": "DeleteObject",
}


_LOG_LOCK = threading.Lock()


def log_allowed(handler: Any, action: str, resource: str) -> None:
    path = os.environ.get("MOTO_IAM_LOG")
    if not path:
        return
    found = re.search(r"Credential=([^/]+)/[^/]+/[^/]+/([^/]+)/",
                      handler.headers.get("Authorization", ""))
    if not found:
        return
    key, service = found.groups()
    with _LOG_LOCK, open(path, "a") as out:
        out.write(json.dumps([key, f"{service}:{action}", resource]) + "\n")


def _checked(handler: Any, plain: Any, action: str, resource: str, *args: Any) -> None:
    """``plain(handler, *args)`` with the check naming ``action``; logged if allowed."""
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    handler._get_action = lambda: action  # the check names the action _get_action gives
    try:
        plain(handler, *args)
    finally:
        del handler._get_action
    if ActionAuthenticatorMixin.request_count >= settings.INITIAL_NO_AUTH_ACTION_COUNT:
        log_allowed(handler, action, resource)


def table_arn(handler: Any, table: str, index: str | None = None) -> str:
    arn = f"arn:aws:dynamodb:{handler.region}:{handler.current_account}:table/{table}"
    return f"{arn}/index/{index}" if index else arn


def patch_dynamodb() -> None:
    from moto.dynamodb.responses import DynamoHandler

    plain = DynamoHandler._authenticate_and_authorize_normal_action

    def determine_resource(self: Any) -> str:
        # self.body is the parsed request here (DynamoHandler.call_action sets it)
        body = self.body if isinstance(self.body, dict) else {}
        if "TableName" in body:
            return table_arn(self, body["TableName"], body.get("IndexName"))
        return "*"  # ListTables: no resource, as on AWS

    def authorize(self: Any, resource: str = "*") -> None:
        action = self._get_action()
        if action != "TransactWriteItems":
            _checked(self, plain, action, resource, resource)
            return
        for entry in self.body.get("TransactItems", []):
            (kind, item), = entry.items()
            arn = table_arn(self, item["TableName"])
            _checked(self, plain, TRANSACT_ITEM_ACTIONS[kind], arn, arn)

    DynamoHandler._determine_resource = determine_resource
    DynamoHandler._authenticate_and_authorize_normal_action = authorize


def patch_s3() -> None:
    from moto.s3.responses import S3Response

    plain = S3Response._authenticate_and_authorize_s3_action

    def authorize(self: Any, bucket_name: str | None = None,
                  key_name: str | None = None) -> None:
        operation = self._get_action()
        action = S3_IAM_ACTIONS.get(operation, operation)
        arn = f"{bucket_name or '*'}/{key_name}" if key_name else (bucket_name or "*")
        _checked(self, plain, action, f"arn:aws:s3:::{arn}", bucket_name, key_name)

    S3Response._authenticate_and_authorize_s3_action = authorize


def main(argv: list[str] | None = None) -> None:
    from shardline.devstack import moto_server

    patch_dynamodb()
    patch_s3()
    moto_server.main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
