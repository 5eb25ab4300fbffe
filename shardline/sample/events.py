"""Sample page-view events: a realistic, seeded generator plus malformed records.

A good event is one JSON object (UTF-8)::

    {"event_id": "0b0c6a8e-...", "occurred_at": "2026-11-26T06:30:01.123456+00:00",
     "url": "https://shop.example.com/products/linen-shirt?color=blue", "referrer": null,
     "user_agent": "Mozilla/5.0 (...)", "ip": "203.0.113.57", "user_id": "u-48213",
     "session_id": "s-9f2c..."}

The rules are in docs/events.md. ``generate(n, bad_fraction, seed)`` yields
``(kind, partition_key, data)``: ``kind`` is ``"good"`` or one of ``BAD_KINDS``.
The same seed and start time give byte-identical output. ``with_duplicates``
re-emits some good records later, byte for byte, as a retrying producer does.

Good records use the session id as partition key, so one session's events go to
one shard in order. Bad records get a random partition key.

This module assembles the records; the pieces live next to it and their names
are re-exported here: ``shardline.sample.traffic`` (the simulated site and visitors,
``USER_AGENTS``), ``shardline.sample.malformed`` (``BAD_KINDS`` and their makers) and
``shardline.sample.event_rules`` (``check``, ``classify_user_agent``, ``ip_prefix``,
the fields and their byte limits).
"""
from __future__ import annotations

import collections
import datetime as dt
import heapq
import json
import random
import time
from typing import Any, Iterable, Iterator

from shardline.sample import malformed
from shardline.sample.event_rules import (FIELDS, MAX_BYTES, MAX_RECORD_BYTES, NULLABLE,
                                            REQUIRED, check, classify_user_agent, ip_prefix)
from shardline.sample.malformed import BAD_KINDS, NEAR_LIMIT_BYTES, NEAR_LIMIT_EVERY
from shardline.sample.traffic import (AWKWARD, AWKWARD_PROBABILITY, EXTERNAL_REFERRERS, HOSTS,
                                        UTM, USER_AGENTS, Session, page_path, uuid4)

__all__ = ["GOOD", "BAD_KINDS", "KINDS", "REQUIRED", "NULLABLE", "FIELDS", "MAX_BYTES",
           "MAX_RECORD_BYTES", "NEAR_LIMIT_BYTES", "NEAR_LIMIT_EVERY", "HOSTS", "USER_AGENTS",
           "Generator", "generate", "with_duplicates", "check", "classify_user_agent",
           "ip_prefix"]

GOOD = "good"
CLICK = "click"  # a click event (``click_fraction``): the clicks example's (docs/tables.md)
KINDS = (GOOD,) + BAD_KINDS
CLICK_ELEMENTS = ("buy-button", "nav-home", "search", "add-to-cart", "footer-link", "logo")

_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_ASCII = json.JSONEncoder()


