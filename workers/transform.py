"""The default transform: one page-view event (a parsed JSON object) -> its warehouse columns.

A transform is ``callable(event: dict) -> dict`` named by its table's ``transform`` in the
tables file (``package.module:function``, docs/tables.md; resolved by ``load_transform``). It returns the
*event-derived* columns of the target table; the stage worker adds the Kinesis position columns
(``shard_id``, ``sequence_number``, ``sub_sequence_number``, ``arrival_time``)
and ``staged_at``, then checks every value against the table spec (NOT NULL,
type, UTF-8 byte length, no NUL). Raising anything rejects the record: it goes
to the dead-letter object with reason ``transform: <ExcType>: <message>``.

Timestamp columns are returned as *aware* ``datetime`` objects; the worker
converts them to UTC.

Page-view input (JSON object):

=============  ==========================================  ======================
field          accepted                                    column(s)
=============  ==========================================  ======================
event_id       UUID string (any case, 8-4-4-4-12 hex)      event_id (lower case)
occurred_at    ISO-8601 string WITH a zone (Z, +05:30...)  occurred_at (UTC)
url            absolute http/https URL with a host         url, url_host, url_path,
                                                           url_query
referrer       string or null ("" counts as null)          referrer, referrer_host
user_agent     string                                      user_agent, device_class
ip             IPv4 or IPv6 address string                 ip_prefix
user_id        string or null                              user_id
session_id     string                                      session_id
=============  ==========================================  ======================

``occurred_at`` accepts what ``datetime.fromisoformat`` (Python 3.11) reads, which
includes the basic form (``20261126T100000Z``) and week dates; fractions beyond
microseconds are truncated. A time without a zone is rejected: it is ambiguous.

Derived columns:

- ``url_host``: the host name, lower case, without port or user info;
  ``url_path``: the path ("/" when empty); ``url_query``: the query string
  without "?" (NULL when absent or empty); the fragment is dropped. Path and
  query are kept exactly as sent (spaces, quotes, tabs, newlines, non-ASCII).
- ``referrer_host``: the referrer's host name when it parses as a URL with a
  host, else NULL (NULL when there is no referrer).
- ``ip_prefix``: the address's network, never the address: IPv4 /24
  (``203.0.113.7`` -> ``203.0.113.0/24``), IPv6 /48 (``2001:db8:1:2::5`` ->
  ``2001:db8:1::/48``); an IPv4-mapped IPv6 address is treated as IPv4.
- ``device_class`` from the user agent, first rule that matches (the same rules as
  the reference ``shardline.producer.events.classify_user_agent``):

  1. ``bot``: "bot" at a word end or before "/", crawl, spider, slurp,
     facebookexternalhit, headless (case-insensitive);
  2. ``tablet``: iPad, Tablet, Kindle, Silk/, PlayBook (case-insensitive), or
     "Android" without "Mobile";
  3. ``mobile``: Mobi, iPhone, iPod, Android, Windows Phone (case-insensitive);
  4. ``desktop``: Windows NT, Macintosh, X11, CrOS (case-insensitive);
  5. ``other``: anything else (curl, smart TVs, an empty user agent...).
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import ipaddress
import re
import socket
from datetime import datetime, timezone
from typing import Any, Callable

from shardline.errors import BadRecord, ConfigError

Transform = Callable[[dict], dict]

# The version of the default transform (``transform_version``): change it with the rules.
VERSION = "page_view-1"
MAX_VERSION_BYTES = 64  # staged_files.transform_version, page_views.transform_version

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# scheme://authority path ?query #fragment. Split by hand rather than with urlsplit,
# which silently deletes tabs and newlines (WHATWG) so url_path would disagree with url;
# page URLs with odd text in the query are valid events and must survive exactly.
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^?#]*)(?:\?([^#]*))?(?:#.*)?\Z",
                  re.DOTALL)
_HOST_BAD_CHARS = re.compile(r"[\x00-\x20\x7f-\x9f]")

# Lower-cased substring tests: ~15x faster than IGNORECASE regex alternations.
_BOT_WORD = re.compile(r"bot\b|bot/")
_BOT_WORDS = ("crawl", "spider", "slurp", "facebookexternalhit", "headless")
_TABLET_WORDS = ("ipad", "tablet", "kindle", "silk/", "playbook")
_MOBILE_WORDS = ("mobi", "iphone", "ipod", "android", "windows phone")
_DESKTOP_WORDS = ("windows nt", "macintosh", "x11", "cros")

UTC = timezone.utc
_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"
# Dotted quad, 0-255 without leading zeros (like ipaddress), ASCII digits only.
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(r"\.".join([_OCTET] * 4))


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _require_str(event: dict, name: str) -> str:
    value = event.get(name)
    if type(value) is not str:
        if value is None and name not in event:
            raise BadRecord(f"{name}: missing")
        raise BadRecord(f"{name}: expected a string, got {_type_name(value)}")
    return value


def _optional_str(event: dict, name: str) -> str | None:
    value = event.get(name)
    if value is not None and type(value) is not str:
        raise BadRecord(f"{name}: expected a string or null, got {_type_name(value)}")
    return value


def parse_timestamp(text: str, name: str = "occurred_at") -> datetime:
    """ISO-8601 with a zone -> aware UTC datetime; naive or malformed -> BadRecord."""
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise BadRecord(f"{name}: not an ISO-8601 timestamp: {text[:64]!r}") from None
    if ts.tzinfo is UTC:  # most events ("Z", "+00:00"): astimezone would return ts itself
        return ts
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise BadRecord(f"{name}: no time zone (naive timestamps are ambiguous): {text[:64]!r}")
    try:
        return ts.astimezone(UTC)
    except OverflowError:
        raise BadRecord(f"{name}: out of range in UTC: {text[:64]!r}") from None


def _host(authority: str) -> str:
    """Authority ("user@host:port", "[v6]:port") -> lower-case host; ValueError if malformed."""
    hostport = authority.rpartition("@")[2]
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise ValueError("unclosed [ in the IPv6 host")
        host, rest = hostport[1:end], hostport[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError("text after the IPv6 host")
        port = rest[1:]
    else:
        host, _, port = hostport.partition(":")
    if port and not (port.isascii() and port.isdigit() and int(port) <= 65535):
        raise ValueError(f"bad port {port[:16]!r}")
    if not host:
        raise ValueError("no host")
    if _HOST_BAD_CHARS.search(host):
        raise ValueError("whitespace or control characters in the host")
    return host.lower()


def split_url(url: str) -> tuple[str, str, str | None]:
    """Absolute http(s) URL -> (host, path, query or None); the fragment is dropped.

    Path and query are kept exactly as sent (any text, percent-encoded or not).
    """
    m = _URL.match(url)
    if m is None or m.group(1).lower() not in ("http", "https"):
        raise BadRecord(f"url: not an absolute http(s) URL: {url[:64]!r}")
    _, authority, path, query = m.groups()
    try:
        host = _host(authority)
    except ValueError as exc:
        if str(exc) == "no host":
            raise BadRecord(f"url: has no host: {url[:64]!r}") from None
        raise BadRecord(f"url: does not parse: {exc}") from None
    return host, path or "/", query or None


def url_host(url: str) -> str | None:
    """Host of a referrer (any scheme://), or None when it has none or does not parse."""
    m = _URL.match(url)
    if m is None:
        return None
    try:
        return _host(m.group(2))
    except ValueError:
        return None


def _ipv4_prefix(text: str) -> str | None:
    m = _IPV4.fullmatch(text)
    return f"{m[1]}.{m[2]}.{m[3]}.0/24" if m else None


def ip_prefix(text: str) -> str:
    """IPv4 -> its /24 network, IPv6 -> its /48, as ``network/len`` text."""
    if ":" not in text:
        prefix = _ipv4_prefix(text)
        if prefix is None:
            raise BadRecord(f"ip: not an IP address: {text[:64]!r}")
        return prefix
    try:
        packed = socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError):
        try:  # zone ids ("fe80::1%eth0") and other forms inet_pton refuses
            packed = ipaddress.IPv6Address(text).packed
        except ValueError:
            raise BadRecord(f"ip: not an IP address: {text[:64]!r}") from None
    if packed[:12] == _V4_MAPPED:
        return f"{packed[12]}.{packed[13]}.{packed[14]}.0/24"
    groups = [packed[0] << 8 | packed[1], packed[2] << 8 | packed[3], packed[4] << 8 | packed[5]]
    # The five zero groups at the end are the longest zero run, so "::" goes there
    # (RFC 5952), swallowing any trailing zero groups of the prefix too.
    while groups and groups[-1] == 0:
        groups.pop()
    return ":".join(f"{g:x}" for g in groups) + "::/48"


