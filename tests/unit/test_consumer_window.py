"""In-flight window and staged watermark: only the contiguous prefix is checkpointable."""
from shardline.consumers.window import Window
from shardline.codec import AGGREGATED, LAST_SUB, Batch, Record


def batch(first: int, n: int = 2, last_flags: int = LAST_SUB) -> Batch:
    recs = [Record(str(10 ** 55 + i), 0, "k", b"x" * 10, 0) for i in range(first, first + n)]
    last = recs[-1]
    recs[-1] = Record(last.sequence_number, 3, "k", last.data, 0, last_flags)
    return Batch("s", "shardId-0", recs)


def test_watermark_waits_for_the_earliest_batch():
    w = Window(10, 10_000)
    t1, t2, t3 = (w.add(batch(i * 10), 100) for i in range(3))
    w.staged(t2)
    w.staged(t3)
    assert w.pop_staged_prefix() == (None, 0)  # t1 still pending
    w.staged(t1)
    cp, n = w.pop_staged_prefix()
    assert cp.sequence_number == str(10 ** 55 + 21) and cp.closes_sequence
    assert n == 6
    assert w.empty() and w.inflight_bytes == 0


def test_failed_batch_blocks_the_watermark():
    w = Window(10, 10_000)
    t1, t2, t3 = (w.add(batch(i * 10), 100) for i in range(3))
    w.staged(t1)
    w.failed(t2, "boom")
    w.staged(t3)
    cp, n = w.pop_staged_prefix()
    assert cp.sequence_number == str(10 ** 55 + 1) and n == 2
    assert w.head().ticket == t2 and w.first_failure().error == "boom"
    assert w.pop_staged_prefix() == (None, 0)


def test_mid_aggregate_checkpoint_does_not_close_sequence():
    w = Window(10, 10_000)
    t = w.add(batch(0, last_flags=AGGREGATED), 100)
    w.staged(t)
    cp, _ = w.pop_staged_prefix()
    assert not cp.closes_sequence and cp.sub_sequence_number == 3


def test_full_by_batches_and_by_bytes():
    w = Window(2, 1000)
    assert w.can_admit(5000)  # an empty window always admits one
    w.add(batch(0), 600)
    assert not w.full() and not w.can_admit(500)
    assert w.can_admit(400)
    w.add(batch(10), 400)
    assert w.full()
    w2 = Window(2, 1000)
    w2.add(batch(0), 1000)
    assert w2.full()
