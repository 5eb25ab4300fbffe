"""The loader contract: the same scenarios against each warehouse dialect.

PostgreSQL runs them for real (moto S3 + PostgreSQL); Redshift checks the generated
plan with a recording fake connection (see conftest.py). A scenario asserts rows only
where the backend has rows (``backend.supports_rows``); both check the ledger, the
``loads`` history and the watermarks, which the fake keeps transactionally.
"""
from __future__ import annotations

import logging

from tests.contract.loader_kit import SHARD0, SHARD1, event_id, page_view, seq


def run_until_idle(loader, limit: int = 20) -> list:
    results = []
    for _ in range(limit):
        r = loader.step()
        results.append(r)
        if r.state != "loaded":
            return results
    raise AssertionError("the loader never became idle")


def test_loads_every_row_once_and_records_it(backend):
    a = backend.stage("a", [page_view(1, 1), page_view(2, 2)])
    b = backend.stage("b", [page_view(3, 3)], shard=SHARD1)
    results = run_until_idle(backend.loader())
    assert [r.state for r in results] == ["loaded", "idle"]
    load = results[0].load
    assert (load.files, load.rows_copied) == (2, 3)
    assert backend.ledger() == {a.s3_key: ("loaded", load.load_id),
                                b.s3_key: ("loaded", load.load_id)}
    assert [(l[0], l[1], l[2]) for l in backend.loads()] == [(load.load_id, 2, 3)]
    assert backend.watermarks() == {SHARD0: (seq(2), 0), SHARD1: (seq(3), 0)}
    backend.check_dedup_plan()
    if backend.supports_rows:
        assert set(backend.stored()) == {event_id(1), event_id(2), event_id(3)}
        assert backend.loads()[0][3] == 3


def test_same_batch_staged_twice(backend):
    """A retried stage job under a second key: two ledger entries, the same rows."""
    rows = [page_view(i, i) for i in range(1, 6)]
    backend.stage("first", rows)
    backend.stage("again", rows)
    run_until_idle(backend.loader())
    assert {s for s, _ in backend.ledger().values()} == {"loaded"}
    backend.check_dedup_plan()
    if backend.supports_rows:
        assert backend.stored() == {event_id(i): (SHARD0, seq(i), 0, rows[0][2])
                                    for i in range(1, 6)}
        assert backend.loads()[0][2:] == (10, 5)


def test_replay_after_checkpoint_moved_back(backend):
    """Records staged again after a replay: overlapping ranges under different keys,
    once while the first copy is still pending and once after it was loaded."""
    backend.stage("1-10", [page_view(i, i) for i in range(1, 11)])
    backend.stage("5-12", [page_view(i, i) for i in range(5, 13)])  # both pending
    run_until_idle(backend.loader())
    backend.stage("3-15", [page_view(i, i) for i in range(3, 16)])  # after the load
    results = run_until_idle(backend.loader())
    assert results[0].state == "loaded"
    assert {s for s, _ in backend.ledger().values()} == {"loaded"}
    backend.check_dedup_plan()
    if backend.supports_rows:
        assert sorted(backend.stored()) == [event_id(i) for i in range(1, 16)]
        assert [l[2:] for l in backend.loads()] == [(18, 12), (13, 3)]
    assert backend.watermarks() == {SHARD0: (seq(15), 0)}


