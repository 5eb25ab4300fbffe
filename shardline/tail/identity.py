"""What names a file and a line: a fingerprint of the file's first line, and an event id
derived from (host, fingerprint, byte offset).

A file is known by its content, not its name or inode: a renamed file (logrotate's
rename-and-create) keeps its fingerprint, a copytruncate copy has the fingerprint of the
original, and a new file on a reused inode has a different first line. Two files whose first
lines are identical are one file to the tailer (as with Vector's checksum fingerprint).
"""
from __future__ import annotations

import hashlib
import uuid
from typing import TypedDict

# The first line, up to this many bytes, is the fingerprint: long enough to hold a
# timestamp and more, short enough that a file with a huge first line gets one soon.
FINGERPRINT_BYTES = 1024

# Fixed for ever: changing it changes every event id, and re-sent lines would no longer
# be recognised as copies by the loader.
_NAMESPACE = uuid.UUID("6f1c2d4e-8a3b-5c7d-9e0f-1a2b3c4d5e6f")


def fingerprint(head: bytes) -> str | None:
    """The fingerprint of a file whose first bytes are ``head`` (at least FINGERPRINT_BYTES
    of them when the file has that many), or None while its first line is incomplete: the
    fingerprint must not change as the file grows."""
    end = head.find(b"\n", 0, FINGERPRINT_BYTES)
    if end >= 0:
        first = head[:end + 1]
    elif len(head) >= FINGERPRINT_BYTES:
        first = head[:FINGERPRINT_BYTES]
    else:
        return None
    return hashlib.sha256(first).hexdigest()[:32]


def event_id(host: str, file_id: str, offset: int) -> str:
    """The same line (same host, file and offset) always gets the same id, so a line sent
    again after a crash is a copy the loader's dedup removes."""
    return str(uuid.uuid5(_NAMESPACE, f"{host}\n{file_id}\n{offset}"))


class LineEvent(TypedDict, total=False):
    """The event of one line (the ``log_lines`` table's transform reads it)."""

    event_id: str
    type: str
    host: str
    path: str
    file_id: str
    offset: int
    line: str
    read_at: str
    truncated: int    # only on an over-long line: its length limit (the rest was skipped)


def line_event(host: str, file_id: str, path: str, offset: int, line: bytes, read_at: str,
               truncated: int = 0) -> LineEvent:
    text = line.rstrip(b"\n")
    if text.endswith(b"\r"):
        text = text[:-1]
    event: LineEvent = {"event_id": event_id(host, file_id, offset), "type": "log_line",
                        "host": host, "path": path, "file_id": file_id, "offset": offset,
                        # a log is not always UTF-8: an odd byte must not lose the line
                        "line": text.decode("utf-8", "replace"), "read_at": read_at}
    if truncated:
        event["truncated"] = truncated
    return event