@functools.lru_cache(maxsize=8192)  # user agents repeat a lot: most calls are a dict hit
def device_class(user_agent: str) -> str:
    low = user_agent.lower()
    if ("bot" in low and _BOT_WORD.search(low)) or any(w in low for w in _BOT_WORDS):
        return "bot"
    if any(w in low for w in _TABLET_WORDS) or ("Android" in user_agent
                                                and "Mobile" not in user_agent):
        return "tablet"
    if any(w in low for w in _MOBILE_WORDS):
        return "mobile"
    if any(w in low for w in _DESKTOP_WORDS):
        return "desktop"
    return "other"


# Page URLs, referrers and addresses repeat (a session's views share its IP, sites
# share paths and referrers): bounded caches of the pure parsers. Errors are not
# cached (lru_cache does not keep exceptions), so a bad value raises every time. Only
# values up to CACHE_MAX_CHARS are cached: an entry keeps its key, and a stream of
# unique 1 MB URLs must not hold gigabytes (each cache stays under ~10 MB).
CACHE_MAX_CHARS = 256
_split_url = functools.lru_cache(maxsize=8192)(split_url)
_url_host = functools.lru_cache(maxsize=8192)(url_host)
_ip_prefix = functools.lru_cache(maxsize=8192)(ip_prefix)
_classify_user_agent = device_class.__wrapped__
_uuid_match = _UUID.fullmatch


