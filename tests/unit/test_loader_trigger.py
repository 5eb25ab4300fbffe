"""The pure load trigger: bytes, files, or age of the oldest pending file."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from shardline.loaders.loader import LoadTrigger, PendingStats

NOW = datetime(2026, 1, 1, 12, 0, 0)
T = LoadTrigger(min_bytes=1000, min_files=10, max_interval_s=60)


def stats(files: int, size: int = 1, age_s: float = 0) -> PendingStats:
    return PendingStats(files, size, NOW - timedelta(seconds=age_s) if files else None)


def test_nothing_pending_is_never_due():
    assert T.reason(PendingStats(0, 0, None), NOW) is None
    assert LoadTrigger(1, 1, 0).reason(PendingStats(0, 0, None), NOW) is None


@pytest.mark.parametrize("s, due", [
    (stats(1, 999, 59.9), False),
    (stats(1, 1000, 0), True),      # bytes threshold reached
    (stats(9, 10, 0), False),
    (stats(10, 10, 0), True),       # files threshold reached
    (stats(1, 1, 60), True),        # oldest exactly max_interval_s old
    (stats(1, 1, 59.999), False),
])
def test_thresholds(s, due):
    assert T.due(s, NOW) is due


def test_reason_names_the_threshold():
    assert "min_bytes" in T.reason(stats(1, 5000), NOW)
    assert "min_files" in T.reason(stats(20), NOW)
    assert "max_interval_s" in T.reason(stats(1, 1, 61), NOW)


def test_zero_interval_loads_anything_pending_even_with_clock_skew():
    t = LoadTrigger(10**9, 10**6, 0)
    future = PendingStats(1, 1, NOW + timedelta(seconds=5))  # stage worker's clock ahead
    assert t.due(future, NOW)


def test_oldest_in_the_future_is_not_due_by_age():
    assert not T.due(PendingStats(1, 1, NOW + timedelta(seconds=5)), NOW)


def test_from_settings_uses_production_defaults():
    from shardline.settings import Settings

    t = LoadTrigger.from_settings(Settings().loader)
    # AWS's micro-batch guidance: every 2-5 minutes, or 256 MB (a multiple of 4 slices x 1 MB);
    # no file-count trigger (at 200 shards it fired back to back)
    assert (t.min_bytes, t.min_files, t.max_interval_s) == (256 * 1024 * 1024, 0, 180.0)
    assert not t.due(PendingStats(100_000, 1000, NOW), NOW)


def test_min_bytes_is_rounded_up_to_a_multiple_of_slices_mb():
    from shardline.settings import Settings

    s = Settings().replace(**{"loader.slices": "6", "loader.min_bytes": str(100 * 1024 * 1024)})
    assert LoadTrigger.from_settings(s.loader).min_bytes == 102 * 1024 * 1024
