"""Bytes read from a file -> complete lines, under a maximum line length, holding no more
than that in memory.

An over-long line yields its first ``max_line`` bytes, marked truncated (its event is a dead
letter downstream), and the rest is skipped up to its newline. ``safe`` is the offset a
restart may resume from: the end of the last complete line, never the middle of one
being skipped (the restart then sends the truncated line again, with the same event id).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Split:
    lines: list[tuple[int, bytes, bool]] = field(default_factory=list)  # offset, bytes, cut
    read_to: int = 0      # the next byte to read
    safe: int = 0         # where a restart resumes (a line boundary)
    skipping: bool = False


def split(data: bytes, start: int, *, skipping: bool, safe: int, max_line: int,
          final: bool = False) -> Split:
    """Lines of ``data`` read at ``start``. ``skipping``: ``start`` is inside an over-long
    line already reported. ``final``: the file will not grow, a last line without a
    newline is a line."""
    out = Split(read_to=start, safe=safe, skipping=skipping)
    pos = 0
    n = len(data)
    while pos < n:
        nl = data.find(b"\n", pos)
        if out.skipping:
            if nl < 0:
                pos = n
                if final:
                    out.skipping = False
                    out.safe = start + pos
                break
            pos = nl + 1
            out.skipping = False
            out.safe = start + pos
            continue
        if nl < 0:
            rest = n - pos
            if rest > max_line:
                out.lines.append((start + pos, data[pos:pos + max_line], True))
                out.skipping = True
                pos = n
            elif final:
                out.lines.append((start + pos, data[pos:], False))
                pos = n
                out.safe = start + pos
            break
        if nl - pos > max_line:  # the newline is not counted
            out.lines.append((start + pos, data[pos:pos + max_line], True))
        else:
            out.lines.append((start + pos, data[pos:nl + 1], False))
        pos = nl + 1
        out.safe = start + pos
    out.read_to = start + pos
    return out
