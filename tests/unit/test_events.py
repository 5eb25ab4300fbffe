"""The sample event generator: reproducible, realistic, and its malformed records really are."""
from __future__ import annotations

import collections
import datetime as dt
import json
import re

import pytest

from shardline.sample import events, malformed
from shardline.sample.traffic import HOSTILE

START = dt.datetime(2026, 11, 26, 6, 30, tzinfo=dt.timezone.utc)


def _records(n: int = 12_000, bad: float = 0.05, seed: int = 7, **kw):
    gen = events.generate(n, bad, seed, start=START, **kw)
    return gen, list(gen)


@pytest.fixture(scope="module")
def sample():
    return _records()


def _by_kind(records):
    out = collections.defaultdict(list)
    for kind, key, data in records:
        out[kind].append((key, data))
    return out


def test_same_seed_same_bytes_and_different_seed_differs():
    _, a = _records(3000, 0.1, seed=42)
    _, b = _records(3000, 0.1, seed=42)
    _, c = _records(3000, 0.1, seed=43)
    assert a == b
    assert a != c


def test_bad_fraction_is_exact_when_the_count_is_known(sample):
    gen, records = sample
    bad = sum(1 for kind, _, _ in records if kind != events.GOOD)
    assert bad == round(len(records) * 0.05)
    assert sum(gen.counts.values()) == len(records)
    assert gen.counts[events.GOOD] == len(records) - bad
    assert set(gen.counts) == set(events.KINDS)  # every kind shows up


def test_bad_fraction_is_respected_when_endless():
    gen = events.generate(None, 0.1, 5, start=START)
    kinds = [next(gen)[0] for _ in range(10_000)]
    share = sum(k != events.GOOD for k in kinds) / len(kinds)
    assert 0.085 < share < 0.115


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_bad_fraction_edges(fraction):
    _, records = _records(500, fraction)
    bad = sum(kind != events.GOOD for kind, _, _ in records)
    assert bad == round(500 * fraction)


def test_bad_kinds_rotate_and_the_heavy_ones_are_rare(sample):
    gen, _ = sample
    others = [gen.counts[k] for k in events.BAD_KINDS if k not in malformed.HEAVY_KINDS]
    assert max(others) - min(others) <= 1
    for heavy in malformed.HEAVY_KINDS:
        assert 1 <= gen.counts[heavy] <= max(others) // 5, heavy


def test_bad_kinds_can_be_chosen():
    gen, records = _records(2000, 0.5, bad_kinds=["empty", "not_json"])
    assert {k for k, _, _ in records} == {events.GOOD, "empty", "not_json"}
    with pytest.raises(ValueError, match="unknown bad kinds"):
        events.generate(10, 0.5, 1, bad_kinds=["nope"])


def test_good_events_pass_the_schema(sample):
    _, records = sample
    good = _by_kind(records)[events.GOOD]
    assert len(good) > 11_000
    for key, data in good:
        event = events.check(data)
        assert set(event) == set(events.FIELDS)
        assert key == event["session_id"]  # partition key: per-session order
        ts = dt.datetime.fromisoformat(event["occurred_at"])
        assert ts.tzinfo is not None
        assert START - dt.timedelta(seconds=31) <= ts <= START + dt.timedelta(seconds=12_000)
        assert event["url"].startswith("https://")
        for name, limit in events.MAX_BYTES.items():
            if event[name] is not None:
                assert len(event[name].encode()) <= limit, name