def page_view(event: dict) -> dict[str, Any]:
    """The default transform: a page-view event -> its page_views columns."""
    get = event.get
    event_id = get("event_id")
    if type(event_id) is not str:
        event_id = _require_str(event, "event_id")
    if not _uuid_match(event_id):
        raise BadRecord(f"event_id: not a UUID: {event_id[:64]!r}")
    occurred_at = get("occurred_at")
    if type(occurred_at) is not str:
        occurred_at = _require_str(event, "occurred_at")
    occurred_at = parse_timestamp(occurred_at)
    url = get("url")
    if type(url) is not str:
        url = _require_str(event, "url")
    host, path, query = (_split_url if len(url) <= CACHE_MAX_CHARS else split_url)(url)
    referrer = get("referrer")
    if referrer is not None and type(referrer) is not str:
        _optional_str(event, "referrer")  # raises
    user_agent = get("user_agent")
    if type(user_agent) is not str:
        user_agent = _require_str(event, "user_agent")
    ip = get("ip")
    if type(ip) is not str:
        ip = _require_str(event, "ip")
    user_id = get("user_id")
    if user_id is not None and type(user_id) is not str:
        _optional_str(event, "user_id")  # raises
    session_id = get("session_id")
    if type(session_id) is not str:
        session_id = _require_str(event, "session_id")
    referrer = referrer or None
    return {
        "event_id": event_id.lower(),
        "occurred_at": occurred_at,
        "url": url,
        "url_host": host,
        "url_path": path,
        "url_query": query,
        "referrer": referrer,
        "referrer_host": None if referrer is None else
        (_url_host if len(referrer) <= CACHE_MAX_CHARS else url_host)(referrer),
        "user_agent": user_agent,
        "device_class": (device_class if len(user_agent) <= CACHE_MAX_CHARS
                         else _classify_user_agent)(user_agent),
        "ip_prefix": (_ip_prefix if len(ip) <= CACHE_MAX_CHARS else ip_prefix)(ip),
        "user_id": user_id,
        "session_id": session_id,
    }


