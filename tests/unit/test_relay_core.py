"""The relay's engine without sockets: line validation, the group commit before the
acknowledgement, shipping into a producer on an in-memory Kinesis, the journal's segments
deleted only once durable, recovery of what a killed relay journaled (torn tail dropped),
and the bounded queue answering ``full``."""
from __future__ import annotations

import json
import os

from shardline.producer.producer import Producer
from shardline.relay.core import Accepted, Refusal, Relay, parse
from shardline.relay.journal import Journal
from tests.fakes import FakeKinesis
from tests.producer_kit import user_records


def make(tmp_path, fake: FakeKinesis, **kw) -> tuple[Relay[int], list[int]]:
    acked: list[int] = []
    producer = Producer("s", client=fake, linger_ms=2, on_full="drop")
    journal = Journal(str(tmp_path), kw.pop("segment_bytes", 1 << 20), kw.pop("age", 0.05))
    relay: Relay[int] = Relay(journal, producer, max_pending_bytes=kw.pop("pending", 1 << 20),
                              on_commit=acked.extend)
    return relay, acked


def test_parse_keeps_the_senders_event_id_and_refuses_what_is_not_an_object():
    got = parse(b'{"event_id":"e-1","session_id":"s","url":"/"}', 1000, True)
    assert isinstance(got, Accepted) and got.event_id == "e-1" and got.key == "s"
    assert json.loads(got.line) == {"event_id": "e-1", "session_id": "s", "url": "/"}
    assert got.line.endswith(b"\n") and got.line.count(b"\n") == 1
    for line, reason in ((b"[1,2]", "invalid"), (b"nope", "invalid"), (b'"x"', "invalid"),
                         (b'{"event_id": 7}', "invalid"), (b"{" + b" " * 2000 + b"}",
                                                           "too_large")):
        got = parse(line, 1000, True)
        assert isinstance(got, Refusal) and got.reason == reason, line
    assigned = parse(b'{"url":"/a"}', 1000, True)
    assert isinstance(assigned, Accepted)
    assert json.loads(assigned.line)["event_id"] == assigned.event_id == assigned.key
    refused = parse(b'{"url":"/a"}', 1000, False)
    assert isinstance(refused, Refusal) and refused.text == "no event_id"


def test_acknowledged_after_the_commit_then_shipped_and_the_segment_released(tmp_path):
    fake = FakeKinesis(shards=2)
    relay, acked = make(tmp_path, fake)
    for i in range(5):
        got = relay.offer(json.dumps({"event_id": f"e{i}", "session_id": "s"}).encode(), i,
                          1000, True)
        assert isinstance(got, Accepted)
    assert acked == [] and os.listdir(tmp_path) == []     # nothing answered before the fsync
    relay.step(0.0)
    assert acked == [0, 1, 2, 3, 4]
    (seg,) = os.listdir(tmp_path)
    assert len((tmp_path / seg).read_bytes().splitlines()) == 5
    assert relay.producer.flush(5)
    relay.step(1.0)                                        # old enough: closed and released
    assert os.listdir(tmp_path) == [] and relay.depth_bytes() == 0
    assert relay.counts.accepted == relay.counts.shipped == 5
    assert sorted(json.loads(d)["event_id"] for _, d in user_records(fake.stored())) == \
        [f"e{i}" for i in range(5)]
    relay.close()


def test_a_killed_relays_journal_is_shipped_again_torn_tail_dropped(tmp_path):
    stalled = FakeKinesis(shards=1)
    stalled.put_gate.clear()                               # Kinesis stalls: nothing durable
    relay, acked = make(tmp_path, stalled)
    for i in range(3):
        relay.offer(json.dumps({"event_id": f"e{i}"}).encode(), i, 1000, True)
    relay.step(0.0)
    assert acked == [0, 1, 2]
    relay.step(5.0)
    assert len(os.listdir(tmp_path)) == 1                 # not durable: kept
    # the process dies here (no close); a torn, never acknowledged line is at the end
    (seg,) = os.listdir(tmp_path)
    with open(tmp_path / seg, "ab") as f:
        f.write(b'{"event_id":"torn"')
    healthy = FakeKinesis(shards=1)
    again, _ = make(tmp_path, healthy)
    assert again.recover() == 3
    again.step(10.0)
    assert again.producer.flush(5)
    again.step(20.0)
    again.step(30.0)
    assert os.listdir(tmp_path) == []
    got = sorted(json.loads(d)["event_id"] for _, d in user_records(healthy.stored()))
    assert got == ["e0", "e1", "e2"]
    stalled.put_gate.set()
    relay.producer.close(0.1)
    again.close()


def test_full_is_answered_at_once_and_counted(tmp_path):
    stalled = FakeKinesis(shards=1)
    stalled.put_gate.clear()
    relay, acked = make(tmp_path, stalled, pending=1024 * 1024)
    line = json.dumps({"event_id": "x", "pad": "p" * 60000}).encode()
    answers = [relay.offer(line, i, 100_000, True) for i in range(40)]
    refused = [a for a in answers if isinstance(a, Refusal)]
    assert refused and {a.reason for a in refused} == {"full"}
    assert relay.counts.refused == {"full": len(refused)}
    assert 1024 * 1024 - 60100 <= relay.depth_bytes() <= 1024 * 1024
    stalled.put_gate.set()
    relay.close()