def test_good_events_are_a_realistic_mix(sample):
    _, records = sample
    good = [json.loads(d) for _, d in _by_kind(records)[events.GOOD]]
    classes = collections.Counter(events.classify_user_agent(e["user_agent"]) for e in good)
    assert set(classes) == {"desktop", "mobile", "tablet", "bot", "other"}
    assert classes["desktop"] + classes["mobile"] > 0.6 * len(good)
    offsets = collections.Counter(e["occurred_at"][-6:] for e in good)
    assert offsets["+00:00"] > 0.5 * len(good) and "+05:30" in offsets and "-05:00" in offsets
    assert any(":" in e["ip"] for e in good) and sum("." in e["ip"] for e in good) > 0.7 * len(good)
    assert any(e["referrer"] is None for e in good) and any(e["referrer"] for e in good)
    assert any(e["user_id"] is None for e in good) and any(e["user_id"] for e in good)
    assert any("?" in e["url"] for e in good)
    assert len({e["url"].split("/")[2] for e in good}) >= 4
    assert len({e["event_id"] for e in good}) == len(good)
    sizes = sorted(len(d) for _, d in _by_kind(records)[events.GOOD])
    assert 200 < sizes[len(sizes) // 2] < 500


def test_awkward_but_valid_text_is_included(sample):
    _, records = sample
    good = [d for _, d in _by_kind(records)[events.GOOD]]
    awkward = []
    for d in good:
        e = json.loads(d)
        text = e["url"] + (e["referrer"] or "") + e["user_agent"]
        if any(s in text for s in ("\n", "\t", "\\", '"', "😀", "é", "日本")):
            awkward.append(d)
    assert len(awkward) > 50
    assert any(b"\\u" in d for d in awkward)          # some written with \u escapes
    assert any(not d.isascii() for d in awkward)       # some as raw UTF-8
    for d in awkward:
        events.check(d)


def test_each_bad_kind_is_really_bad(sample):
    _, records = sample
    kinds = _by_kind(records)
    for _key, data in kinds["invalid_utf8"]:
        with pytest.raises(UnicodeDecodeError):
            data.decode("utf-8")
    for _key, data in kinds["not_json"]:
        with pytest.raises(ValueError):
            json.loads(data.decode("utf-8"))
    for _key, data in kinds["empty"]:
        assert data == b""
    for _key, data in kinds["not_object"]:
        assert not isinstance(json.loads(data), dict)
    for _key, data in kinds["missing_field"]:
        event = json.loads(data)
        assert [f for f in events.REQUIRED if f not in event]
    for _key, data in kinds["wrong_type"]:
        event = json.loads(data)
        assert any(not isinstance(event.get(f), str) for f in events.REQUIRED) or \
            any(event.get(f) is not None and not isinstance(event[f], str)
                for f in events.NULLABLE)
    for _key, data in kinds["bad_timestamp"]:
        text = json.loads(data)["occurred_at"]
        try:
            parsed = dt.datetime.fromisoformat(text)
        except ValueError:
            continue
        assert parsed.tzinfo is None, text
    for _key, data in kinds["too_long"]:
        event = json.loads(data)
        over = [f for f, limit in events.MAX_BYTES.items()
                if isinstance(event.get(f), str) and len(event[f].encode()) > limit]
        assert over, event
    for _key, data in kinds["near_limit"]:
        assert 800_000 < len(data) < 1_000_000
        with pytest.raises(ValueError):
            json.loads(data)
    assert kinds["deep_nesting"]
    for _key, data in kinds["deep_nesting"]:
        assert 180_000 < len(data) < 230_000
        assert data.startswith(b'{"event_id": "')
        assert _depth(data) > 25_000  # well-formed, only too deep
        with pytest.raises(RecursionError):
            json.loads(data)
        with pytest.raises(ValueError, match="^not_json: maximum recursion depth exceeded"):
            events.check(data)
    for kind in events.BAD_KINDS:
        for _key, data in kinds[kind]:
            with pytest.raises(ValueError):
                events.check(data)


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = bytes(sorted(set(range(256)) - set(b"[]{}")))


def _depth(data: bytes) -> int:
    """Deepest nesting of a JSON text; asserts its brackets (outside strings) balance."""
    brackets = _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKET)
    depth = deepest = 0
    for run in re.findall(rb"[\[{]+|[\]}]+", brackets):
        depth += len(run) if run[:1] in b"[{" else -len(run)
        assert depth >= 0
        deepest = max(deepest, depth)
    assert depth == 0
    return deepest


def test_deep_nesting_shapes_vary_and_nest_tens_of_thousands_deep():
    gen, records = _records(40, 1.0, seed=8, bad_kinds=["deep_nesting"])
    assert gen.counts["deep_nesting"] == 40
    depths = [_depth(data) for _, _, data in records]
    assert min(depths) > 25_000 and max(depths) > 95_000
    shapes, fields = collections.Counter(), set()
    for _, _, data in records:
        for shape, opening in (("arrays", b"[["), ("mixed", b'[{"v":[{"v":'),
                               ("objects", b'{"v":{"v":')):
            if opening in data:
                shapes[shape] += 1
                head = data[:data.index(opening)]  # ... "url": [[[...
                fields.add(head.rsplit(b'"', 2)[-2].decode())
                break
    assert sum(shapes.values()) == 40 and len(shapes) == 3
    assert fields == {"url", "referrer", "user_agent"}


def test_every_record_fits_in_a_kinesis_record(sample):
    _, records = sample
    for _kind, key, data in records:
        assert 1 <= len(key) <= 256
        assert len(data) + len(key.encode()) < events.MAX_RECORD_BYTES


def test_bad_records_use_random_partition_keys(sample):
    _, records = sample
    keys = [key for kind, key, _ in records if kind != events.GOOD]
    assert len(set(keys)) == len(keys)
    assert not any(k.startswith("s-") for k in keys)


def test_good_ids_are_kept_on_request():
    gen = events.generate(300, 0.1, 3, start=START, keep_ids=True)
    good = [json.loads(d)["event_id"] for kind, _, d in gen if kind == events.GOOD]
    assert gen.good_ids == good


@pytest.mark.parametrize("ua, expected", [(ua, cls) for cls, ua in events.USER_AGENTS] + [
    ("Mozilla/5.0 (compatible; YandexBot/3.0)", "bot"),
    ("Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/120.0", "bot"),
    ("", "other"),
])
def test_classify_user_agent(ua, expected):
    assert events.classify_user_agent(ua) == expected


