"""The campaign's producer: sample events, the bad-record corpus, hostile strings, retries.

It writes straight to kinesalite (the faults are on the consumers' side) and keeps a
ledger of what it put, so the verdict can compare full sets, not counts:

- every valid event_id;
- the valid events carrying injection-looking strings (``traffic.HOSTILE``) in their
  text fields, with the row the transform must produce for them;
- a digest of every bad record (not JSON, invalid UTF-8, wrong types, near-1 MB, empty,
  deep nesting...: ``malformed.BAD_KINDS``);
- how many valid events were put a second time, byte for byte (a retrying producer).
"""
from __future__ import annotations

import collections
import hashlib
import json
import random
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator

from shardline.sample import events
from shardline.producer.put import put_events
from shardline.sample.traffic import HOSTILE
from shardline.transforms.page_views import page_view

# Text columns a hostile value can reach; compared exactly after the load.
HOSTILE_COLUMNS = ("url", "url_query", "referrer", "user_agent", "user_id", "session_id")


def digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


@dataclass
class Ledger:
    """What the producer put; filled while it runs (read it after ``join``)."""

    good_ids: set[str] = field(default_factory=set)
    hostile: dict[str, dict[str, Any]] = field(default_factory=dict)  # event_id -> columns
    bad: collections.Counter = field(default_factory=collections.Counter)  # digest -> count
    bad_kinds: collections.Counter = field(default_factory=collections.Counter)
    extra: collections.Counter = field(default_factory=collections.Counter)  # "duplicates"
    records_put: int = 0

    @property
    def duplicates(self) -> int:
        return self.extra["duplicates"]


def make_hostile(event: dict, rng: random.Random) -> dict:
    """The event with injection-looking strings in one to three of its text fields."""
    out = dict(event)
    for name in rng.sample(("url", "referrer", "user_agent", "user_id", "session_id"),
                           rng.randint(1, 3)):
        text = rng.choice(HOSTILE)
        if name == "url":
            out["url"] = out["url"] + ("&" if "?" in out["url"] else "?") + "q=" + text
        elif name == "referrer":
            out["referrer"] = "https://search.example.com/?q=" + text
        elif name == "user_agent":
            out["user_agent"] = f"{out['user_agent']} {text}"
        else:
            out[name] = text
    return out


class ChaosProducer(threading.Thread):
    """Puts ``count`` records at ``rate``/s on a thread; ``error`` is set if it failed."""

    def __init__(self, kinesis: Any, stream: str, *, count: int, rate: float, seed: int,
                 bad_fraction: float, duplicate_fraction: float, hostile_fraction: float):
        super().__init__(name="chaos-producer", daemon=True)
        self.kinesis, self.stream = kinesis, stream
        self.count, self.rate, self.seed = count, rate, seed
        self.bad_fraction, self.duplicate_fraction = bad_fraction, duplicate_fraction
        self.hostile_fraction = hostile_fraction
        self.ledger = Ledger()
        self.error: BaseException | None = None
        self.stop_event = threading.Event()

    def _records(self) -> Iterator[tuple[str, str, bytes]]:
        gen = events.generate(self.count, self.bad_fraction, self.seed,
                              spacing_s=1.0 / self.rate if self.rate else 0.0001)
        rng = random.Random(f"hostile-{self.seed}")
        ledger = self.ledger
        for kind, key, data in gen:
            if self.stop_event.is_set():
                return
            if kind == events.GOOD:
                event = json.loads(data)
                if rng.random() < self.hostile_fraction:
                    event = make_hostile(event, rng)
                    data = json.dumps(event, ensure_ascii=False).encode()
                    row = page_view(event)
                    ledger.hostile[event["event_id"]] = {c: row.get(c) for c in HOSTILE_COLUMNS}
                ledger.good_ids.add(event["event_id"])
            else:
                ledger.bad[digest(data)] += 1
                ledger.bad_kinds[kind] += 1
            yield kind, key, data

    def run(self) -> None:
        try:
            source = events.with_duplicates(self._records(), self.duplicate_fraction, self.seed,
                                            self.ledger.extra)
            stats = put_events(self.kinesis, self.stream,
                               ((key, data) for _, key, data in source), rate=self.rate)
            self.ledger.records_put = stats.user_records
        except BaseException as exc:  # noqa: BLE001 - reported by the campaign
            self.error = exc
