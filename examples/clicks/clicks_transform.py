"""The clicks example's transform (docs/tables.md): one click event -> its row of ``clicks``.

A transform lives outside the shardline package: this module is imported from the tables
file's ``python_path`` (the directory of examples/clicks/tables.toml). It may reuse
shardline's helpers, as here, or none. Raising rejects the record (a dead letter with the
reason); the stage worker then checks the returned values against the table's columns.

Input: ``{"type": "click", "event_id": uuid, "occurred_at": ISO-8601 with a zone,
"session_id": str, "url": absolute http(s) URL, "element": str, "x": int, "y": int}``
(``x``/``y`` optional).
"""
from __future__ import annotations

from typing import Any

from shardline.errors import BadRecord
from shardline.workers.transform import _UUID, parse_timestamp, split_url
from shardline.workers.transform import _require_str as _text  # "<field>: missing" etc.


def _coordinate(event: dict, name: str) -> int | None:
    value = event.get(name)
    if value is not None and type(value) is not int:
        raise BadRecord(f"{name}: expected an integer or null")
    return value


def click(event: dict) -> dict[str, Any]:
    event_id = _text(event, "event_id")
    if not _UUID.fullmatch(event_id):
        raise BadRecord(f"event_id: not a UUID: {event_id[:64]!r}")
    url = _text(event, "url")
    host, _path, _query = split_url(url)  # BadRecord when not an absolute http(s) URL
    return {
        "event_id": event_id.lower(),
        "occurred_at": parse_timestamp(_text(event, "occurred_at")),
        "session_id": _text(event, "session_id"),
        "url": url,
        "url_host": host,
        "element": _text(event, "element"),
        "x": _coordinate(event, "x"),
        "y": _coordinate(event, "y"),
    }
