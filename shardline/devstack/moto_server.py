"""moto's server (S3 and DynamoDB on one port) with DynamoDB requests taken one at a time.

moto applies a ``ConditionExpression`` as read, check, write with no lock, and its server is
threaded, so two concurrent conditional writes to one item can both succeed (measured: four
threads marking the same five pending files loaded flipped six). DynamoDB never allows that,
and the control store's fencing and idempotent ledger inserts rest on it. One lock around
DynamoDB requests (``X-Amz-Target: DynamoDB_20120810.*``) restores the guarantee; S3 requests
stay concurrent. Otherwise this is ``moto_server -H HOST -p PORT``.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any, Callable, Iterable


class SerialDynamoDB:
    """WSGI middleware: DynamoDB calls run, and their answers are read, under one lock."""

    def __init__(self, app: Callable[..., Iterable[bytes]]):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any],
                 start_response: Callable[..., Any]) -> Iterable[bytes]:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return self.app(environ, start_response)
        with self.lock:
            result = self.app(environ, start_response)
            try:
                return [b"".join(result)]
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()


def main(argv: list[str] | None = None) -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication, MotoRequestHandler, create_backend_app,
    )  # fmt: skip
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(prog="python -m shardline.devstack.moto_server")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, SerialDynamoDB(app), threaded=True,
               request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
