"""The campaign's plan and its judge, without services: the verdict must be able to fail."""
from __future__ import annotations

import base64
import collections
import gzip
import json

from tests.chaos import schedule, verdict
from tests.fakes import FakeS3
from tests.chaos.corpus import HOSTILE_COLUMNS, Ledger, digest, make_hostile


def test_plan_is_seeded_and_spreads_kills_over_the_three_kinds():
    a = schedule.plan(5, 600, kill_every_s=4)
    assert a == schedule.plan(5, 600, kill_every_s=4)
    assert a != schedule.plan(6, 600, kill_every_s=4)
    kills = collections.Counter(x.arg for x in a if x.what == "kill")
    assert set(kills) == set(schedule.KILL_KINDS)
    assert min(kills.values()) >= 45 and max(kills.values()) - min(kills.values()) <= 1
    assert all(0 < x.at_s < 600 + 10 for x in a)
    assert a == sorted(a)


def test_plan_has_every_outage_at_least_once_and_each_outage_ends():
    for duration in (30, 90, 600):
        a = schedule.plan(1, duration)
        whats = collections.Counter(x.what for x in a)
        assert whats["gearmand_restart"] >= 1
        assert whats["postgres_down"] == whats["postgres_up"] >= 1
        assert whats["s3_down"] == whats["s3_up"] >= 1
        downs = [x.at_s for x in a if x.what == "postgres_down"]
        ups = [x.at_s for x in a if x.what == "postgres_up"]
        assert all(3 <= u - d <= 6 for d, u in zip(downs, ups, strict=True))
    long = schedule.plan(1, 600)
    assert {x.arg for x in long if x.what == "s3_down"} == {"refuse", "freeze"}


def test_host_crashes_only_when_asked_and_they_leave_every_other_action_alone():
    plain = schedule.plan(3, 300)
    assert not [x for x in plain if x.what == "host_crash"]
    hosts = schedule.plan(3, 300, host_crash_every_s=40)
    crashes = [x for x in hosts if x.what == "host_crash"]
    assert 4 <= len(crashes) <= 12 and all(5 <= x.seconds <= 15 for x in crashes)
    assert [x for x in hosts if x.what != "host_crash"] == plain
    assert hosts == sorted(hosts) == schedule.plan(3, 300, host_crash_every_s=40)


def _ledger() -> Ledger:
    ledger = Ledger(good_ids={"a", "b", "c"})
    ledger.bad[digest(b"not json")] += 1
    ledger.bad[digest(b"")] += 2  # two empty records at different positions
    return ledger


def test_rows_pass_only_when_the_sets_are_equal():
    ledger = _ledger()
    v = verdict.Verdict(1)
    verdict.check_rows(v, ledger, lambda sql, args=None: [("a",), ("b",), ("c",)])
    assert (v.missing, v.duplicated, v.unexpected, v.loaded_rows) == (0, 0, 0, 3)
    v = verdict.Verdict(1)
    verdict.check_rows(v, ledger, lambda sql, args=None: [("a",), ("b",), ("b",), ("x",)])
    assert (v.missing, v.duplicated, v.unexpected) == (1, 1, 1)
    assert not v.ok and "missing" in v.line() and "FAIL" in v.line()


def _dl(entries: list[tuple[int, bytes, str]]) -> bytes:
    lines = [json.dumps({"shard_id": "s0", "sequence_number": str(seq), "sub_sequence_number": 0,
                         "data_b64": base64.b64encode(data).decode(), "reason": reason})
             for seq, data, reason in entries]
    return gzip.compress(("\n".join(lines) + "\n").encode())


def test_dead_letters_compare_contents_and_count_a_position_once():
    ledger = _ledger()
    good = [(1, b"not json", "not JSON: x"), (2, b"", "empty"), (3, b"", "empty")]
    # batch re-staged with other boundaries: position 2 in two objects, counted once
    s3 = FakeS3({"p/dead-letter/a": _dl(good[:2]), "p/dead-letter/b": _dl(good[1:])},
                bucket="bucket")
    v = verdict.Verdict(1)
    verdict.check_dead_letters(v, ledger, s3, "bucket", "p")
    assert (v.dead_lettered, v.dead_missing, v.dead_unexpected) == (3, 0, 0)
    assert v.ok

    s3 = FakeS3({"p/dead-letter/a": _dl([(1, b"not json", ""), (4, b'{"ok": 1}', "x")])},
                bucket="bucket")
    v = verdict.Verdict(1)
    verdict.check_dead_letters(v, ledger, s3, "bucket", "p")
    assert (v.dead_missing, v.dead_unexpected, v.dead_without_reason) == (2, 1, 1)
    assert not v.ok and any("unexpected dead letter" in p for p in v.problems)


