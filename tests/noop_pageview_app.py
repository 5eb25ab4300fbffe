"""examples/pageview_app.py with its producer replaced by one that does nothing.

The baseline of the front-end benchmark and test: the same site, middleware and gunicorn
config, every request still builds its page-view event, but ``put()`` only returns. The
difference in request latency against the real app is what the producer costs a request.
"""
from __future__ import annotations

from typing import Mapping

from examples.pageview_app import COOKIE, PROXIES, site
from shardline.producer.middleware import WSGIMiddleware


class NoopProducer:
    """The part of ``Producer``'s API the middleware and gunicorn config use, doing nothing."""

    def put(self, event: Mapping[str, object] | bytes, partition_key: str | None = None
            ) -> bool:
        return True

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> bool:
        return True


app = WSGIMiddleware(site, NoopProducer(), session_cookie=COOKIE, trusted_proxies=PROXIES)