def test_producer_retry_keeps_the_first_by_position(backend):
    """One event put twice by a retrying producer: same event_id, two sequence numbers
    (and a retry landing on another shard). The first by (shard, sequence by length then
    text, sub-sequence) is kept, whatever the file order."""
    dup, dup2, dup3 = event_id(900), event_id(901), event_id(902)
    # staged first: the LATER copies
    backend.stage("late", [page_view(dup, 7, url="https://e.com/late"),
                           page_view(dup2, 5, sub=2, url="https://e.com/sub2"),
                           page_view(1, 8)])
    # staged second: the earlier copies
    backend.stage("early", [page_view(dup, 3, url="https://e.com/early"),
                            page_view(dup2, 5, sub=1, url="https://e.com/sub1"),
                            page_view(2, 4)])
    # a retry on another shard, and sequence numbers of different lengths
    backend.stage("other", [page_view(dup, 1, shard=SHARD1, url="https://e.com/shard1"),
                            page_view(dup3, "1000", shard=SHARD1, url="https://e.com/1000"),
                            page_view(dup3, "999", shard=SHARD1, url="https://e.com/999")],
                  shard=SHARD1)
    run_until_idle(backend.loader())
    backend.check_dedup_plan()
    if backend.supports_rows:
        stored = backend.stored()
        assert len(stored) == 5
        assert stored[dup] == (SHARD0, seq(3), 0, "https://e.com/early")
        assert stored[dup2] == (SHARD0, seq(5), 1, "https://e.com/sub1")
        assert stored[dup3] == (SHARD1, "999", 0, "https://e.com/999")
        # a later copy of an event already stored is skipped
        backend.stage("later", [page_view(dup, 2, url="https://e.com/even-earlier")])
        run_until_idle(backend.loader())
        assert backend.stored()[dup][3] == "https://e.com/early"


def test_copy_error_rolls_back_and_keeps_files_pending(backend, caplog):
    good = backend.stage("good", [page_view(1, 1)])
    bad = backend.stage_bad("bad", [page_view(2, 2, occurred_at="not a time")])
    loader = backend.loader()
    with caplog.at_level(logging.INFO, logger="shardline"):
        r = loader.step()
    assert r.state == "failed" and r.error.retriable
    # the reason and the file are in the log (Redshift: from STL_LOAD_ERRORS)
    assert "not a time" in caplog.text and bad.s3_key in caplog.text
    assert backend.ledger() == {good.s3_key: ("pending", None), bad.s3_key: ("pending", None)}
    assert backend.loads() == [] and backend.watermarks() == {}
    if backend.supports_rows:
        assert backend.stored() == {}
    assert loader.step().state == "backoff"
    backend.check_atomic()


def test_watermark_only_over_contiguous_loaded_entries(backend):
    """Shard 0 has A(1-2) B(3-4) C(5-6); B was staged last, so a 2-file load takes A and C:
    the watermark stops at A until B is loaded. Shard 1 moves on its own."""
    backend.stage("A", [page_view(1, 1), page_view(2, 2)])
    backend.stage("C", [page_view(5, 5), page_view(6, 6)])
    backend.stage("D", [page_view(7, 1, shard=SHARD1)], shard=SHARD1)
    backend.stage("B", [page_view(3, 3), page_view(4, 4)])
    loader = backend.loader(**{"loader.max_files_per_load": "2"})
    assert loader.step().state == "loaded"  # A, C
    assert backend.watermarks() == {SHARD0: (seq(2), 0)}
    assert loader.step().state == "loaded"  # D, B
    assert backend.watermarks() == {SHARD0: (seq(6), 0), SHARD1: (seq(1), 0)}
    # A replayed old range loaded later never moves the watermark back.
    backend.stage("A-again", [page_view(1, 1)])
    assert run_until_idle(backend.loader())[0].state == "loaded"
    assert backend.watermarks() == {SHARD0: (seq(6), 0), SHARD1: (seq(1), 0)}
    backend.check_dedup_plan()


def test_empty_batches_count_as_loaded_for_the_watermark(backend):
    """A batch with no good rows is born 'loaded' (no object): it does not hold the mark."""
    backend.stage("A", [page_view(1, 1)])
    backend.stage("empty", [], first=(seq(2), 0), last=(seq(3), 0))
    backend.stage("C", [page_view(4, 4)])
    run_until_idle(backend.loader())
    assert backend.watermarks() == {SHARD0: (seq(4), 0)}