class Generator:
    """Iterator of ``(kind, partition_key, data)``; ``counts`` and ``good_ids`` fill as it runs.

    ``n`` None means endless. ``bad_fraction`` of the records are malformed: with ``n``
    known, exactly ``round(n * bad_fraction)`` at seeded random positions. Bad kinds
    rotate through ``bad_kinds`` (near_limit only every NEAR_LIMIT_EVERY-th cycle).
    ``start`` is the first event time (default: now); events advance by ``spacing_s``.
    """

    def __init__(self, n: int | None = None, bad_fraction: float = 0.0, seed: int | None = None,
                 *, start: dt.datetime | None = None, spacing_s: float = 0.01,
                 bad_kinds: tuple[str, ...] | list[str] | None = None, sessions: int = 500,
                 keep_ids: bool = False, click_fraction: float = 0.0):
        if not 0.0 <= bad_fraction <= 1.0:
            raise ValueError("bad_fraction must be between 0 and 1")
        if not 0.0 <= click_fraction <= 1.0:
            raise ValueError("click_fraction must be between 0 and 1")
        self.click_fraction = click_fraction
        self.click_ids: list[str] = []
        kinds = tuple(bad_kinds) if bad_kinds else BAD_KINDS
        unknown = set(kinds) - set(BAD_KINDS)
        if unknown:
            raise ValueError(f"unknown bad kinds: {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(BAD_KINDS)}")
        self.n = n
        self.bad_fraction = bad_fraction
        self.rng = random.Random(seed)
        self.start = (start or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
        self._start_us = int(self.start.timestamp()) * 1_000_000 + self.start.microsecond
        self._spacing_us = int(round(spacing_s * 1e6))
        self._sec_cache: tuple[int, str] = (-1, "")
        self.counts: collections.Counter[str] = collections.Counter()
        self.good_ids: list[str] = []
        self.keep_ids = keep_ids
        self._index = 0
        self._sessions = [Session(self.rng) for _ in range(sessions)]
        self._cycle = malformed.bad_cycle(kinds)
        self.cycle_pos = 0
        if n is not None:
            k = round(n * bad_fraction)
            self._bad_positions: set[int] | None = set(self.rng.sample(range(n), k))
        else:
            self._bad_positions = None

    def __iter__(self) -> "Generator":
        return self

    def __next__(self) -> tuple[str, str, bytes]:
        i = self._index
        if self.n is not None and i >= self.n:
            raise StopIteration
        self._index += 1
        if self._bad_positions is not None:
            bad = i in self._bad_positions
        else:
            bad = self.bad_fraction > 0 and self.rng.random() < self.bad_fraction
        if bad:
            kind = self._cycle[self.cycle_pos % len(self._cycle)]
            self.cycle_pos += 1
            data = malformed.make(kind, self, i)
            key = f"{self.rng.getrandbits(128):032x}"
        elif self.click_fraction and self.rng.random() < self.click_fraction:
            kind = CLICK  # no draw at all without clicks: seeded runs stay as they were
            event, key = self.click(i)
            data = self.encode(event)
            if self.keep_ids:
                self.click_ids.append(event["event_id"])
        else:
            kind = GOOD
            event, key = self.event(i)
            data = self.encode(event)
            if self.keep_ids:
                self.good_ids.append(event["event_id"])
        self.counts[kind] += 1
        return kind, key, data

    # -- good events --------------------------------------------------------

    def _time(self, i: int, s: Session) -> str:
        rng = self.rng
        # Clocks and network: most events are on time, some a few seconds late.
        late_us = int(min(rng.expovariate(1 / 0.4), 30.0) * 1e6) if rng.random() < 0.3 else 0
        local_us = self._start_us + i * self._spacing_us - late_us + s.offset_s * 1_000_000
        secs, us = divmod(local_us, 1_000_000)
        if secs != self._sec_cache[0]:
            self._sec_cache = (secs, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)))
        text = self._sec_cache[1]
        r = rng.random()
        if r < 0.25:  # JavaScript clients send milliseconds
            return f"{text}.{us // 1000:03d}{s.offset_text}"
        if r < 0.28:
            return text + s.offset_text
        return f"{text}.{us:06d}{s.offset_text}"

    def event(self, i: int) -> tuple[dict[str, Any], str]:
        """The i-th good event and its partition key (the session id)."""
        rng = self.rng
        slot = rng.randrange(len(self._sessions))
        s = self._sessions[slot]
        url = f"https://{s.host}{page_path(rng, s.host)}"
        if rng.random() < 0.08:
            url += ("&" if "?" in url else "?") + rng.choice(UTM)
        if s.last_url is not None and rng.random() < 0.6:
            referrer: str | None = s.last_url
        elif rng.random() < 0.5:
            referrer = rng.choice(EXTERNAL_REFERRERS)
        else:
            referrer = None
        user_agent = s.user_agent
        if rng.random() < AWKWARD_PROBABILITY:
            where = rng.randrange(3)
            text = rng.choice(AWKWARD)
            if where == 0:
                url += ("&" if "?" in url else "?") + "note=" + text
            elif where == 1:
                referrer = f"https://www.google.com/search?q={text}"
            else:
                user_agent = f"{user_agent} Custom/{text}"
        event = {
            "event_id": uuid4(rng),
            "occurred_at": self._time(i, s),
            "url": url,
            "referrer": referrer,
            "user_agent": user_agent,
            "ip": s.ip,
            "user_id": s.user_id,
            "session_id": s.session_id,
        }
        s.last_url = url
        s.views_left -= 1
        if s.views_left <= 0:
            self._sessions[slot] = Session(rng)
        return event, s.session_id

    def click(self, i: int) -> tuple[dict[str, Any], str]:
        """A click event of a session (``"type": "click"``), on the page it last viewed."""
        rng = self.rng
        s = self._sessions[rng.randrange(len(self._sessions))]
        url = s.last_url or f"https://{s.host}{page_path(rng, s.host)}"
        return {"type": CLICK, "event_id": uuid4(rng), "occurred_at": self._time(i, s),
                "session_id": s.session_id, "url": url, "element": rng.choice(CLICK_ELEMENTS),
                "x": rng.randrange(1920), "y": rng.randrange(1080)}, s.session_id

    def encode(self, event: dict[str, Any]) -> bytes:
        """Compact UTF-8 JSON; a few records use \\u escapes or spaces (still valid JSON)."""
        r = self.rng.random()
        if r < 0.05:
            return _ASCII.encode(event).encode("ascii")  # \uXXXX escapes, ", " separators
        return _COMPACT.encode(event).encode("utf-8")


def generate(n: int | None, bad_fraction: float = 0.0, seed: int | None = None,
             **kwargs: Any) -> Generator:
    """Iterator of ``(kind, partition_key, data)``; see ``Generator`` for the options."""
    return Generator(n, bad_fraction, seed, **kwargs)


def with_duplicates(source: Iterable[tuple[str, str, bytes]], fraction: float,
                    seed: int | None, counts: collections.Counter[str]
                    ) -> Iterator[tuple[str, str, bytes]]:
    """Re-emit some good records, byte for byte, 1-2,000 records later (a producer retry).

    A share ``fraction`` of the ``"good"`` records of ``source`` come out a second time,
    as kind ``"duplicate"`` with the same key and data; ``counts["duplicates"]`` counts
    them. Seeded apart from the generator, so the same seed gives the same duplicates.
    """
    if fraction <= 0:
        yield from source
        return
    rng = random.Random(f"duplicates-{seed}")
    later: list[tuple[int, int, str, bytes]] = []
    i = 0
    for kind, key, data in source:
        while later and later[0][0] <= i:
            _, _, dkey, ddata = heapq.heappop(later)
            counts["duplicates"] += 1
            yield "duplicate", dkey, ddata
        yield kind, key, data
        if kind == GOOD and rng.random() < fraction:
            heapq.heappush(later, (i + rng.randint(1, 2000), i, key, data))
        i += 1
    while later:
        _, _, dkey, ddata = heapq.heappop(later)
        counts["duplicates"] += 1
        yield "duplicate", dkey, ddata
