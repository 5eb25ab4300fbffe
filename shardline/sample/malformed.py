"""Malformed records for the sample stream: one maker per kind in ``BAD_KINDS``.

Each kind is a way real producers break records (garbage, bad UTF-8, missing or
mistyped fields, bad timestamps, over-long fields, empty or near-1-MiB data, JSON
nested deeper than any parser goes), so the stage worker's dead-letter path is
exercised with realistic input; the reasons a reader must give are in docs/events.md.
``make(kind, source, i)`` builds one, drawing from the generator
(``shardline.sample.events.Generator``) so a seed still gives the same bytes.
"""
from __future__ import annotations

import json
import random
from typing import Any, Callable, Protocol

from shardline.sample.event_rules import REQUIRED
from shardline.sample.traffic import uuid4

BAD_KINDS = (
    "not_json",       # garbage text
    "invalid_utf8",   # bytes that do not decode as UTF-8
    "missing_field",  # a required field is absent
    "wrong_type",     # a field has the wrong JSON type (event_id a number, url a list, ...)
    "bad_timestamp",  # occurred_at without a zone, or nonsense
    "not_object",     # valid JSON, but an array / string / number
    "empty",          # zero bytes (Kinesis and kinesalite accept empty Data)
    "too_long",       # a field over its warehouse column byte limit
    "near_limit",     # ~900 KB of non-JSON (Kinesis refuses records over 1 MiB)
    "deep_nesting",   # well-formed JSON nested ~30,000-100,000 levels deep (~200 KB)
)
NEAR_LIMIT_BYTES = 900 * 1024

# deep_nesting: about this many bytes of brackets. Every shape is 30x deeper than
# the deepest limit a JSON parser has (CPython's json stops near 1,000 levels, most
# others at 64-10,000), so a reader must survive its parser giving up, not parse it.
DEEP_NESTING_BYTES = 200 * 1024

# near_limit (900 KB) and deep_nesting (200 KB) records are heavy: one of each in NEAR_LIMIT_EVERY
# bad-kind cycles; the first cycle always has them, so small runs still see both.
NEAR_LIMIT_EVERY = 10
HEAVY_KINDS = ("near_limit", "deep_nesting")


class Source(Protocol):
    """What the makers use of the generator."""

    rng: random.Random
    cycle_pos: int  # bad records made so far, this one included: rotates the variants

    def event(self, i: int) -> tuple[dict[str, Any], str]: ...

    def encode(self, event: dict[str, Any]) -> bytes: ...


def bad_cycle(kinds: tuple[str, ...]) -> list[str]:
    """The rotation of bad kinds: the heavy ones (near_limit ~900 KB, deep_nesting ~200 KB)
    once every NEAR_LIMIT_EVERY cycles, the first cycle included, so small runs see them."""
    heavy = [k for k in HEAVY_KINDS if k in kinds]
    others = [k for k in kinds if k not in HEAVY_KINDS]
    if not others:
        return heavy
    return heavy + others * NEAR_LIMIT_EVERY


def _good(g: Source, i: int) -> dict[str, Any]:
    """A fresh good event to break (it uses a session like any other)."""
    return g.event(i)[0]


def _not_json(g: Source, i: int) -> bytes:
    return g.rng.choice((
        b"GET /products/linen-shirt HTTP/1.1",
        b"{\"event_id\": \"abc\", \"url\": ",              # truncated
        b"{'event_id': 'single-quotes', 'url': 'https://shop.example.com/'}",
        b"event_id=123&url=https%3A%2F%2Fshop.example.com%2F",
        b"<html><body>502 Bad Gateway</body></html>",
        b"{\"event_id\": \"x\",}",                          # trailing comma
        b"NaNaNaN",
    ))


def _invalid_utf8(g: Source, i: int) -> bytes:
    good = g.encode(_good(g, i))
    cut = g.rng.randrange(1, len(good))
    return g.rng.choice((
        b"\xff\xfe" + "{}".encode("utf-16-le"),             # a UTF-16 BOM
        good[:cut] + b"\xc3\x28" + good[cut:],               # invalid 2-byte sequence
        good.replace(b"https", b"http\xe9", 1),              # Latin-1 byte
        b"\xff\xfe\xfd" + good,
    ))


def _missing_field(g: Source, i: int) -> bytes:
    event = _good(g, i)
    del event[REQUIRED[g.cycle_pos % len(REQUIRED)]]
    return json.dumps(event).encode()


