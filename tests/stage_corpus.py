"""Input records for the stage path's tests: what the stage worker meets, as seeded corpora.

The producer's realistic page views (shardline.sample.events) with every malformed kind of
shardline.sample.malformed, the hostile and awkward texts of shardline.sample.traffic in
every field, JSON that parsers disagree on (NaN, big integers, lone surrogates, duplicate
keys, BOMs, deep nesting...), seeded byte-level mutations of good records, odd Kinesis
metadata, and odd values a plugin transform may return. Used by the differential test (the
fast path against the exact path, tests/unit/test_stage_differential.py) and, through the
committed golden corpus, by tests/golden/regen.py.
"""
from __future__ import annotations

import datetime as dt
import json
import random

from shardline import codec
from shardline.sample import events, malformed, traffic

UTC = dt.timezone.utc
STAGED_AT = dt.datetime(2026, 12, 1, 8, 0, 0, 250000, tzinfo=UTC)
ARRIVAL_MS = 1_764_576_000_123
START = dt.datetime(2026, 11, 30, 23, 59, 50, tzinfo=UTC)
SHARD = "shardId-000000000007"
ODD_TEXTS = traffic.AWKWARD + ("", " ", '"', '""', "\x00", "a\x00b", "\\", "\r", "\n", ",",
                               "\t", "\ud800", "\udfff", "\u2028", "\ufeff", "é" * 1100,
                               "x" * 2049, "ü" * 128, "ü" * 64, "y" * 128, "z" * 129)
PAGE_VIEW_FIELDS = ("event_id", "occurred_at", "url", "referrer", "user_agent", "ip", "user_id",
                    "session_id")
ODD_SEQUENCES = ["1" * 128, "1" * 129, "é" * 64, "é" * 65, "49\x00", 'a"b', "4,9", "\ud800", "",
                 "\\N", "१२३"]
ODD_ARRIVALS = [0, -1, 2 ** 63 - 1, -(2 ** 62), 253402300799999, 253402300800000, ARRIVAL_MS, 1]
ODD_SHARDS = ("shardId-\x00", "x" * 129, 'sh"ard', "é" * 64, "é" * 65, "\ud800")

JSON_EDGES = [
    b"", b" ", b"null", b"[]", b"{}", b"0", b"1.5", b'"text"', b"NaN", b"-Infinity", b"true",
    b'{"event_id": NaN}', b'{"event_id": Infinity}', b'{"event_id": -Infinity}',
    b'{"event_id": 12345678901234567890123}', b'{"event_id": 18446744073709551616}',
    b'{"event_id": -9223372036854775809}', b'{"event_id": 9223372036854775808}',
    b'{"event_id": 1e400}', b'{"event_id": 1.0}', b'{"event_id": -0}', b'{"event_id": 1E2}',
    b'{"event_id": "\\ud800"}', b'{"event_id": "\\udfff\\ud800"}', b'{"event_id": "\\u0000"}',
    b'{"event_id": "a", "event_id": 5}', b'{"event_id": 5, "event_id": "a"}',
    b'\xef\xbb\xbf{}', b'{}\x00', b'{} \n\t\r', b'{}\x0c', b'"\xed\xa0\x80"', b'\xff',
    b'{"a": "\xc3"}', b'{"a": "\xf4\x90\x80\x80"}', b'{"event_id": "tab\there"}',
    b'{"event_id": [1, [2, {"x": null}]]}', b'{"event_id": {"v": 1}}',
    b"[" * 1100 + b"]" * 1100, b'{"v":' * 900 + b"1" + b"}" * 900,
    b"[" * 5000 + b"]" * 5000, b'{"a": 01}', b'{"a": .5}', b'{"a": 0.1e}', b'{"a": -}',
    b"{'a': 1}", b'{"a": 1,}', b'{"a" 1}', b'{"a": tru}', b'{"a": "\\x41"}',
]


def seq(i: int) -> str:
    return f"4960{i:052d}"


def records(datas: list[bytes], seqs: list[str] | None = None,
            arrivals: list[int] | None = None) -> list[codec.Record]:
    return [codec.Record(seqs[i] if seqs else seq(i), i % 3, f"pk-{i}", d,
                         arrivals[i] if arrivals else ARRIVAL_MS + 7 * i) for i, d in
            enumerate(datas)]


