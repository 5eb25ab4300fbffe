"""An IAM check in front of kinesalite, which takes any key: a proxy that lets a Kinesis
request through only if the caller's policy allows its action on its stream.

kinesalite is the project's Kinesis stand-in (moto's Kinesis is not usable for the pipeline:
/work/shared/local-stack-facts.md) and checks no credentials. So that the deploy test
(tests/integration/test_deploy_stack.py) also holds each component to its role's Kinesis
rights, the components talk to kinesalite through this proxy. It evaluates the policy with
moto's own evaluator (``moto.iam.access_control.IAMPolicy``, as the S3 and DynamoDB checks
do), for the action named by ``X-Amz-Target`` and the stream's ARN, and answers a refusal
as Kinesis does (HTTP 400, ``AccessDeniedException``). The caller is the access key of the
request's ``Authorization`` header; signatures are not verified (moto checks those of S3
and DynamoDB requests, made with the same keys).

``GetRecords`` names no stream, only an iterator: the proxy remembers the stream of every
iterator it handed out (``GetShardIterator``, and each ``NextShardIterator``).
"""
from __future__ import annotations

import http.client
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import urlsplit

# access key -> the policy documents (JSON text) of its user; None: an unknown key
Policies = Callable[[str], "list[str] | None"]


class KinesisIamProxy:
    def __init__(self, upstream: str, policies: Policies, account: str):
        self.upstream = urlsplit(upstream)
        self.policies, self.account = policies, account
        self.iterators: dict[str, str] = {}  # shard iterator -> stream name
        self.allowed: list[tuple[str, str, str]] = []  # (access key, action, resource) let by
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "KinesisIamProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- the check ----------------------------------------------------------------------
    def refusal(self, headers: dict[str, str], body: dict) -> str | None:
        """Why the request may not pass, or None."""
        from moto.iam.access_control import IAMPolicy, PermissionResult

        scope = re.search(r"Credential=([^/]+)/[^/]+/([^/]+)/", headers.get("authorization", ""))
        if not scope:
            return "no credentials"
        key, region = scope.groups()
        action = "kinesis:" + headers.get("x-amz-target", "").rpartition(".")[2]
        stream = body.get("StreamName") or (body.get("StreamARN") or "").rpartition("/")[2]
        if not stream and "ShardIterator" in body:
            with self.lock:
                stream = self.iterators.get(body["ShardIterator"], "")
        resource = (f"arn:aws:kinesis:{region}:{self.account}:stream/{stream}" if stream
                    else "*")
        documents = self.policies(key)
        if documents is None:
            return f"unknown access key {key}"
        results = [IAMPolicy(doc).is_action_permitted(action, resource) for doc in documents]
        if PermissionResult.DENIED in results or PermissionResult.PERMITTED not in results:
            return f"{key} is not authorized to perform: {action} on resource: {resource}"
        with self.lock:
            self.allowed.append((key, action, resource))
        return None

    def remember(self, stream: str, answer: dict) -> None:
        it = answer.get("ShardIterator") or answer.get("NextShardIterator")
        if stream and it:
            with self.lock:
                self.iterators[it] = stream

    # -- HTTP ---------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as botocore expects

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                why = proxy.refusal(headers, body)
                if why is not None:
                    self._answer(400, json.dumps({"__type": "AccessDeniedException",
                                                  "message": why}).encode())
                    return
                stream = body.get("StreamName") or ""
                if not stream and "ShardIterator" in body:
                    with proxy.lock:
                        stream = proxy.iterators.get(body["ShardIterator"], "")
                conn = http.client.HTTPConnection(proxy.upstream.hostname,
                                                  proxy.upstream.port, timeout=60)
                try:
                    conn.request("POST", self.path, raw, {
                        k: v for k, v in self.headers.items()
                        if k.lower() not in ("host", "connection")})
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                if resp.status == 200 and stream:
                    try:
                        proxy.remember(stream, json.loads(data))
                    except ValueError:
                        pass
                self._answer(resp.status, data, resp.getheader("Content-Type"))

            def _answer(self, status: int, data: bytes,
                        content_type: str | None = "application/x-amz-json-1.1") -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type or "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler
