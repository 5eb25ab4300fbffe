"""WSGI and ASGI middleware: one page-view event per request, through a ``Producer``.

The event is a valid page view by docs/events.md (``shardline.sample.event_rules.check``
accepts it): a uuid4 ``event_id``, ``occurred_at`` in UTC, the absolute ``url`` as
requested (scheme and host as the client saw them behind a load balancer), ``referrer``,
``user_agent``, the client ``ip`` and a ``session_id`` from a cookie whose name you
choose (a new session gets a new id and, with ``set_cookie``, the cookie). Text is cut
to the warehouse's byte limits (``page_view.MAX_BYTES``) at a character boundary, NULs
are removed.

Client IP behind proxies: ``trusted_proxies`` is how many proxies (load balancers)
stand in front of the app; each appends the address it saw to ``X-Forwarded-For``.
The client is the address that many hops left of the peer, so a client cannot
choose its IP by sending its own header. 0 = the peer address itself.

Recording costs one ``Producer.put`` (microseconds); it never waits on Kinesis.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import random
import re
import uuid
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Mapping, Protocol
from urllib.parse import quote

from shardline.logs import get_logger
from shardline.producer.page_view import MAX_BYTES

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

log = get_logger("producer.middleware")

# ASGI's scope and messages are plain dicts the server fills (no types ship with it).
Scope = dict[str, Any]
Message = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                   Awaitable[None]]
PageView = dict[str, str | None]


class EventSink(Protocol):
    """What the middleware records into: a ``Producer`` (or anything with its ``put``)."""

    def put(self, event: Mapping[str, str | None]) -> object: ...

_SESSION_OK = re.compile(r"[A-Za-z0-9._~:-]{1,128}")
_HOST_OK = re.compile(r"[^/?#\s]+")
DEFAULT_SKIP = ("/static/", "/favicon.ico", "/healthz", "/metrics")


def _cut(text: str, limit: int) -> str:
    text = text.replace("\x00", "")
    raw = text.encode("utf-8", "replace")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")


def _ip(text: str) -> str | None:
    text = text.strip()
    if text.startswith("["):  # "[2001:db8::1]:443"
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # "203.0.113.7:51234"
        text = text.partition(":")[0]
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def client_ip(forwarded_for: str | None, peer: str | None, trusted_proxies: int) -> str:
    """The client address: ``trusted_proxies`` hops left of the peer in X-Forwarded-For."""
    chain = [a for a in (forwarded_for or "").split(",") if a.strip()] if trusted_proxies else []
    chain.append(peer or "")
    pick = chain[-(trusted_proxies + 1)] if len(chain) > trusted_proxies else chain[0]
    return _ip(pick) or _ip(peer or "") or "0.0.0.0"


def new_session_id() -> str:
    return "s-%016x" % random.getrandbits(64)


class PageViews:
    """What both middlewares share: the options and building the event."""

    def __init__(self, producer: EventSink, *, session_cookie: str = "sid",
                 trusted_proxies: int = 1,
                 set_cookie: bool = True, cookie_max_age_s: int = 30 * 60,
                 skip_prefixes: Iterable[str] = DEFAULT_SKIP, methods: Iterable[str] = ("GET",),
                 user_id: Callable[[Any], str | None] | None = None):
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", session_cookie):
            raise ValueError(f"session_cookie {session_cookie!r}: use 1-64 of A-Z a-z 0-9 _ -")
        if trusted_proxies < 0:
            raise ValueError("trusted_proxies must be >= 0")
        self.producer = producer
        self.cookie, self.trusted, self.set_cookie = session_cookie, trusted_proxies, set_cookie
        self.max_age = cookie_max_age_s
        self.skip = tuple(skip_prefixes)
        self.methods = frozenset(m.upper() for m in methods)
        self.user_id = user_id

    def record(self, **fields: Any) -> None:
        """put() the page view; a failure here must never fail the request itself."""
        try:
            self.producer.put(self.event(**fields))
        except Exception:  # noqa: BLE001 - logged; the page is served anyway
            log.exception("recording a page view failed")

    def wanted(self, method: str, path: str) -> bool:
        return method in self.methods and not path.startswith(self.skip)

    def session(self, cookie_header: str | None) -> tuple[str, bool]:
        """(session id, new?) from the Cookie header."""
        for part in (cookie_header or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == self.cookie and _SESSION_OK.fullmatch(value.strip('"')):
                return value.strip('"'), False
        return new_session_id(), True

    def set_cookie_header(self, session_id: str) -> str:
        return (f"{self.cookie}={session_id}; Path=/; Max-Age={self.max_age}; HttpOnly; "
                f"SameSite=Lax")

    def event(self, *, scheme: str, host: str, target: str, referrer: str | None,
              user_agent: str | None, ip: str, session_id: str,
              user_id: str | None) -> PageView:
        host = host.strip() if _HOST_OK.fullmatch(host.strip() or "-") else "unknown.invalid"
        scheme = scheme if scheme in ("http", "https") else "http"
        if not target.startswith("/"):
            target = "/" + target
        return {
            "event_id": str(uuid.UUID(int=random.getrandbits(128), version=4)),
            "occurred_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds"),
            "url": _cut(f"{scheme}://{host or 'unknown.invalid'}{target}", MAX_BYTES["url"]),
            "referrer": _cut(referrer, MAX_BYTES["referrer"]) if referrer else None,
            "user_agent": _cut(user_agent or "", MAX_BYTES["user_agent"]),
            "ip": ip,
            "user_id": _cut(user_id, MAX_BYTES["user_id"]) if user_id else None,
            "session_id": session_id,
        }


class WSGIMiddleware:
    """``app = WSGIMiddleware(app, producer, session_cookie="sid")``."""

    def __init__(self, app: WSGIApplication, producer: EventSink, **options: Any):
        self.app = app
        self.views = PageViews(producer, **options)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse
                 ) -> Iterable[bytes]:
        views = self.views
        path = environ.get("PATH_INFO", "")
        if not views.wanted(environ.get("REQUEST_METHOD", ""), path):
            return self.app(environ, start_response)
        session_id, new = views.session(environ.get("HTTP_COOKIE"))
        trusted = views.trusted
        proto = environ.get("HTTP_X_FORWARDED_PROTO", "").split(",")[0].strip() \
            if trusted else ""
        host = (environ.get("HTTP_X_FORWARDED_HOST", "").split(",")[0].strip() if trusted
                else "") or environ.get("HTTP_HOST") or \
            f"{environ.get('SERVER_NAME', '')}:{environ.get('SERVER_PORT', '')}"
        target = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
        if not target or target.startswith(("http://", "https://")):
            raw = path.encode("latin-1", "replace").decode("utf-8", "replace")
            target = quote(environ.get("SCRIPT_NAME", "") + raw, safe="/%:@!$&'()*+,;=~-._")
            if environ.get("QUERY_STRING"):
                target += "?" + environ["QUERY_STRING"]
        views.record(
            scheme=proto or environ.get("wsgi.url_scheme", "http"), host=host, target=target,
            referrer=environ.get("HTTP_REFERER"), user_agent=environ.get("HTTP_USER_AGENT"),
            ip=client_ip(environ.get("HTTP_X_FORWARDED_FOR"), environ.get("REMOTE_ADDR"),
                         trusted),
            session_id=session_id, user_id=views.user_id(environ) if views.user_id else None)
        if not (new and views.set_cookie):
            return self.app(environ, start_response)
        cookie = ("Set-Cookie", views.set_cookie_header(session_id))

        def start(status: str, headers: list[tuple[str, str]],
                  exc_info: OptExcInfo | None = None) -> Callable[[bytes], object]:
            return start_response(status, list(headers) + [cookie], exc_info) \
                if exc_info is not None else start_response(status, list(headers) + [cookie])

        return self.app(environ, start)


class ASGIMiddleware:
    """``app = ASGIMiddleware(app, producer, session_cookie="sid")`` (HTTP scopes only)."""

    def __init__(self, app: ASGIApp, producer: EventSink, **options: Any):
        self.app = app
        self.views = PageViews(producer, **options)

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        views = self.views
        if scope.get("type") != "http" or not views.wanted(scope.get("method", ""),
                                                            scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        headers: dict[str, str] = {}
        for name, value in scope.get("headers") or ():
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        session_id, new = views.session(headers.get("cookie"))
        trusted = views.trusted
        proto = headers.get("x-forwarded-proto", "").split(",")[0].strip() if trusted else ""
        server = scope.get("server") or ("", None)
        host = (headers.get("x-forwarded-host", "").split(",")[0].strip() if trusted else "") \
            or headers.get("host") or f"{server[0]}:{server[1]}"
        raw_path = scope.get("raw_path") or quote(scope.get("path", "/")).encode()
        target = (scope.get("root_path", "") + raw_path.decode("latin-1")
                  .encode("latin-1").decode("utf-8", "replace"))
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        client = scope.get("client") or ("", None)
        views.record(
            scheme=proto or scope.get("scheme", "http"), host=host, target=target,
            referrer=headers.get("referer"), user_agent=headers.get("user-agent"),
            ip=client_ip(headers.get("x-forwarded-for"), client[0], trusted),
            session_id=session_id, user_id=views.user_id(scope) if views.user_id else None)
        if not (new and views.set_cookie):
            await self.app(scope, receive, send)
            return
        cookie = (b"set-cookie", views.set_cookie_header(session_id).encode("latin-1"))

        async def send_with_cookie(message: Message) -> None:
            if message.get("type") == "http.response.start":
                message = {**message, "headers": list(message.get("headers") or []) + [cookie]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)