# -- loading transforms (tables file, worker.transform), their versions -------------
def transform_version(func: Transform) -> str:
    """Which transform made a row: the ``VERSION`` string its module declares (a function
    attribute ``VERSION`` wins), else ``sha1:`` + 12 hex digits of the module's source, so
    any code change is a new version even when nobody bumps a string. Recorded in the
    ledger, the load record and every row (docs/iterating.md)."""
    declared = getattr(func, "VERSION", None)
    module = inspect.getmodule(func)
    if declared is None and module is not None:
        declared = getattr(module, "VERSION", None)
    if declared is not None:
        text = str(declared)
        if not text or len(text.encode("utf-8")) > MAX_VERSION_BYTES:
            raise ConfigError(f"transform VERSION {text[:80]!r} must be 1-{MAX_VERSION_BYTES} "
                              "bytes")
        return text
    try:
        source = inspect.getsource(module if module is not None else func)
    except (OSError, TypeError):  # no source (a C function, a REPL lambda): its name
        source = f"{getattr(func, '__module__', '?')}:{getattr(func, '__qualname__', '?')}"
    return "sha1:" + hashlib.sha1(source.encode("utf-8")).hexdigest()[:12]


def load_table_transforms(tables: Any, settings: Any = None) -> dict[str, Transform]:
    """Each table's transform (table name -> callable), the tables file's ``python_path``
    put first on ``sys.path``; ``worker.transform`` (when set) replaces the transform of
    table ``worker.target_table``. ConfigError naming the table when one does not import."""
    import sys

    for directory in reversed(tables.python_path):
        if directory not in sys.path:
            sys.path.insert(0, directory)
    override = settings.worker.transform if settings is not None else ""
    target = settings.worker.target_table if settings is not None else ""
    if override and target not in tables:
        raise ConfigError(f"worker.target_table {target!r}: no such table in the tables file "
                          f"{tables.source} (worker.transform overrides a table's transform)")
    out = {}
    for spec in tables.tables:
        if override and spec.name == target:
            out[spec.name] = load_transform(override)
        else:
            out[spec.name] = load_transform(
                spec.transform, f"tables file {tables.source}: [tables.{spec.name}] transform")
    return out


def table_transform(settings: Any, table: str | None = None) -> Transform:
    """The transform the stage workers run for ``table`` (default: the tables file's first),
    as they load it: what ``reprocess`` and ``redrive`` compare versions with."""
    from shardline.tables import load_tables

    tables = load_tables(settings)
    return load_table_transforms(tables, settings)[table or tables.names[0]]


def load_transform(path: str, what: str = "worker.transform") -> Transform:
    """``package.module:function`` -> the callable; ConfigError naming ``what`` if not."""
    module_name, sep, func_name = path.partition(":")
    if not sep or not module_name or not func_name:
        raise ConfigError(f"{what} {path!r} must look like package.module:function")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or the module raising at import
        raise ConfigError(f"{what} {path!r}: cannot import {module_name}: "
                          f"{type(exc).__name__}: {exc}") from None
    func = getattr(module, func_name, None)
    if func is None:
        raise ConfigError(f"{what} {path!r}: module {module_name} has no "
                          f"attribute {func_name}")
    if not callable(func):
        raise ConfigError(f"{what} {path!r}: {func_name} is a "
                          f"{type(func).__name__}, not a callable")
    return func
