"""The ``log_lines`` table's transform: one row per line ``shardline tail`` read (plain lines:
the whole line, the host, file and byte offset it came from, and when it was read).

The event is ``shardline.tail.identity.line_event``'s. A line the tailer cut because it was
longer than ``tail.max_line_bytes`` carries ``truncated``: it is rejected here, so it is a
dead letter holding its first bytes and its place (host, path, offset), not a row.
"""
from __future__ import annotations

from shardline.transforms import (BadRecord, Event, Row, optional_int, require_int, require_str,
                                  require_timestamp, require_uuid)

# The version of this transform (``transform_version``): change it with the rules.
VERSION = "log_line-1"


def line_origin(event: Event) -> Row:
    """What every row made of a tailed line keeps (``log_lines``, ``access_log``): its event
    id and its place, host, path, file identity and byte offset. A line the tailer cut is
    rejected here."""
    cut = optional_int(event, "truncated")
    if cut:
        raise BadRecord(f"line: longer than {cut} bytes (tail.max_line_bytes); its first "
                        f"{cut} bytes are in this dead letter, the rest was skipped")
    event_id = require_uuid(event, "event_id")
    offset = require_int(event, "offset")
    if offset < 0:
        raise BadRecord(f"offset: negative: {offset}")
    return {"event_id": event_id,
            "host": require_str(event, "host"),
            "path": require_str(event, "path"),
            "file_id": require_str(event, "file_id"),
            "byte_offset": offset}


def log_line(event: Event) -> Row:
    origin = line_origin(event)
    return {**origin,
            "read_at": require_timestamp(event, "read_at"),
            "line": require_str(event, "line")}
