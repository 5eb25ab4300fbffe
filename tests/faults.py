"""Fault injection on real clients for consumer tests.

``KinesisFaults``: botocore event hooks on a real client (kinesalite) that answer
GetRecords with ExpiredIteratorException, ProvisionedThroughputExceededException,
HTTP 500 or a slow answer, as scheduled. kinesalite never throttles and its
iterators live 300 s, so these faults must be made by hand. In-memory doubles
(FakeKinesis, FakeS3, ...) are in ``tests/fakes.py``.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import EndpointConnectionError


class KinesisFaults:
    """Scheduled GetRecords faults on a real boto3 Kinesis client (botocore hooks).

    ``schedule`` maps the n-th GetRecords call (1-based) to a fault: "expired",
    "throttled", "500", "conn", or ("slow", seconds). Returning a response from a
    ``before-call`` handler short-circuits the HTTP request, like a real answer.
    """

    def __init__(self, client: Any, schedule: dict[int, Any]):
        self.schedule = dict(schedule)
        self.calls = 0
        self.injected: list[Any] = []
        self._lock = threading.Lock()
        client.meta.events.register("before-call.kinesis.GetRecords", self._before)

    def _before(self, **kwargs: Any) -> Any:
        with self._lock:
            self.calls += 1
            fault = self.schedule.pop(self.calls, None)
        if fault is None:
            return None
        self.injected.append(fault)
        if isinstance(fault, tuple) and fault[0] == "slow":
            time.sleep(fault[1])
            return None
        if fault == "conn":
            raise EndpointConnectionError(endpoint_url="http://injected")
        codes = {"expired": ("ExpiredIteratorException", 400),
                 "throttled": ("ProvisionedThroughputExceededException", 400),
                 "500": ("InternalFailure", 500)}
        code, status = codes[fault]
        return (_FakeHttp(status), {"Error": {"Code": code, "Message": f"injected {code}"},
                                    "ResponseMetadata": {"HTTPStatusCode": status}})


@dataclass
class _FakeHttp:
    status_code: int
    headers: dict = field(default_factory=dict)
    content: bytes = b""


class DenyingEndpoint:
    """An AWS endpoint that refuses every call as IAM does when a policy lacks the action.

    Neither kinesalite nor moto's servers (as the stack runs them) check permissions, so a
    first-run test points one service's endpoint here: JSON services (Kinesis, DynamoDB)
    get AccessDeniedException naming the action, S3 gets 403 AccessDenied (HEAD: no body,
    as on AWS).
    """

    ACCOUNT_ARN = "arn:aws:iam::123456789012:user/first-run"

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        denier = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test's output is the command's."""

            def _deny(self, body: bool) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                target = self.headers.get("X-Amz-Target", "")
                if target:  # JSON protocol: Kinesis_20131202.ListShards, DynamoDB_20120810...
                    service = "kinesis" if target.startswith("Kinesis") else "dynamodb"
                    action = f"{service}:{target.rsplit('.', 1)[-1]}"
                    denier.denied.append(action)
                    payload = json.dumps({
                        "__type": "AccessDeniedException",
                        "message": f"User: {denier.ACCOUNT_ARN} is not authorized to perform: "
                                   f"{action}"}).encode()
                    self.send_response(400)
                    self.send_header("Content-Type", "application/x-amz-json-1.1")
                else:
                    denier.denied.append(f"s3:{self.command}")
                    payload = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied"
                               b"</Code><Message>Access Denied</Message></Error>") if body else b""
                    self.send_response(403)
                    self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if body:
                    self.wfile.write(payload)

            def do_POST(self) -> None:
                self._deny(True)

            do_GET = do_PUT = do_DELETE = do_POST

            def do_HEAD(self) -> None:
                self._deny(False)

        self.denied: list[str] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> DenyingEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
