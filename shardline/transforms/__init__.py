"""The API for transform authors: what a transform receives, returns and raises, and the
helpers that read an event's fields with the dead-letter reasons shardline uses itself.

A transform is a plain function named by its table's ``transform`` in the tables file
(``module:function``, docs/tables.md "Writing a transform")::

    from shardline.transforms import Event, Row, require_str, require_timestamp, require_uuid

    def signup(event: Event) -> Row:
        return {"event_id": require_uuid(event, "event_id"),
                "occurred_at": require_timestamp(event, "occurred_at"),
                "plan": require_str(event, "plan")}

It gets the event (the record's JSON object) and returns the table's *event* columns; the
stage worker adds the system columns (Kinesis position, arrival and staging times) and
checks every value against the table's columns. Raising rejects the record: it becomes a
dead letter with the reason ``transform: <ExceptionType>: <message>``. The helpers raise
``BadRecord`` with a message that names the field (``transform: BadRecord: url: missing``).

This module is core: it imports nothing from the workers, so a transform importing it
pulls in no worker code.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Callable, Union

from shardline.errors import BadRecord

__all__ = ["BadRecord", "ColumnValue", "Event", "JSONValue", "Row", "Transform", "UUID",
           "optional_int", "optional_str", "parse_timestamp", "require_int", "require_str",
           "require_timestamp", "require_uuid", "split_url", "type_name",
           "url_host"]

# What json.loads makes of a record: the event a transform receives is a JSON object.
JSONValue = Union[str, int, float, bool, None, list["JSONValue"], dict[str, "JSONValue"]]
Event = dict[str, JSONValue]
# What a column may be given (docs/tables.md, "Types"): text, integers, numbers, booleans,
# aware datetimes for timestamps, None for NULL.
ColumnValue = Union[str, int, float, bool, datetime, None]
Row = dict[str, ColumnValue]
Transform = Callable[[Event], Row]

UTC = timezone.utc
# 8-4-4-4-12 hex digits, any case
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
# scheme://authority path ?query #fragment. Split by hand rather than with urlsplit,
# which silently deletes tabs and newlines (WHATWG) so a path would disagree with its
# URL; page URLs with odd text in the query are valid events and must survive exactly.
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^?#]*)(?:\?([^#]*))?(?:#.*)?\Z",
                  re.DOTALL)
_HOST_BAD_CHARS = re.compile(r"[\x00-\x20\x7f-\x9f]")


def type_name(value: object) -> str:
    """The name a reason gives a value's type: ``null`` for None, else the Python type."""
    return "null" if value is None else type(value).__name__


# -- required and optional fields ---------------------------------------------------
def require_str(event: Event, name: str) -> str:
    """The field as a string; ``<name>: missing`` or ``<name>: expected a string, got <type>``."""
    value = event.get(name)
    if type(value) is not str:
        if value is None and name not in event:
            raise BadRecord(f"{name}: missing")
        raise BadRecord(f"{name}: expected a string, got {type_name(value)}")
    return value


def optional_str(event: Event, name: str) -> str | None:
    """The field as a string, None when absent or null."""
    value = event.get(name)
    if value is not None and type(value) is not str:
        raise BadRecord(f"{name}: expected a string or null, got {type_name(value)}")
    return value


def require_int(event: Event, name: str) -> int:
    """The field as an integer (JSON ``true``/``false`` are not integers)."""
    value = event.get(name)
    if type(value) is not int:
        if value is None and name not in event:
            raise BadRecord(f"{name}: missing")
        raise BadRecord(f"{name}: expected an integer, got {type_name(value)}")
    return value


def optional_int(event: Event, name: str) -> int | None:
    """The field as an integer, None when absent or null."""
    value = event.get(name)
    if value is not None and type(value) is not int:
        raise BadRecord(f"{name}: expected an integer or null, got {type_name(value)}")
    return value


def require_uuid(event: Event, name: str) -> str:
    """The field as a UUID string (8-4-4-4-12 hex digits, any case), lower-cased."""
    value = require_str(event, name)
    if not UUID.fullmatch(value):
        raise BadRecord(f"{name}: not a UUID: {value[:64]!r}")
    return value.lower()


# -- timestamps -----------------------------------------------------------------------
def parse_timestamp(text: str, name: str = "occurred_at") -> datetime:
    """ISO-8601 with a zone -> aware UTC datetime; naive or malformed -> BadRecord.

    Accepts what ``datetime.fromisoformat`` (Python 3.11) reads, basic form and week dates
    included; a time without a zone is rejected: it is ambiguous."""
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


def require_timestamp(event: Event, name: str) -> datetime:
    """The field as an ISO-8601 string with a zone, parsed (``parse_timestamp``)."""
    return parse_timestamp(require_str(event, name), name)


# -- URLs -----------------------------------------------------------------------------
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

    The host is lower case, without port or user info; the path is "/" when empty; path
    and query are kept exactly as sent (any text, percent-encoded or not). BadRecord
    (``url: ...``) when it is not an absolute http(s) URL with a host."""
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
    """Host of a URL of any scheme (a referrer), or None when it has none or does not parse."""
    m = _URL.match(url)
    if m is None:
        return None
    try:
        return _host(m.group(2))
    except ValueError:
        return None
