"""Today's stage path against the reference (the code before the speed-up, tests/stage_reference/):
on a large seeded corpus, same CSV bytes, same rows, same dead letters and reasons.

The corpus is what the stage worker meets: the sample's realistic page views (shardline.sample
.events) with every malformed kind of shardline.sample.malformed, the hostile and awkward texts
of shardline.sample.traffic in every field, JSON that parsers disagree on (NaN, big integers,
lone surrogates, duplicate keys, BOMs, deep nesting...), seeded byte-level mutations of good
records, odd Kinesis metadata, and plugin transforms returning odd values in every column.
"""
from __future__ import annotations

import datetime as dt
import json
import random

import pytest

from shardline import codec
from shardline.sample import events, malformed, traffic
from shardline.tables import PAGE_VIEWS
from shardline.workers import transform as transform_mod
from shardline.workers.rows import RowBuilder
from tests.stage_reference import codec as ref_codec
from tests.stage_reference import rows as ref_rows
from tests.stage_reference import transform as ref_transform

UTC = dt.timezone.utc
STAGED_AT = dt.datetime(2026, 12, 1, 8, 0, 0, 250000, tzinfo=UTC)
ARRIVAL_MS = 1_764_576_000_123
START = dt.datetime(2026, 11, 30, 23, 59, 50, tzinfo=UTC)
ODD_TEXTS = traffic.AWKWARD + ("", " ", '"', '""', "\x00", "a\x00b", "\\", "\r", "\n", ",",
                               "\t", "\ud800", "\udfff", "\u2028", "\ufeff", "é" * 1100,
                               "x" * 2049, "ü" * 128, "ü" * 64, "y" * 128, "z" * 129)


def _seq(i: int) -> str:
    return f"4960{i:052d}"


def _records(datas: list[bytes], seqs: list[str] | None = None,
             arrivals: list[int] | None = None) -> list[codec.Record]:
    return [codec.Record(seqs[i] if seqs else _seq(i), i % 3, f"pk-{i}", d,
                         arrivals[i] if arrivals else ARRIVAL_MS + 7 * i) for i, d in
            enumerate(datas)]


def _assert_same(records: list[codec.Record], new: RowBuilder, ref: ref_rows.RowBuilder,
                 shard: str = "shardId-000000000007", batch: int = 500) -> None:
    for i in range(0, len(records), batch):
        b = codec.Batch("events", shard, records[i:i + batch])
        got, want = new.build(b, STAGED_AT), ref.build(b, STAGED_AT)
        assert got.rows == want.rows
        assert got.dead_letters == want.dead_letters
        if got.csv_text != want.csv_text:  # name the first differing line, not a 100 KB diff
            for g, w in zip(got.csv_text.splitlines(True), want.csv_text.splitlines(True)):
                assert g == w
        assert got.csv_text.encode("utf-8", "surrogatepass") == \
            want.csv_text.encode("utf-8", "surrogatepass")


def _builders(new_transform=None, ref_transform_=None):
    return (RowBuilder(PAGE_VIEWS, new_transform or transform_mod.page_view),
            ref_rows.RowBuilder(PAGE_VIEWS, ref_transform_ or ref_transform.page_view))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_producer_corpus_with_every_malformed_kind(seed):
    gen = events.generate(6000, bad_fraction=0.3, seed=seed, start=START, spacing_s=0.003)
    datas = [data for _kind, _key, data in gen]
    assert set(gen.counts) >= set(malformed.BAD_KINDS)  # every kind is in the corpus
    new, ref = _builders()
    _assert_same(_records(datas), new, ref)


def _good_events(n: int, seed: int) -> list[dict]:
    gen = events.generate(n, bad_fraction=0.0, seed=seed, start=START)
    return [json.loads(data) for _kind, _key, data in gen]


