"""Reader: start positions, iterator age refresh, expiry and throttling absorbed."""
from __future__ import annotations


import pytest
from botocore.exceptions import EndpointConnectionError

from tests.fakes import Clock, FakeKinesis, client_error

from shardline.consumers.reader import ShardReader, start_position
from shardline.records.control import Checkpoint
from shardline.errors import ServiceUnavailable, ThrottledError
from shardline.settings import Settings


def settings(**kw: str):
    base = {"consumer.get_records_limit": "3", "consumer.iterator_max_age_s": "60"}
    base.update(kw)
    return Settings().replace(**base).consumer


def make(n: int = 10, **kw: str):
    clock = Clock()
    k = FakeKinesis(clock)
    k.add_shard("sh")
    seqs = [k.put("sh", f"r{i}".encode()) for i in range(n)]
    r = ShardReader(k, "s", "sh", settings(**kw), clock=clock, sleep=clock.sleep)
    return clock, k, r, seqs


def drain(r: ShardReader, clock: Clock, calls: int = 20) -> list[str]:
    got = []
    for _ in range(calls):
        clock.advance(r.wait_s(clock()))
        got += [x.sequence_number for x in r.read().records]
    return got


def test_start_positions():
    cs = settings()
    assert start_position(None, cs).kind == "TRIM_HORIZON"
    p = start_position(Checkpoint("123", 0, True), cs)
    assert (p.kind, p.sequence, p.skip_through) == ("AFTER_SEQUENCE_NUMBER", "123", None)
    p = start_position(Checkpoint("123", 4, False), cs)
    assert (p.kind, p.sequence, p.skip_through) == ("AT_SEQUENCE_NUMBER", "123", ("123", 4))
    latest = start_position(None, Settings().replace(**{
        "consumer.initial_position": "LATEST"}).consumer, wall=lambda: 1_800_000_000.0)
    assert latest.kind == "AT_TIMESTAMP" and latest.timestamp.timestamp() == 1_800_000_000.0
    ts = start_position(None, Settings().replace(**{
        "consumer.initial_position": "AT_TIMESTAMP",
        "consumer.initial_timestamp": "2026-01-01T00:00:00Z"}).consumer)
    assert ts.kind == "AT_TIMESTAMP" and ts.timestamp.year == 2026


def test_reads_everything_in_order_with_limit():
    clock, k, r, seqs = make(10)
    r.start(start_position(None, r.cs))
    assert drain(r, clock) == seqs


def test_after_checkpoint_resumes_after_it():
    clock, k, r, seqs = make(10)
    r.start(start_position(Checkpoint(seqs[4], 0, True), r.cs))
    assert drain(r, clock) == seqs[5:]


def test_old_iterator_is_refreshed_after_last_record_read():
    clock, k, r, seqs = make(10)
    r.start(start_position(None, r.cs))
    first = r.read().records
    assert [x.sequence_number for x in first] == seqs[:3]
    clock.advance(59.0)  # past 0.9 * iterator_max_age_s
    assert r.needs_refresh(clock())
    before = r.refreshes
    got = [x.sequence_number for x in r.read().records]
    assert r.refreshes == before + 1
    assert got == seqs[3:6]
    assert k.calls[-2] == ("get_shard_iterator", {
        "StreamName": "s", "ShardId": "sh", "ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
        "StartingSequenceNumber": seqs[2]})
    assert r.iterator_age_s(clock()) == 0.0


def test_refresh_before_any_read_uses_start_position():
    clock, k, r, seqs = make(5)
    r.start(start_position(Checkpoint(seqs[1], 0, True), r.cs))
    r.refresh()
    clock.advance(100.0)
    got = drain(r, clock)
    assert got == seqs[2:]
    types = [c[1]["ShardIteratorType"] for c in k.calls if c[0] == "get_shard_iterator"]
    assert types == ["AFTER_SEQUENCE_NUMBER", "AFTER_SEQUENCE_NUMBER"]


def test_keep_fresh_while_paused():
    clock, k, r, seqs = make(6)
    r.start(start_position(None, r.cs))
    r.read()
    for _ in range(10):  # 10 minutes of backpressure: the iterator never expires
        clock.advance(30.0)
        r.keep_fresh(clock())
        assert r.iterator_age_s(clock()) < 60
    assert drain(r, clock) == seqs[3:]


def test_expired_iterator_loses_and_repeats_nothing():
    clock, k, r, seqs = make(9)
    r.start(start_position(None, r.cs))
    got = [x.sequence_number for x in r.read().records]
    k.faults.append(client_error("ExpiredIteratorException"))
    got += drain(r, clock)
    assert got == seqs
    assert r.retries == 1


def test_throttling_5xx_and_connection_errors_backed_off():
    clock, k, r, seqs = make(9)
    r.start(start_position(None, r.cs))
    k.faults += [client_error("ProvisionedThroughputExceededException"),
                 client_error("InternalFailure", status=500),
                 EndpointConnectionError(endpoint_url="http://x"),
                 client_error("ProvisionedThroughputExceededException")]
    got = drain(r, clock)
    assert got == seqs
    assert r.retries == 4
    backoffs = [s for s in clock.slept if s > 0]
    assert backoffs and max(backoffs) <= 5.0


def test_non_transient_error_is_raised():
    clock, k, r, seqs = make(3)
    r.start(start_position(None, r.cs))
    k.faults.append(client_error("AccessDeniedException"))
    with pytest.raises(Exception) as info:
        r.read()
    assert not isinstance(info.value, (ThrottledError, ServiceUnavailable))


def test_retries_are_bounded_then_raised():
    clock, k, r, seqs = make(3)
    r.start(start_position(None, r.cs))
    k.faults += [client_error("ProvisionedThroughputExceededException")] * 100
    with pytest.raises(ThrottledError):
        r.read()


def test_closed_shard_reports_closed():
    clock, k, r, seqs = make(2)
    k.shards["sh"].closed = True
    r.start(start_position(None, r.cs))
    res = r.read()
    assert res.closed and r.closed and len(res.records) == 2


def test_sub_records_at_checkpoint_are_skipped():
    from aws_kinesis_agg.aggregator import RecordAggregator
    clock, k, r, seqs = make(0)
    agg = RecordAggregator()
    for i in range(5):
        agg.add_user_record(f"pk{i}", f"sub{i}".encode())
    pk, _, data = agg.clear_and_get().get_contents()
    s = k.put("sh", data, pk)
    s2 = k.put("sh", b"plain")
    r.start(start_position(Checkpoint(s, 2, False), r.cs))
    got = [(x.sequence_number, x.sub_sequence_number, x.data) for x in r.read().records]
    assert got == [(s, 3, b"sub3"), (s, 4, b"sub4"), (s2, 0, b"plain")]