def test_hostile_rows_must_match_exactly():
    import random

    event = {"event_id": "0b0c6a8e-6b3f-4d7e-9c1a-2f1e0d9c8b7a",
             "occurred_at": "2026-11-26T06:30:01+00:00", "url": "https://shop.example.com/p",
             "referrer": None, "user_agent": "Mozilla/5.0", "ip": "203.0.113.5",
             "user_id": "u-1", "session_id": "s-1"}
    hostile = make_hostile(event, random.Random(3))
    assert hostile != event and hostile["event_id"] == event["event_id"]
    ledger = Ledger(good_ids={event["event_id"]})
    expected = {c: f"value-{c}" for c in HOSTILE_COLUMNS}
    ledger.hostile[event["event_id"]] = expected
    row = (event["event_id"], *expected.values())
    v = verdict.Verdict(1)
    verdict.check_hostile(v, ledger, lambda sql, args=None: [row])
    assert (v.hostile, v.hostile_mismatched) == (1, 0)
    v = verdict.Verdict(1)
    verdict.check_hostile(v, ledger, lambda sql, args=None: [row[:-1] + ("changed",)])
    assert v.hostile_mismatched == 1 and not v.ok


def test_lagging_or_stuck_parts_fail_the_verdict():
    for field, value in (("lagging_shards", ["shardId-1"]), ("stuck_programs", ["loader"]),
                         ("pending_files", 3), ("queued_jobs", 1)):
        v = verdict.Verdict(1)
        assert v.ok
        setattr(v, field, value)
        assert not v.ok, field


def test_plan_gives_the_lake_loader_tail_and_relay_their_share_when_asked():
    kinds = schedule.KILL_KINDS + ("lake-loader",)
    a = schedule.plan(5, 600, kill_every_s=4, kinds=kinds)
    kills = collections.Counter(x.arg for x in a if x.what == "kill")
    assert set(kills) == set(kinds)
    assert max(kills.values()) - min(kills.values()) <= 1
    b = schedule.plan(5, 600, kill_every_s=4, kinds=kinds, source_kinds=("tail", "relay"))
    sources = [x for x in b if x.arg in ("tail", "relay")]
    assert [x for x in b if x not in sources] == a  # the fleet's kills keep their times
    counts = collections.Counter(x.arg for x in sources)
    assert min(counts.values()) >= 40 and max(counts.values()) - min(counts.values()) <= 1


def test_relay_events_are_judged_by_the_relay_acknowledged_ones_exactly_once():
    from tests.chaos.relay import RelaySource

    ledger = Ledger(good_ids={"a"})
    src = RelaySource.__new__(RelaySource)
    src.sent, src.acked, src.kills, src.refused = {"r1", "r2", "r3"}, {"r1", "r2"}, 2, 1
    v = verdict.Verdict(1)
    rows = verdict.check_rows(v, ledger, lambda sql, args=None: [("a",), ("r1",), ("r2",),
                                                                 ("r3",)], src.sent)
    src.check(v, rows)  # r3 sent, not acknowledged, landed once: allowed
    assert (v.unexpected, v.relay_missing, v.relay_duplicated, v.relay_unacked_landed) == \
        (0, 0, 0, 1) and v.ok
    v = verdict.Verdict(1)
    rows = verdict.check_rows(v, ledger, lambda sql, args=None: [("a",), ("r1",), ("r3",),
                                                                 ("r3",)], src.sent)
    src.check(v, rows)  # r2 acknowledged and lost, r3 twice
    assert (v.relay_missing, v.relay_duplicated) == (1, 1) and not v.ok


def test_the_tail_dead_letters_are_told_from_the_producers():
    from tests.chaos.tail import split_letters

    line = json.dumps({"type": "access_log", "file_id": "f", "offset": 7, "line": "x"})
    entries = [{"data_b64": base64.b64encode(d).decode(), "reason": "r"}
               for d in (line.encode(), b"not json", b'{"type": "page_view"}', b"\xff")]
    tailed, others = split_letters(entries)
    assert [(t["file_id"], t["offset"], t["reason"]) for t in tailed] == [("f", 7, "r")]
    assert len(others) == 3
    ledger = _ledger()
    s3 = FakeS3({"p/dead-letter/a": _dl([(1, b"not json", "r"), (2, b"", "e"), (3, b"", "e"),
                                          (4, line.encode(), "r")])}, bucket="bucket")
    v = verdict.Verdict(1)
    verdict.check_dead_letters(v, ledger, s3, "bucket", "p",
                               other_source=lambda d: bool(split_letters([d])[0]))
    assert (v.dead_missing, v.dead_unexpected) == (0, 0) and v.ok


def test_a_lake_that_differs_from_the_warehouse_fails_the_verdict():
    v = verdict.Verdict(1)
    v.lake = True
    assert not v.ok and "DIFFERENT" in v.line()
    v.lake_equals_warehouse = True
    assert v.ok
