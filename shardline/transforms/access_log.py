"""The ``access_log`` table's transform: a line ``shardline tail`` read from an nginx or Apache
access log in the "combined" format, parsed into columns, with its place (host, file, byte
offset) kept::

    203.0.113.9 - alice [08/Dec/2026:00:40:00 +0000] "GET /p HTTP/1.1" 200 512 "-" "curl/8"

The "common" format (no referrer and user agent) is accepted too. A line that is neither
is a dead letter saying so (``access_log: not a combined log line``), as is an over-long
line the tailer cut. ``occurred_at`` is the request's time from the line: the same for
every copy of a line, so the loader's dedup window finds them whenever they were sent.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone

from shardline.transforms import BadRecord, Event, Row, require_str
from shardline.transforms.log_lines import line_origin

# The version of this transform (``transform_version``): change it with the rules.
VERSION = "access_log-1"

_COMBINED = re.compile(
    r'(?P<addr>\S+) \S+ (?P<user>\S+) \[(?P<time>[^\]]+)\] '
    r'"(?P<request>(?:[^"\\]|\\.)*)" (?P<status>\d{3}) (?P<bytes>\d+|-)'
    r'(?: "(?P<referrer>(?:[^"\\]|\\.)*)" "(?P<agent>(?:[^"\\]|\\.)*)")?.*\Z', re.DOTALL)
_REQUEST = re.compile(r"(?P<method>[A-Za-z]+) (?P<target>\S+)(?: (?P<protocol>\S+))?\Z")


def _time(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%d/%b/%Y:%H:%M:%S %z").astimezone(timezone.utc)
    except ValueError:
        raise BadRecord(f"access_log: bad time [{text[:40]}]") from None


def _dash(text: str | None) -> str | None:
    return None if text in (None, "-", "") else text


def access_log(event: Event) -> Row:
    origin = line_origin(event)
    line = require_str(event, "line")
    m = _COMBINED.match(line)
    if m is None:
        raise BadRecord(f"access_log: not a combined log line: {line[:80]!r}")
    request = _REQUEST.match(m["request"])
    return {**origin,
            "occurred_at": _time(m["time"]),
            "remote_addr": m["addr"],
            "remote_user": _dash(m["user"]),
            # a request line that is not METHOD TARGET [PROTOCOL] (a probe, garbage) is kept
            # whole in request, with no method
            "method": request["method"] if request else None,
            "target": request["target"] if request else None,
            "protocol": request["protocol"] if request else None,
            "request": m["request"],
            "status": int(m["status"]),
            "body_bytes": None if m["bytes"] == "-" else int(m["bytes"]),
            "referrer": _dash(m["referrer"]),
            "user_agent": _dash(m["agent"])}