def test_hostile_and_awkward_text_in_every_field():
    rng = random.Random(12)
    base = _good_events(400, seed=12)
    fields = ("event_id", "occurred_at", "url", "referrer", "user_agent", "ip", "user_id",
              "session_id")
    datas = []
    for i, text in enumerate(ODD_TEXTS * 3):
        e = dict(base[i % len(base)])
        field = fields[i % len(fields)]
        e[field] = rng.choice((text, e.get(field) or "", "https://h.example/" + text,
                               f"https://shop.example.com/p?q={text}",
                               f"https://{text}/p", (e.get(field) or "") + text))
        ascii_only = rng.random() < 0.3
        datas.append(json.dumps(e, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass"))
    new, ref = _builders()
    _assert_same(_records(datas), new, ref)


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


def test_json_that_parsers_disagree_on():
    base = _good_events(60, seed=5)
    datas = list(JSON_EDGES)
    for i, e in enumerate(base):  # the same oddities inside otherwise good events
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
    new, ref = _builders()
    _assert_same(_records(datas), new, ref)


def test_seeded_byte_mutations_of_good_records():
    rng = random.Random(77)
    goods = [json.dumps(e, ensure_ascii=rng.random() < 0.2).encode()
             for e in _good_events(300, seed=77)]
    alphabet = b'"\\{}[],:0123456789eE.-+ \t\n\x00\x7f\x80\xc3\xa9\xed\xa0\xffabnulNtrfIy'
    datas = []
    for i in range(4000):
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
    new, ref = _builders()
    _assert_same(_records(datas), new, ref)


def test_odd_kinesis_metadata():
    goods = [json.dumps(e).encode() for e in _good_events(40, seed=9)]
    seqs = ["1" * 128, "1" * 129, "é" * 64, "é" * 65, "49\x00", 'a"b', "4,9", "\ud800", "",
            "\\N", "१२३"] * 4
    arrivals = [0, -1, 2 ** 63 - 1, -(2 ** 62), 253402300799999, 253402300800000,
                ARRIVAL_MS, 1] * 5
    new, ref = _builders()
    _assert_same(_records(goods[:len(seqs)], seqs=seqs, arrivals=arrivals[:len(seqs)]),
                 new, ref)
    for shard in ("shardId-\x00", "x" * 129, 'sh"ard', "é" * 64, "é" * 65, "\ud800"):
        _assert_same(_records(goods[:5]), new, ref, shard=shard)


def _odd_values(rng: random.Random) -> list:
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


def test_plugin_transforms_returning_odd_values_in_every_column():
    """The column checks and the CSV line alone: the same outputs from both builders."""
    rng = random.Random(31)
    good = transform_mod.page_view(_good_events(1, seed=31)[0])
    columns = [c.name for c in PAGE_VIEWS.columns][:-5]
    odd = _odd_values(rng)
    variants: list = []
    for i in range(3000):
        out = dict(good)
        for _ in range(rng.choice((0, 1, 1, 1, 2, 3))):
            out[rng.choice(columns)] = rng.choice(odd)
        r = rng.random()
        if r < 0.02:
            out.pop(rng.choice(columns))
        elif r < 0.03:
            out["unknown_column"] = "x"
        elif r < 0.035:
            out = ["not", "a", "dict"]
        elif r < 0.04:
            out = ValueError("plugin says no " + "x" * 600)
        variants.append(out)

    def plugin(event):
        out = variants[event["case"]]
        if isinstance(out, Exception):
            raise out
        return dict(out) if isinstance(out, dict) else out

    datas = [json.dumps({"case": i}).encode() for i in range(len(variants))]
    _assert_same(_records(datas), *_builders(plugin, plugin))


def test_codec_decode_matches_the_reference():
    rng = random.Random(3)
    recs = [codec.Record(str(rng.randrange(10 ** 55, 10 ** 56)), rng.randrange(2 ** 32),
                         rng.choice(("pk", "é-key", "", "k" * 300)),
                         bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300))),
                         rng.randrange(2 ** 64), rng.randrange(4)) for _ in range(300)]
    payload = codec.encode(codec.Batch("stream-é", "shardId-000000000001", recs))

    def outcome(decode, data):
        try:
            b = decode(data)
        except Exception as exc:  # the error class name and message must agree
            return type(exc).__name__, str(exc)
        return (b.stream, b.shard_id, [(r.sequence_number, r.sub_sequence_number,
                                        r.partition_key, r.data, r.arrival_ms, r.flags)
                                       for r in b.records])

    assert outcome(codec.decode, payload) == outcome(ref_codec.decode, payload)
    small = codec.encode(codec.Batch("s", "shard", recs[:3]))
    damaged = [small[:n] for n in range(len(small))] + [small + b"\x00", bytearray(small),
                                                          memoryview(small)]
    for _ in range(2000):
        d = bytearray(small)
        d[rng.randrange(len(d))] = rng.randrange(256)
        damaged.append(bytes(d))
    for data in damaged:
        assert outcome(codec.decode, data) == outcome(ref_codec.decode, data)
