"""The WSGI and ASGI middleware record one valid page view per request."""
from __future__ import annotations

import asyncio
import json

import pytest

from shardline.sample.event_rules import check
from shardline.producer.middleware import ASGIMiddleware, WSGIMiddleware, client_ip


class Recorder:
    """Stands in for a Producer: keeps what put() got."""

    def __init__(self):
        self.events: list[dict] = []

    def put(self, event, partition_key=None) -> bool:
        self.events.append(check(json.dumps(event).encode()))  # valid by docs/events.md
        return True


def site(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def call(app, **environ):
    env = {"REQUEST_METHOD": "GET", "PATH_INFO": "/p", "QUERY_STRING": "", "SERVER_NAME": "srv",
           "SERVER_PORT": "80", "wsgi.url_scheme": "http", "REMOTE_ADDR": "10.0.0.9", **environ}
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"], seen["headers"] = status, headers

    body = b"".join(app(env, start_response))
    return seen, body


def test_wsgi_records_a_valid_page_view_and_sets_a_session_cookie():
    rec = Recorder()
    app = WSGIMiddleware(site, rec, session_cookie="sl_sid")
    seen, body = call(app, RAW_URI="/products/linen-shirt?color=blue&q=a%20b",
                      HTTP_HOST="shop.example.com", HTTP_X_FORWARDED_PROTO="https",
                      HTTP_X_FORWARDED_FOR="198.51.100.1, 203.0.113.7",
                      HTTP_REFERER="https://www.google.com/", HTTP_USER_AGENT="Mozilla/5.0 X")
    assert body == b"hello" and seen["status"] == "200 OK"
    (event,) = rec.events
    assert event["url"] == "https://shop.example.com/products/linen-shirt?color=blue&q=a%20b"
    assert event["ip"] == "203.0.113.7"  # one trusted proxy: the address it appended
    assert event["referrer"] == "https://www.google.com/"
    assert event["user_agent"] == "Mozilla/5.0 X" and event["user_id"] is None
    cookie = dict(seen["headers"])["Set-Cookie"]
    assert cookie.startswith(f"sl_sid={event['session_id']};") and "HttpOnly" in cookie

    seen, _ = call(app, HTTP_COOKIE=f"a=1; sl_sid={event['session_id']}", HTTP_HOST="h")
    assert rec.events[1]["session_id"] == event["session_id"]
    assert "Set-Cookie" not in dict(seen["headers"])  # known session: no new cookie


def test_wsgi_skips_what_is_not_a_page_and_cuts_long_fields():
    rec = Recorder()
    app = WSGIMiddleware(site, rec, trusted_proxies=0)
    call(app, PATH_INFO="/static/app.js")
    call(app, REQUEST_METHOD="POST")
    assert rec.events == []
    call(app, PATH_INFO="/\xc3\xa9 x", QUERY_STRING="q=" + "z" * 5000,
         HTTP_USER_AGENT="u\x00" * 900, HTTP_X_FORWARDED_FOR="6.6.6.6")
    (event,) = rec.events
    assert len(event["url"].encode()) == 2048 and event["url"].startswith("http://srv:80/%C3%A9%20x?q=zz")
    assert "\x00" not in event["user_agent"] and len(event["user_agent"].encode()) <= 1024
    assert event["ip"] == "10.0.0.9"  # no trusted proxy: X-Forwarded-For is not believed


@pytest.mark.parametrize("xff,peer,trusted,want", [
    ("203.0.113.7", "10.0.0.1", 1, "203.0.113.7"),
    ("6.6.6.6, 203.0.113.7", "10.0.0.1", 1, "203.0.113.7"),   # a spoofed first hop
    ("203.0.113.7, 10.0.0.2", "10.0.0.1", 2, "203.0.113.7"),
    ("", "10.0.0.1", 1, "10.0.0.1"),
    ("garbage", "10.0.0.1", 1, "10.0.0.1"),
    ("[2001:db8::7]:443", "10.0.0.1", 1, "2001:db8::7"),
    ("203.0.113.7:5123", "10.0.0.1", 1, "203.0.113.7"),
    (None, None, 1, "0.0.0.0"),
])
def test_client_ip(xff, peer, trusted, want):
    assert client_ip(xff, peer, trusted) == want


def test_asgi_records_a_page_view_and_adds_the_cookie_to_the_response():
    rec = Recorder()

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    mw = ASGIMiddleware(app, rec)
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request"}

    scope = {"type": "http", "method": "GET", "scheme": "http", "path": "/cart",
             "raw_path": b"/cart", "query_string": b"x=1", "root_path": "",
             "server": ("127.0.0.1", 8000), "client": ("10.0.0.1", 5555),
             "headers": [(b"host", b"shop.example.com"), (b"user-agent", b"curl/8.5.0"),
                         (b"x-forwarded-for", b"198.51.100.23"),
                         (b"x-forwarded-proto", b"https")]}
    asyncio.run(mw(scope, receive, send))
    (event,) = rec.events
    assert event["url"] == "https://shop.example.com/cart?x=1"
    assert event["ip"] == "198.51.100.23" and event["user_agent"] == "curl/8.5.0"
    headers = dict(sent[0]["headers"])
    assert headers[b"set-cookie"].startswith(f"sid={event['session_id']};".encode())
    asyncio.run(mw({"type": "lifespan"}, receive, send))  # not HTTP: passed through
    assert len(rec.events) == 1


def test_a_failing_producer_never_fails_the_request():
    class Broken:
        def put(self, event, partition_key=None):
            raise RuntimeError("boom")

    seen, body = call(WSGIMiddleware(site, Broken()))
    assert seen["status"] == "200 OK" and body == b"hello"