@pytest.mark.parametrize("ip, prefix", [
    ("203.0.113.57", "203.0.113.0/24"),
    ("2001:db8:85a3:1:2::7", "2001:db8:85a3::/48"),
    ("2001:db8::1", "2001:db8::/48"),
])
def test_ip_prefix(ip, prefix):
    assert events.ip_prefix(ip) == prefix


def test_stage_worker_dead_letters_deep_nesting_as_not_json():
    """The stage worker's json.loads raises RecursionError on it: a dead letter, not a crash."""
    from shardline import codec
    from shardline.tables import PAGE_VIEWS
    from shardline.workers import rows
    from shardline.workers.transform import page_view

    _, records = _records(40, 0.5, seed=12, bad_kinds=["deep_nesting"])
    batch = codec.Batch("s", "shardId-000000000000", [
        codec.Record(f"{i:056d}", 0, key, data, 1_764_138_601_000)
        for i, (_, key, data) in enumerate(records)])
    out = rows.RowBuilder(PAGE_VIEWS, page_view).build(
        batch, dt.datetime(2026, 11, 26, 7, 0, tzinfo=dt.timezone.utc))
    assert out.rows == 20 and len(out.dead_letters) == 20
    for d in out.dead_letters:
        assert d["reason"] in (
            "not JSON: maximum recursion depth exceeded while decoding a JSON array "
            "from a unicode string",
            "not JSON: maximum recursion depth exceeded while decoding a JSON object "
            "from a unicode string"), d["reason"]
    assert rows.dead_letter_lines(out.dead_letters).count("\n") == 20


def test_hostile_strings_are_awkward_text_and_valid(sample):
    assert set(HOSTILE) <= set(events.AWKWARD)
    assert {"\\N", "\\.", "NULL", "'; DROP TABLE page_views; --"} <= set(HOSTILE)
    seen = set()
    for _, data in _by_kind(sample[1])[events.GOOD]:
        event = events.check(data)
        text = event["url"] + (event["referrer"] or "") + event["user_agent"]
        seen.update(h for h in HOSTILE if h in text)
    assert seen == set(HOSTILE)


def _stream(n: int) -> list[tuple[str, str, bytes]]:
    return [("good" if i % 4 else "not_json", f"k{i}", f"data-{i}".encode()) for i in range(n)]


def test_with_duplicates_re_emits_good_records_later_byte_for_byte():
    source = _stream(20_000)
    counts = collections.Counter()
    out = list(events.with_duplicates(iter(source), 0.1, 3, counts))
    dups = [(pos, rec) for pos, rec in enumerate(out) if rec[0] == "duplicate"]
    assert counts["duplicates"] == len(dups) and 1200 < len(dups) < 1800
    assert [rec for rec in out if rec[0] != "duplicate"] == source  # order kept
    first = {}
    for pos, (kind, key, data) in enumerate(out):
        if kind != "duplicate":
            first[(key, data)] = (pos, kind)
    for pos, (_, key, data) in dups:
        orig_pos, kind = first[(key, data)]
        assert kind == "good" and 0 < pos - orig_pos <= 2000 + len(dups)
    assert len({(k, d) for _, (_, k, d) in dups}) == len(dups)  # each at most once
    again = list(events.with_duplicates(iter(source), 0.1, 3, collections.Counter()))
    assert again == out  # seeded
    assert list(events.with_duplicates(iter(source), 0.1, 4, collections.Counter())) != out


def test_with_duplicates_off_passes_the_source_through():
    source = _stream(100)
    counts = collections.Counter()
    assert list(events.with_duplicates(iter(source), 0.0, 1, counts)) == source
    assert counts["duplicates"] == 0
    every = list(events.with_duplicates(iter(source), 1.0, 1, counts))
    assert counts["duplicates"] == 75 and len(every) == 175


def test_pipeline_stage_agrees_with_the_generator():
    """The real stage worker (shardline.workers.rows + the default transform) accepts exactly
    the good records and dead-letters exactly the bad ones: the end-to-end counts depend on it."""
    from shardline import codec
    from shardline.tables import PAGE_VIEWS
    from shardline.workers import rows
    from shardline.workers.transform import page_view

    _, records = _records(6000, 0.1, seed=99)
    batch = codec.Batch("s", "shardId-000000000000", [
        codec.Record(f"{i:056d}", 0, key, data, 1_764_138_601_000)
        for i, (_, key, data) in enumerate(records)])
    out = rows.RowBuilder(PAGE_VIEWS, page_view).build(
        batch, dt.datetime(2026, 11, 26, 7, 0, tzinfo=dt.timezone.utc))
    dead = {int(d["sequence_number"]) for d in out.dead_letters}
    expected = {i for i, (kind, _, _) in enumerate(records) if kind != events.GOOD}
    assert dead == expected
    assert out.rows == len(records) - len(expected)
