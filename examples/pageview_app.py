"""A small site that records a page view per request through shardline's Producer.

Run it (settings from SHARDLINE_* variables or shardline.ini: kinesis.stream,
kinesis.endpoint_url, and [producer] options such as spool_dir)::

    gunicorn -c examples/gunicorn.conf.py examples.pageview_app:app      # WSGI, 4 workers
    python examples/pageview_app.py --port 8000                           # wsgiref, one process
    # ASGI: any ASGI server, e.g. `uvicorn examples.pageview_app:asgi_app`

The Producer is made (and prepared: its Kinesis client made) at import, so with
``--preload`` it is made once in the gunicorn master; each forked worker starts its own
background thread at its first request, with the master's unused client
(shardline.producer.producer: fork safety). ``/metrics`` exports the
producer's counters (all workers together when PROMETHEUS_MULTIPROC_DIR is set).
"""
from __future__ import annotations

import argparse
import html
import os
import signal
import threading
from typing import Any, Callable, Iterable

from shardline.producer.middleware import ASGIMiddleware, WSGIMiddleware
from shardline.producer.producer import Producer
from shardline.settings import load

PAGES = {
    "/": "Home",
    "/products": "All products",
    "/products/linen-shirt": "Linen shirt",
    "/products/wool-scarf": "Wool scarf",
    "/cart": "Your cart",
    "/blog/how-we-ship-faster": "How we ship faster",
}
COOKIE = os.environ.get("PAGEVIEW_SESSION_COOKIE", "sid")
PROXIES = int(os.environ.get("PAGEVIEW_TRUSTED_PROXIES", "1"))

# prepare(): the client is made here, once, in the master; not behind each worker's first
# requests.
producer = Producer.from_settings(load()).prepare()


def metrics_body() -> tuple[bytes, str]:
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, REGISTRY, generate_latest

    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry), CONTENT_TYPE_LATEST


def page(path: str) -> tuple[str, bytes]:
    title = PAGES.get(path)
    if title is None:
        return "404 Not Found", b"<h1>Not found</h1>"
    links = "".join(f'<li><a href="{p}">{html.escape(t)}</a></li>' for p, t in PAGES.items())
    return "200 OK", f"<h1>{html.escape(title)}</h1><ul>{links}</ul>".encode()


def site(environ: dict, start_response: Callable) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    if path == "/healthz":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    if path == "/metrics":
        body, ctype = metrics_body()
        start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
        return [body]
    status, body = page(path)
    start_response(status, [("Content-Type", "text/html; charset=utf-8"),
                            ("Content-Length", str(len(body)))])
    return [body]


async def asgi_site(scope: dict, receive: Callable, send: Callable) -> Any:
    if scope["type"] != "http":
        return
    status, body = page(scope.get("path", "/"))
    await send({"type": "http.response.start", "status": int(status.split()[0]),
                "headers": [(b"content-type", b"text/html; charset=utf-8")]})
    await send({"type": "http.response.body", "body": body})


app = WSGIMiddleware(site, producer, session_cookie=COOKIE, trusted_proxies=PROXIES)
asgi_app = ASGIMiddleware(asgi_site, producer, session_cookie=COOKIE, trusted_proxies=PROXIES)


def main() -> None:
    from wsgiref.simple_server import make_server

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    with make_server("127.0.0.1", args.port, app) as server:
        # Ctrl-C or SIGTERM ends serve_forever between requests: a KeyboardInterrupt raised
        # inside a request would be caught by wsgiref's error handler and the server would
        # go on serving. shutdown() waits for serve_forever, so it runs on a thread of its own.
        def stop(signum: int, frame: object) -> None:
            threading.Thread(target=server.shutdown, daemon=True).start()

        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        print(f"serving on http://127.0.0.1:{args.port}/ (Ctrl-C to stop)")
        server.serve_forever()
    producer.close()


if __name__ == "__main__":
    main()
