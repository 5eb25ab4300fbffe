"""The lake loader on the real local stack (moto S3, the SQL catalog in PostgreSQL, the
PostgreSQL control store): staged files into the Iceberg table exactly once, duplicates
removed as the warehouse merge does, a kill between the Iceberg commit and the ledger
update repaired from the table's snapshots, a reprocess replacing its range."""
from __future__ import annotations

from typing import Any

import pytest

from shardline.lake import catalog as lake_catalog
from shardline.records.ledger import PENDING
from tests.contract.loader_kit import SHARD1, T0, event_id, page_view, seq
from tests.lake_kit import Lake

pytestmark = pytest.mark.integration


class Killed(BaseException):
    """The process dies here (not an error any handler takes)."""


@pytest.fixture
def lake(stack: Any, pg_schema: str, s3_prefix: str, s3: Any, control_store: Any) -> Lake:
    return Lake(stack, pg_schema, s3_prefix, s3, control_store)


def test_staged_files_land_once_without_duplicates(lake: Lake) -> None:
    # event 2 twice in one file (a producer retry: two positions), event 3 in two files
    lake.stage([page_view(1, 1), page_view(2, 2), page_view(2, 3, url_query="retry"),
                page_view(3, 4, url_query=None, referrer="")])
    lake.stage([page_view(3, 5, url_query="again"), page_view(4, 1, shard=SHARD1)],
               shard=SHARD1)
    loader = lake.loader()
    assert loader.step().state == "loaded"
    assert lake.store.lake_pending_stats("page_views").files == 0
    rows = lake.rows()
    assert [r["event_id"] for r in rows] == [event_id(i) for i in (1, 2, 3, 4)]
    by_id = {r["event_id"]: r for r in rows}
    # the first copy by position; NULL and "" kept apart as the warehouse COPY does
    assert by_id[event_id(2)]["sequence_number"] == seq(2)
    assert (by_id[event_id(3)]["url_query"], by_id[event_id(3)]["referrer"]) == (None, "")
    assert by_id[event_id(1)]["occurred_at"] == T0 and by_id[event_id(1)]["arrival_time"] == T0
    assert {r["transform_version"] for r in rows} == {"v1"}
    # a replayed batch: its events are stored already; the warehouse state is untouched
    lake.stage([page_view(1, 9), page_view(5, 10)])
    assert loader.step().state == "loaded"
    assert [r["event_id"] for r in lake.rows()] == [event_id(i) for i in (1, 2, 3, 4, 5)]
    assert lake.store.pending_stats("page_views").files == 3  # the warehouse's own state


def test_a_kill_between_the_commit_and_the_ledger_neither_doubles_nor_loses(
        lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    first = lake.stage([page_view(1, 1), page_view(2, 2)])
    loader = lake.loader()

    def killed(*args: Any, **kwargs: Any) -> int:
        raise Killed()

    monkeypatch.setattr(lake.store, "mark_lake_loaded", killed)
    with pytest.raises(Killed):
        loader.step()
    monkeypatch.undo()
    assert lake.store.get_file(first.s3_key).lake_state == PENDING  # the ledger never heard
    assert len(lake.rows()) == 2  # but the table holds the commit
    lake.stage([page_view(3, 3)])
    loader.release()  # the dead loader's lease would lapse after loader.lease_ttl_s
    again = lake.loader()  # a new process: reconciles at start, then loads only the new file
    assert again.step().state == "loaded"
    assert [r["event_id"] for r in lake.rows()] == [event_id(i) for i in (1, 2, 3)]
    got = lake.store.get_file(first.s3_key)
    assert got.lake_state == "loaded" and got.lake_load_id.startswith("lake-")
    assert lake.store.lake_pending_stats("page_views").files == 0
    table = lake_catalog.open_table(lake.settings, "page_views")
    assert len(table.snapshots()) == 2  # one commit per load, none for the reconcile


def test_a_kill_before_the_commit_leaves_the_files_pending(
        lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    lake.stage([page_view(1, 1), page_view(2, 2)])
    loader = lake.loader()
    from pyiceberg.table import Transaction

    def killed(self: Any, *args: Any, **kwargs: Any) -> None:
        raise Killed()

    monkeypatch.setattr(Transaction, "commit_transaction", killed)
    with pytest.raises(Killed):
        loader.step()
    monkeypatch.undo()
    assert lake.rows() == []
    loader.release()
    assert lake.loader().step().state == "loaded"
    assert [r["event_id"] for r in lake.rows()] == [event_id(1), event_id(2)]


def test_a_reprocess_file_replaces_the_rows_of_its_range(lake: Lake) -> None:
    lake.stage([page_view(1, 1), page_view(2, 2), page_view(3, 3)])
    lake.stage([page_view(9, 1, shard=SHARD1)], shard=SHARD1)
    loader = lake.loader()
    assert loader.step().state == "loaded"
    # the new transform rejects event 2 and changes event 1; positions 1..3 of shard 0
    arrival_ms = int((T0 - T0.replace(year=1970, month=1, day=1, hour=0, minute=0, second=0,
                                      microsecond=0)).total_seconds() * 1000)
    lake.stage([page_view(1, 1, url_query="v2"), page_view(3, 3, url_query="v2")],
               generation="g20260101", first=(seq(1), 0), last=(seq(3), 0),
               arrival_min_ms=arrival_ms, arrival_max_ms=arrival_ms)
    assert loader.step().state == "loaded"
    rows = lake.rows()
    assert [(r["event_id"], r["url_query"]) for r in rows] == [
        (event_id(1), "v2"), (event_id(3), "v2"), (event_id(9), "x=1")]
    assert lake.store.lake_pending_stats("page_views").files == 0


def test_a_loader_whose_lease_lapsed_cannot_commit_what_the_new_holder_committed(
        lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    from shardline.loaders.lake import commits

    lake.stage([page_view(1, 1), page_view(2, 2)])
    stale, fresh = lake.loader(), lake.loader()
    real = commits.write_manifest
    raced = []

    def race(*args: Any, **kwargs: Any) -> None:
        if not raced:  # the stale loader, between reading the files and its commit
            raced.append(True)
            stale.lease.release()  # its lease lapsed (a long pause); the other takes over
            assert fresh.step().state == "loaded"
        real(*args, **kwargs)

    monkeypatch.setattr(commits, "write_manifest", race)
    result = stale.step()
    assert result.state == "failed" and "CommitFailed" in type(result.error).__name__
    assert [r["event_id"] for r in lake.rows()] == [event_id(1), event_id(2)]  # not doubled


def test_a_load_reads_at_most_max_load_bytes_and_the_rest_follows_at_once(lake: Lake) -> None:
    for i in range(1, 4):
        lake.stage([page_view(i, i)])
    lake.settings = lake.settings.replace(**{"lake.max_load_bytes": "1"})  # one file a load
    loader = lake.loader()
    states = [loader.step() for _ in range(3)]
    assert [(s.state, s.wait_s) for s in states] == [("loaded", 0.0), ("loaded", 0.0),
                                                      ("loaded", 0.05)]
    assert [r["event_id"] for r in lake.rows()] == [event_id(i) for i in (1, 2, 3)]
    assert len(lake_catalog.open_table(lake.settings, "page_views").snapshots()) == 3
