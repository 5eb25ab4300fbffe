"""The clicks example's transform (docs/tables.md): one click event -> its row of ``clicks``.

A transform lives outside the shardline package: this module is imported from the tables
file's ``python_path`` (the directory of examples/clicks/tables.toml). It uses only the
transform API, ``shardline.transforms``: its helpers raise ``BadRecord`` with the reason
naming the field, and any exception rejects the record (a dead letter with the reason);
the stage worker then checks the returned values against the table's columns.

Input: ``{"type": "click", "event_id": uuid, "occurred_at": ISO-8601 with a zone,
"session_id": str, "url": absolute http(s) URL, "element": str, "x": int, "y": int}``
(``x``/``y`` optional).
"""
from __future__ import annotations

from shardline.transforms import (BadRecord, Event, Row, require_str, require_timestamp,
                                  require_uuid, split_url)


def _coordinate(event: Event, name: str) -> int | None:
    # Not the API's optional_int (whose reason also names the type found): dead letters
    # already written carry this reason, and the same bad input keeps the same reason.
    value = event.get(name)
    if value is not None and type(value) is not int:
        raise BadRecord(f"{name}: expected an integer or null")
    return value


def click(event: Event) -> Row:
    event_id = require_uuid(event, "event_id")
    url = require_str(event, "url")
    host, _path, _query = split_url(url)  # BadRecord when not an absolute http(s) URL
    return {
        "event_id": event_id,
        "occurred_at": require_timestamp(event, "occurred_at"),
        "session_id": require_str(event, "session_id"),
        "url": url,
        "url_host": host,
        "element": require_str(event, "element"),
        "x": _coordinate(event, "x"),
        "y": _coordinate(event, "y"),
    }
