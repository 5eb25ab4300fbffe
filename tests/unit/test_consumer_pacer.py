"""Pacer: at most N GetRecords calls/s and B bytes/s per shard, on a fake clock."""
from shardline.consumers.pacer import Pacer


def test_calls_are_spaced_to_the_rate():
    p = Pacer(5, 2_000_000)
    now, calls = 0.0, []
    while now < 10.0:
        w = p.wait_s(now)
        if w > 0:
            now += w
            continue
        calls.append(now)
        p.record(now, 100)
    # never more than 5 calls in any one-second window
    for i, t in enumerate(calls):
        assert len([c for c in calls[i:] if c < t + 1.0 - 1e-6]) <= 5
    assert 49 <= len(calls) <= 51


def test_bytes_budget_delays_the_next_call():
    p = Pacer(5, 2_000_000)
    assert p.wait_s(0.0) == 0.0
    p.record(0.0, 5_000_000)  # one big answer: 3 MB of debt past the 2 MB budget
    w = p.wait_s(0.0)
    assert 1.4 < w <= 1.5 + 1e-9
    assert p.wait_s(1.5) == 0.0


def test_small_reads_only_limited_by_calls():
    p = Pacer(5, 2_000_000)
    p.record(0.0, 1000)
    assert abs(p.wait_s(0.0) - 0.2) < 1e-9
    assert p.wait_s(0.2) == 0.0


def test_rejects_bad_rates():
    import pytest
    with pytest.raises(ValueError):
        Pacer(0, 1)