def producer_datas(n: int, seed: int) -> list[bytes]:
    """The producer's page views with every malformed kind (bad_fraction 0.3)."""
    gen = events.generate(n, bad_fraction=0.3, seed=seed, start=START, spacing_s=0.003)
    datas = [data for _kind, _key, data in gen]
    assert set(gen.counts) >= set(malformed.BAD_KINDS)  # every kind is in the corpus
    return datas


def good_events(n: int, seed: int) -> list[dict]:
    gen = events.generate(n, bad_fraction=0.0, seed=seed, start=START)
    return [json.loads(data) for _kind, _key, data in gen]


def hostile_datas(repeat: int = 3) -> list[bytes]:
    """Every odd text in every page-view field, alone or inside a plausible value."""
    rng = random.Random(12)
    base = good_events(400, seed=12)
    datas = []
    for i, text in enumerate(ODD_TEXTS * repeat):
        e = dict(base[i % len(base)])
        field = PAGE_VIEW_FIELDS[i % len(PAGE_VIEW_FIELDS)]
        e[field] = rng.choice((text, e.get(field) or "", "https://h.example/" + text,
                               f"https://shop.example.com/p?q={text}",
                               f"https://{text}/p", (e.get(field) or "") + text))
        ascii_only = rng.random() < 0.3
        datas.append(json.dumps(e, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"))
    return datas


def json_edge_datas(n_base: int = 60) -> list[bytes]:
    """JSON_EDGES alone, then the same oddities inside otherwise good events."""
    datas = list(JSON_EDGES)
    for i, e in enumerate(good_events(n_base, seed=5)):
        text = json.dumps(e)
        for odd in ("NaN", "1e400", "123456789012345678901234567890", "-0.0", "1.25",
                    '"\\ud83d\\ude00"', '"\\ud83d"', "[1, 2]", '{"k": "v"}', "true", "null",
                    '"dup"'):
            datas.append(text.replace("{", '{"extra": %s, ' % odd, 1).encode())
            datas.append(text.replace('"user_id": ', f'"user_id": {odd}, "user_id": ', 1)
                         .encode())
        datas.append(text.replace('"session_id": ', '"session_id": 7, "session_id": ', 1)
                     .encode())
        datas.append(text.encode("utf-8")[:-(i % 7) - 1])
    return datas


def mutated_datas(n: int, seed: int = 77) -> list[bytes]:
    """Good records with 1-3 seeded byte edits (replace, insert, delete)."""
    rng = random.Random(seed)
    goods = [json.dumps(e, ensure_ascii=rng.random() < 0.2).encode()
             for e in good_events(300, seed=seed)]
    alphabet = b'"\\{}[],:0123456789eE.-+ \t\n\x00\x7f\x80\xc3\xa9\xed\xa0\xffabnulNtrfIy'
    datas = []
    for i in range(n):
        d = bytearray(goods[i % len(goods)])
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            pos = rng.randrange(len(d))
            op = rng.random()
            if op < 0.4:
                d[pos] = rng.choice(alphabet)
            elif op < 0.7:
                d.insert(pos, rng.choice(alphabet))
            else:
                del d[pos]
        datas.append(bytes(d))
    return datas


def odd_metadata_records() -> list[codec.Record]:
    """Good events under odd sequence numbers and arrival times."""
    goods = [json.dumps(e).encode() for e in good_events(40, seed=9)]
    seqs = ODD_SEQUENCES * 4
    arrivals = ODD_ARRIVALS * 5
    return records(goods[:len(seqs)], seqs=seqs, arrivals=arrivals[:len(seqs)])


def odd_values() -> list:
    """Values a plugin transform may return for a column, right or wrong."""
    class Text(str):
        pass

    class Stamp(dt.datetime):
        pass

    tz530 = dt.timezone(dt.timedelta(hours=5, minutes=30))
    return [None, 0, 1.5, True, -(2 ** 63), 2 ** 63, b"bytes", ["list"], Text("sub"),
            dt.datetime(2026, 1, 2, 3, 4, 5), dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=tz530),
            dt.datetime(1, 1, 1, 0, 0, tzinfo=tz530), dt.datetime(9999, 12, 31, 23, 59, tzinfo=UTC),
            Stamp(2026, 1, 2, tzinfo=UTC), dt.datetime(2026, 1, 2, 3, 4, 5, 7, tzinfo=UTC),
            dt.date(2026, 1, 2)] + list(ODD_TEXTS)
