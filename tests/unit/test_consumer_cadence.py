"""Cadence objects: every N seconds, or N records, without sleeping."""
from shardline.consumers.cadence import CheckpointCadence, Every


def test_every_due_at_start_then_after_interval():
    e = Every(5.0)
    assert e.due(0.0)
    e.mark(0.0)
    assert not e.due(4.9)
    assert e.remaining(4.0) == 1.0
    assert e.due(5.0)


def test_every_not_due_at_start_when_asked():
    e = Every(2.0, start_due=False)
    assert not e.due(0.0)
    assert e.remaining(0.0) == 2.0


def test_checkpoint_by_time_only_when_something_staged():
    c = CheckpointCadence(5.0, 1000)
    c.start(0.0)
    assert not c.due(100.0)  # nothing staged: nothing to write
    c.staged(10)
    assert not c.due(4.0)
    assert c.due(5.0)
    c.mark(5.0)
    assert not c.due(6.0)


def test_checkpoint_by_record_count():
    c = CheckpointCadence(60.0, 100)
    c.start(0.0)
    c.staged(99)
    assert not c.due(1.0)
    c.staged(1)
    assert c.due(1.0)
    c.mark(1.0)
    assert c.pending_records == 0