def _wrong_type(g: Source, i: int) -> bytes:
    event = _good(g, i)
    field, value = g.rng.choice((
        ("event_id", g.rng.randrange(10 ** 9)),
        ("url", [event["url"]]),
        ("user_agent", {"ua": event["user_agent"]}),
        ("session_id", None),
        ("ip", 3232235777),
        ("occurred_at", 1764138601.5),
        ("user_id", 48213),
        ("referrer", True),
    ))
    event[field] = value
    return json.dumps(event).encode()


def _bad_timestamp(g: Source, i: int) -> bytes:
    event = _good(g, i)
    ts = event["occurred_at"]
    event["occurred_at"] = g.rng.choice((
        ts[:-6],                                   # no zone
        ts[:-6].replace("T", " "),                 # no zone, space separator
        "yesterday",
        "2026-13-45T25:61:00+00:00",
        "",
        "1764138601",
        "26/11/2026 06:30:01 +0000",
    ))
    return json.dumps(event).encode()


def _not_object(g: Source, i: int) -> bytes:
    event = _good(g, i)
    return g.rng.choice((
        json.dumps([event]).encode(),
        json.dumps(list(event.values())).encode(),
        json.dumps(json.dumps(event)).encode(),    # a JSON string holding JSON
        b"42",
        b"null",
    ))


def _empty(g: Source, i: int) -> bytes:
    return b""


def _too_long(g: Source, i: int) -> bytes:
    event = _good(g, i)
    field = ("url", "user_agent", "referrer", "session_id", "user_id", "event_id")[
        g.cycle_pos % 6]
    if field == "url":
        event["url"] += ("&" if "?" in event["url"] else "?") + "pad=" + "x" * 5000
    elif field == "referrer":
        event["referrer"] = "https://www.google.com/search?q=" + "ü" * 1100  # 2,200 bytes
    elif field == "user_agent":
        event["user_agent"] = event["user_agent"] + " " + "Extension/1.0 " * 80
    elif field == "event_id":
        event["event_id"] = event["event_id"] + "-" + event["event_id"]
    else:
        event[field] = ("é" * 70)  # 70 characters, 140 bytes: over in bytes only
    return json.dumps(event, ensure_ascii=False).encode()


def _near_limit(g: Source, i: int) -> bytes:
    head = b'{"event_id": "' + uuid4(g.rng).encode() + b'", "url": "'
    return head + b"A" * (NEAR_LIMIT_BYTES - len(head))  # never closed: not JSON


# (opening, closing) text of the deep_nesting shapes: arrays twice as often as the others.
_NESTING = (("[", "]"), ("[", "]"), ('{"v":', "}"), ('[{"v":', "}]"))
_DEEP_MARK = "deep-nesting-goes-here"  # stands in for the nested value while dumping


def _deep_nesting(g: Source, i: int) -> bytes:
    """A good event whose url, referrer or user agent sits ~30,000-100,000 levels deep.

    The brackets balance, so it is well-formed JSON that only a parser without a depth
    limit could read: the reader's parser must give up cleanly (CPython's json raises
    RecursionError, not ValueError) and the record become a dead letter.
    """
    event = _good(g, i)
    field = g.rng.choice(("url", "url", "referrer", "user_agent"))
    leaf = json.dumps(event[field])
    event[field] = _DEEP_MARK
    opening, closing = g.rng.choice(_NESTING)
    size = DEEP_NESTING_BYTES + g.rng.randrange(-10 * 1024, 10 * 1024)
    n = size // (len(opening) + len(closing))  # levels: 100,000 [], 34,000 {}, 51,000 [{}]
    nested = opening * n + leaf + closing * n
    return json.dumps(event).replace(f'"{_DEEP_MARK}"', nested, 1).encode()


_MAKERS: dict[str, Callable[[Source, int], bytes]] = {
    "not_json": _not_json, "invalid_utf8": _invalid_utf8, "missing_field": _missing_field,
    "wrong_type": _wrong_type, "bad_timestamp": _bad_timestamp, "not_object": _not_object,
    "empty": _empty, "too_long": _too_long, "near_limit": _near_limit,
    "deep_nesting": _deep_nesting,
}
assert set(_MAKERS) == set(BAD_KINDS)


def make(kind: str, source: Source, i: int) -> bytes:
    """The data of one malformed record of ``kind`` (the i-th record of the stream)."""
    return _MAKERS[kind](source, i)
