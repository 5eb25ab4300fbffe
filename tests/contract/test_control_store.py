"""One contract for every control store backend: memory, PostgreSQL, DynamoDB (moto).

``postgres`` runs on a fresh schema of the test stack's ``shardline_control`` database and
``dynamodb`` on fresh tables (a per-test prefix) of the stack's moto server; both through
``create_tables()``, as ``shardline migrate --control`` does. Time is a fake clock the test
moves; the stores take every timestamp from it.
"""
from __future__ import annotations

import contextlib
import threading
import uuid
from datetime import datetime, timedelta
from typing import Any, Callable, Iterator

import psycopg2
import pytest

from shardline.records.control import SHARD_END, Checkpoint
from shardline.controlstore import ControlStore, MemoryStore
from shardline.errors import LeaseHeld, LeaseLost
from shardline.records.ledger import LOADED, PENDING, StagedFile

T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC
TTL = 30.0


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def _postgres(request: Any, clock: Clock) -> Iterator[ControlStore]:
    from shardline.controlstore.postgres import PostgresStore

    stack = request.getfixturevalue("stack")
    schema = f"c_{uuid.uuid4().hex[:8]}"
    store = PostgresStore(stack.control_dsn, schema, clock=clock)
    assert store.create_tables() == ["001_control_store", "002_arrival_sample",
                                     "003_copy_failures", "004_ledger_versions",
                                     "005_column_list", "006_lake",
                                     "007_hour_counts"]
    try:
        yield store
    finally:
        store.close()
        conn = psycopg2.connect(stack.control_dsn)
        conn.autocommit = True
        with conn, conn.cursor() as cur:
            cur.execute("SET lock_timeout = '10s'")
            cur.execute(f'DROP SCHEMA "{schema}" CASCADE')
        conn.close()


def _dynamodb(request: Any, clock: Clock) -> Iterator[ControlStore]:
    from shardline.controlstore.dynamodb import DynamoStore

    stack = request.getfixturevalue("stack")
    client = stack.client("dynamodb")
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    store = DynamoStore(client, prefix, clock=clock)
    assert len(store.create_tables()) == len(DynamoStore.TABLES)
    try:
        yield store
    finally:
        for name in store.t.values():
            client.delete_table(TableName=name)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory",
                        pytest.param("postgres", marks=pytest.mark.integration),
                        pytest.param("dynamodb", marks=pytest.mark.integration)])
def store(request: Any, clock: Clock) -> Iterator[ControlStore]:
    if request.param == "memory":
        yield MemoryStore(clock)
    else:
        yield from {"postgres": _postgres, "dynamodb": _dynamodb}[request.param](request, clock)


def at(clock: Clock, plus_s: float = 0.0) -> datetime:
    return datetime.utcfromtimestamp(clock.t + plus_s)


def staged(key: str, table: str = "page_views", rows: int = 10, size: int = 1000,
           staged_at: datetime | None = None, shard: str = "shardId-000",
           lake: bool = False) -> StagedFile:
    return StagedFile(s3_key=key, target_table=table, stream="s", shard_id=shard,
                      first_sequence="100", first_sub_sequence=0, last_sequence="200",
                      last_sub_sequence=3, row_count=rows, byte_count=size,
                      staged_at=staged_at or datetime(2027, 1, 15, 8, 0, 0),
                      lake_state=PENDING if lake else None)


def race(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run fn(i) in n threads released together; results (or exceptions) by i."""
    barrier, out = threading.Barrier(n), [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = fn(i)
        except Exception as exc:  # noqa: BLE001 - the caller looks at it
            out[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)
    return out


# ------------------------------------------------------------------------- leases


def test_create_tables_is_idempotent(store: ControlStore) -> None:
    assert store.create_tables() == []


def test_after_create_tables_the_store_is_at_this_releases_schema(store: ControlStore) -> None:
    """What every command checks at start (``shardline.preflight``)."""
    assert store.schema_state().current, store.schema_state()
    assert store.describe()


def test_tokens_bump_at_every_acquisition_and_a_live_lease_is_held(store, clock) -> None:
    assert store.get_lease("s", "sh") is None
    assert store.acquire_lease("s", "sh", "a", TTL) == 1
    clock.advance(5)
    with pytest.raises(LeaseHeld) as held:
        store.acquire_lease("s", "sh", "b", TTL)
    assert held.value.expires_in_s == pytest.approx(TTL - 5)
    assert "held by a" in str(held.value)
    assert store.acquire_lease("s", "sh", "a", TTL) == 2  # a restarted owner re-takes it
    lease = store.get_lease("s", "sh")
    assert (lease.owner, lease.token, lease.expires_at) == ("a", 2, at(clock, TTL))

    store.release_lease("s", "sh", "b", 2)  # not b's: nothing happens
    assert store.get_lease("s", "sh").owner == "a"
    store.release_lease("s", "sh", "a", 2)
    assert store.get_lease("s", "sh").owner is None
    assert store.acquire_lease("s", "sh", "b", TTL) == 3
    assert [(lease.shard_id, lease.owner, lease.token)
            for lease in store.leases("s")] == [("sh", "b", 3)]
    assert store.leases("other") == []


def test_an_expired_lease_is_taken_over_and_the_old_owner_is_fenced(store, clock) -> None:
    token_a = store.acquire_lease("s", "sh", "a", TTL)
    store.checkpoint("s", "sh", "a", token_a, TTL, Checkpoint("100", 0, True))
    clock.advance(TTL + 1)
    token_b = store.acquire_lease("s", "sh", "b", TTL)
    assert token_b == token_a + 1

    with pytest.raises(LeaseLost):
        store.renew_lease("s", "sh", "a", token_a, TTL)
    with pytest.raises(LeaseLost):
        store.checkpoint("s", "sh", "a", token_a, TTL, Checkpoint("999", 0, True))
    with pytest.raises(LeaseLost):  # right owner name, stale token: still fenced
        store.checkpoint("s", "sh", "b", token_a, TTL, Checkpoint("999", 0, True))
    assert store.get_checkpoint("s", "sh").sequence_number == "100"
    assert store.get_lease("s", "sh").owner == "b"
    assert [e.sequence_number for e in store.history("s", "sh")] == ["100"]

    store.checkpoint("s", "sh", "b", token_b, TTL, Checkpoint("200", 1, False))
    cp = store.get_checkpoint("s", "sh")
    assert (cp.sequence_number, cp.sub_sequence_number, cp.closes_sequence) == ("200", 1, False)


def test_an_expired_lease_cannot_renew_or_checkpoint_even_if_nobody_took_it(store, clock):
    token = store.acquire_lease("s", "sh", "a", TTL)
    clock.advance(TTL)
    with pytest.raises(LeaseLost):
        store.renew_lease("s", "sh", "a", token, TTL)
    with pytest.raises(LeaseLost):
        store.checkpoint("s", "sh", "a", token, TTL, Checkpoint("1", 0, True))
    assert store.get_checkpoint("s", "sh") is None
    assert store.history("s") == []


def test_checkpoint_renews_the_lease_in_the_same_write(store, clock) -> None:
    token = store.acquire_lease("s", "sh", "a", TTL)
    clock.advance(20)
    store.checkpoint("s", "sh", "a", token, TTL, Checkpoint("1", 0, True))
    assert store.get_lease("s", "sh").expires_at == at(clock, TTL)
    clock.advance(20)  # 40 s after acquiring: alive only thanks to the checkpoint's renewal
    store.renew_lease("s", "sh", "a", token, TTL)
    assert store.get_checkpoint("s", "sh").updated_at == at(clock, -20)


def test_concurrent_acquisitions_have_exactly_one_winner(store) -> None:
    results = race(6, lambda i: store.acquire_lease("s", "sh", f"owner{i}", TTL))
    winners = [i for i, r in enumerate(results) if r == 1]
    assert len(winners) == 1, results
    assert all(isinstance(r, LeaseHeld) for i, r in enumerate(results) if i != winners[0])
    assert store.get_lease("s", "sh").owner == f"owner{winners[0]}"


# --------------------------------------------------------------------- replay, history


def test_replay_refuses_a_live_lease_and_works_once_it_is_gone(store, clock) -> None:
    token = store.acquire_lease("s", "sh", "a", TTL)
    store.checkpoint("s", "sh", "a", token, TTL, Checkpoint("500", 0, True))
    with pytest.raises(LeaseHeld, match="live consumer a"):
        store.move_checkpoint("s", "sh", Checkpoint("100", 0, True), "redo")
    assert store.get_checkpoint("s", "sh").sequence_number == "500"

    clock.advance(TTL + 1)  # the consumer died: its lease ran out
    store.move_checkpoint("s", "sh", Checkpoint("100", 0, True), "redo from 100")
    assert store.get_checkpoint("s", "sh").sequence_number == "100"
    newest = store.history("s", "sh", limit=1)[0]
    assert (newest.source, newest.reason, newest.lease_token) == ("replay", "redo from 100", None)

    store.move_checkpoint("s", "sh", None, "from the start")  # clear
    assert store.get_checkpoint("s", "sh") is None
    assert store.history("s", "sh", limit=1)[0].sequence_number == "TRIM_HORIZON"
    assert store.acquire_lease("s", "sh", "b", TTL) == token + 1  # the fence keeps counting


def test_replay_on_a_shard_nobody_ever_leased(store) -> None:
    store.move_checkpoint("s", "new", Checkpoint("7", 0, False), "seed")
    assert store.get_checkpoint("s", "new").sequence_number == "7"
    assert store.acquire_lease("s", "new", "a", TTL) == 1


def test_history_is_newest_first_by_store_assigned_ids(store, clock) -> None:
    tokens = {sh: store.acquire_lease("s", sh, "a", TTL) for sh in ("sh1", "sh2")}
    other = store.acquire_lease("t", "sh1", "a", TTL)
    written = []
    for i in range(4):
        for sh in ("sh1", "sh2"):
            clock.advance(1)
            written.append(store.checkpoint("s", sh, "a", tokens[sh], TTL,
                                            Checkpoint(str(100 + i), 0, True)))
    store.checkpoint("t", "sh1", "a", other, TTL, Checkpoint("9", 0, True), source="shard_end")
    assert written == sorted(written) and len(set(written)) == 8

    everything = store.history("s")
    assert [e.id for e in everything] == written[::-1]
    assert [e.id for e in store.history("s", limit=3)] == written[::-1][:3]
    sh2 = store.history("s", "sh2", limit=2)
    assert [(e.shard_id, e.sequence_number) for e in sh2] == [("sh2", "103"), ("sh2", "102")]
    assert [e.stream for e in store.history("t")] == ["t"]

    entry = store.history_entry(written[2])
    assert (entry.stream, entry.shard_id, entry.sequence_number, entry.lease_token,
            entry.source, entry.created_at) == ("s", "sh1", "101", tokens["sh1"], "consumer",
                                                at(clock, -5))
    assert store.history_entry(10**12) is None


def test_checkpoints_of_a_stream(store, clock) -> None:
    for shard, seq in (("sh2", "20"), ("sh1", "10")):
        token = store.acquire_lease("s", shard, "a", TTL)
        store.checkpoint("s", shard, "a", token, TTL, Checkpoint(seq, 1, False))
    store.move_checkpoint("t", "sh1", Checkpoint("99", 0, True), "other stream")
    got = store.checkpoints("s")
    assert list(got) == ["sh1", "sh2"]
    assert (got["sh1"].sequence_number, got["sh1"].sub_sequence_number,
            got["sh1"].closes_sequence, got["sh1"].updated_at) == ("10", 1, False, at(clock))
    assert store.checkpoints("none") == {}


def test_shard_end_checkpoint_round_trips(store) -> None:
    token = store.acquire_lease("s", "sh", "a", TTL)
    store.checkpoint("s", "sh", "a", token, TTL, Checkpoint(SHARD_END, 0, True), "shard_end")
    assert store.get_checkpoint("s", "sh").shard_end
    assert store.history("s")[0].source == "shard_end"


# -------------------------------------------------------------------------- status


def test_status_upserts_keep_unreported_fields_and_refuse_unknown_ones(store, clock) -> None:
    store.report_status("s", "sh", owner="a", state="reading", records_per_s=12.5,
                        millis_behind_latest=40)
    clock.advance(3)
    store.report_status("s", "sh", state="backpressure", inflight_batches=8)
    store.report_status("s", "sh0", owner="b")
    rows = store.statuses("s")
    assert [r.shard_id for r in rows] == ["sh", "sh0"]
    row = rows[0]
    assert (row.owner, row.state, row.records_per_s, row.millis_behind_latest,
            row.inflight_batches, row.iterator_age_ms, row.updated_at) == (
        "a", "backpressure", 12.5, 40, 8, None, at(clock))
    with pytest.raises(TypeError, match="bogus"):
        store.report_status("s", "sh", bogus=1)
    assert store.statuses("other") == []


# ---------------------------------------------------------------------- the ledger


def test_record_is_idempotent_under_a_race(store) -> None:
    results = race(8, lambda i: store.record_file(staged("k/1.csv.gz", size=100 + i)))
    assert sorted(results, key=str) == [False] * 7 + [True], results
    winner = results.index(True)
    assert store.get_file("k/1.csv.gz").byte_count == 100 + winner
    assert store.pending_stats("page_views").files == 1


def test_a_retried_record_never_moves_a_loaded_file_back(store) -> None:
    assert store.record_file(staged("k/1")) is True
    assert store.mark_loaded("page_views", ["k/1"], "load-1") == 1
    assert store.record_file(staged("k/1")) is False
    f = store.get_file("k/1")
    assert (f.state, f.load_id) == (LOADED, "load-1")
    assert store.get_file("missing") is None


def test_a_file_keeps_its_column_list(store) -> None:
    """The loader's COPY names the columns the stage worker wrote (docs/tables.md)."""
    import dataclasses

    store.record_file(dataclasses.replace(staged("k/cols"), column_list="a,b,shard_id"))
    store.record_file(staged("k/none"))
    assert store.get_file("k/cols").columns == ("a", "b", "shard_id")
    got = {f.s3_key: f.columns for f in store.pending_files("page_views", 10)}
    assert got == {"k/cols": ("a", "b", "shard_id"), "k/none": None}


def test_a_file_without_good_rows_is_born_loaded(store) -> None:
    assert store.record_file(staged("k/empty", rows=0))
    f = store.get_file("k/empty")
    assert (f.state, f.loaded_at) == (LOADED, f.staged_at)
    assert store.pending_files("page_views", 10) == []


def test_versions_and_reprocess_fields_round_trip(store) -> None:
    """What the loader needs of a reprocess file: its generation, transform version and
    arrival range; a reprocess file without rows is pending (its range must be cleared)."""
    import dataclasses

    entry = dataclasses.replace(staged("k/r", rows=0), generation="g20270115T080000abcd",
                                transform_version="v2", arrival_min_ms=1_800_000_000_000,
                                arrival_max_ms=1_800_000_000_999, state="")
    entry.__post_init__()
    assert store.record_file(entry)
    f = store.get_file("k/r")
    assert (f.generation, f.transform_version, f.arrival_min_ms, f.arrival_max_ms, f.state) == \
        ("g20270115T080000abcd", "v2", 1_800_000_000_000, 1_800_000_000_999, PENDING)
    assert [p.generation for p in store.pending_files("page_views", 10)] == [entry.generation]
    assert store.record_file(staged("k/plain"))
    assert store.get_file("k/plain").generation is None


def test_an_over_long_value_is_refused_not_truncated(store) -> None:
    with pytest.raises(ValueError, match="s3_key"):
        store.record_file(staged("k/" + "x" * 1100))
    assert store.pending_stats("page_views").files == 0


def test_pending_files_oldest_first_with_limit_and_stats(store) -> None:
    base = datetime(2027, 1, 15, 8, 0, 0)
    for key, minute, table in [("b", 2, "page_views"), ("a", 2, "page_views"),
                               ("c", 1, "page_views"), ("z", 0, "clicks")]:
        store.record_file(staged(key, table=table, staged_at=base + timedelta(minutes=minute),
                                 size=10 * minute + 1))
    got = store.pending_files("page_views", 10)
    assert [f.s3_key for f in got] == ["c", "a", "b"]  # staged_at, then key
    assert [f.s3_key for f in store.pending_files("page_views", 2)] == ["c", "a"]
    first = got[0]
    assert (first.state, first.target_table, first.stream, first.shard_id, first.first_sequence,
            first.last_sub_sequence, first.row_count, first.staged_at) == (
        PENDING, "page_views", "s", "shardId-000", "100", 3, 10, base + timedelta(minutes=1))
    stats = store.pending_stats("page_views")
    assert (stats.files, stats.bytes, stats.oldest) == (3, 53, base + timedelta(minutes=1))
    empty = store.pending_stats("nothing")
    assert (empty.files, empty.bytes, empty.oldest) == (0, 0, None)


def test_mark_loaded_flips_only_pending_files_of_that_table(store, clock) -> None:
    for key in ("a", "b", "c"):
        store.record_file(staged(key))
    store.record_file(staged("other", table="clicks"))
    assert store.quarantine("c", "COPY failed") is True
    assert store.mark_loaded("page_views", ["a"], "load-1") == 1
    # a: already loaded, c: quarantined, other: another table, missing: unknown
    assert store.mark_loaded("page_views", ["a", "b", "c", "other", "missing"], "load-2") == 1
    states = {k: (store.get_file(k).state, store.get_file(k).load_id)
              for k in ("a", "b", "c", "other")}
    assert states == {"a": (LOADED, "load-1"), "b": (LOADED, "load-2"),
                      "c": ("quarantined", None), "other": (PENDING, None)}
    assert store.get_file("b").loaded_at == at(clock)
    assert store.pending_files("page_views", 10) == []
    assert store.mark_loaded("page_views", [], "load-3") == 0


def test_lake_state_is_independent_of_the_warehouse_state(store, clock) -> None:
    base = datetime(2027, 1, 15, 8, 0, 0)
    for key, minute, lake in [("b", 2, True), ("a", 2, True), ("c", 1, True),
                              ("w", 0, False)]:
        store.record_file(staged(key, staged_at=base + timedelta(minutes=minute),
                                 size=10 * minute + 1, lake=lake))
    store.record_file(staged("x", table="clicks", lake=True))
    # a file not for the lake (lake_state None) never shows as lake-pending
    assert [f.s3_key for f in store.lake_pending_files("page_views", 10)] == ["c", "a", "b"]
    assert [f.s3_key for f in store.lake_pending_files("page_views", 2)] == ["c", "a"]
    stats = store.lake_pending_stats("page_views")
    assert (stats.files, stats.bytes, stats.oldest, stats.rows) == (
        3, 53, base + timedelta(minutes=1), 30)
    # the warehouse loads "a" and "c": the lake still waits for them
    assert store.mark_loaded("page_views", ["a", "c", "w"], "load-1") == 3
    assert [f.s3_key for f in store.lake_pending_files("page_views", 10)] == ["c", "a", "b"]
    assert store.mark_lake_loaded("page_views", ["a", "b", "w", "x", "missing"], "lake-1") == 2
    assert store.mark_lake_loaded("page_views", ["a"], "lake-2") == 0  # once
    got = {k: store.get_file(k) for k in ("a", "b", "c", "w", "x")}
    assert {k: (f.state, f.lake_state, f.lake_load_id) for k, f in got.items()} == {
        "a": (LOADED, LOADED, "lake-1"), "b": (PENDING, LOADED, "lake-1"),
        "c": (LOADED, PENDING, None), "w": (LOADED, None, None), "x": (PENDING, PENDING, None)}
    assert got["b"].lake_loaded_at == at(clock) and got["c"].lake_loaded_at is None
    assert [f.s3_key for f in store.lake_pending_files("page_views", 10)] == ["c"]
    assert [f.s3_key for f in store.pending_files("page_views", 10)] == ["b"]
    assert store.lake_pending_stats("nothing").files == 0
    assert store.mark_lake_loaded("page_views", [], "lake-3") == 0


def test_concurrent_mark_loaded_flips_each_file_once(store) -> None:
    keys = [f"k{i}" for i in range(20)]
    for key in keys:
        store.record_file(staged(key))
    flipped = race(8, lambda i: store.mark_loaded("page_views", keys, f"load-{i}"))
    assert sum(flipped) == 20, flipped
    assert {store.get_file(k).load_id for k in keys} <= {f"load-{i}" for i in range(8)}


def test_quarantine_takes_a_pending_file_out_with_its_error(store, clock) -> None:
    base = datetime(2027, 1, 15, 8, 0, 0)
    store.record_file(staged("late", staged_at=base + timedelta(minutes=5)))
    store.record_file(staged("early", staged_at=base))
    store.record_file(staged("fine"))
    store.mark_loaded("page_views", ["fine"], "load-1")
    assert store.quarantine("late", "Load into table 'page_views' failed (stl_load_errors)")
    clock.advance(2)
    assert store.quarantine("early", "bad gzip")
    assert store.quarantine("early", "again") is False  # not pending any more
    assert store.quarantine("fine", "x") is False  # loaded files stay loaded
    assert store.quarantine("missing", "x") is False
    got = store.quarantined("page_views")
    assert [(q.file.s3_key, q.error, q.quarantined_at) for q in got] == [
        ("early", "bad gzip", at(clock)),
        ("late", "Load into table 'page_views' failed (stl_load_errors)", at(clock, -2))]
    assert got[0].file.state == "quarantined"
    assert store.pending_stats("page_views").files == 0
    assert store.quarantined("clicks") == []


# ------------------------------------------------- COPY failures (quarantine counts)


def test_copy_failures_are_counted_per_pending_file_with_the_last_error(store) -> None:
    store.record_file(staged("bad"))
    store.record_file(staged("done"))
    store.mark_loaded("page_views", ["done"], "load-1")
    assert store.copy_failures("bad") == (0, None)
    assert store.count_copy_failure("bad", "bad gzip") == 1
    assert store.count_copy_failure("bad", "invalid timestamp") == 2
    assert store.copy_failures("bad") == (2, "invalid timestamp")
    assert store.count_copy_failure("done", "x") == 0  # not pending: nothing written
    assert store.count_copy_failure("missing", "x") == 0
    assert store.copy_failures("done") == store.copy_failures("missing") == (0, None)
    assert sum(race(6, lambda i: store.count_copy_failure("bad", f"e{i}") > 0)) == 6
    assert store.copy_failures("bad")[0] == 8  # atomic increments, none lost
    assert store.quarantine("bad", "invalid timestamp")
    assert store.count_copy_failure("bad", "x") == 0


# ------------------------------------- the upgrade from control tables in the warehouse


def test_import_shard_state_keeps_ids_and_tokens_and_never_overwrites(store, clock) -> None:
    from shardline.records.control import HistoryEntry, Lease
    from shardline.controlstore.base import LegacyCheckpoint

    t = at(clock, -60)
    leases = [Lease("s", "sh-1", "old-host:1", 7, t, t), Lease("s", "sh-2", None, 3, t, t)]
    history = [HistoryEntry(i, "s", "sh-1", str(100 * i), 0, True, "consumer", None, 7, t)
               for i in (40, 41)]
    history.append(HistoryEntry(42, "s", "sh-2", "TRIM_HORIZON", 0, False, "replay",
                                "bad deploy", None, t))
    cps = [LegacyCheckpoint("s", "sh-1", Checkpoint("4100", 0, True, t), 7, 41)]
    assert store.import_shard_state(leases, history, cps) == {
        "leases": 2, "history": 3, "checkpoints": 1}
    assert store.import_shard_state(leases, history, cps) == {
        "leases": 0, "history": 0, "checkpoints": 0}  # a second run changes nothing
    assert store.get_checkpoint("s", "sh-1") == Checkpoint("4100", 0, True, t)
    assert [e.id for e in store.history("s")] == [42, 41, 40]
    assert store.history_entry(42).reason == "bad deploy"
    lease = store.get_lease("s", "sh-1")
    assert (lease.owner, lease.token) == (None, 7)  # released, token kept
    # a consumer of the new release resumes: the next token and a larger history id
    token = store.acquire_lease("s", "sh-1", "new-host:1", TTL)
    assert token == 8
    entry = store.checkpoint("s", "sh-1", "new-host:1", token, TTL, Checkpoint("4200", 0, True))
    assert entry > 42 and store.history("s", "sh-1", limit=1)[0].id == entry
    # newer state is never overwritten by an import
    store.import_shard_state(leases, history, cps)
    assert store.get_checkpoint("s", "sh-1").sequence_number == "4200"
    assert store.get_lease("s", "sh-1").token == 8


# ----------------------------------------------------------------------- the fleet


def test_heartbeats_expire(store, clock) -> None:
    store.heartbeat("host-b", 10, {"version": "0.1.0"})
    store.heartbeat("host-a", 30)
    assert [(h.host_id, h.info, h.expires_at) for h in store.live_hosts()] == [
        ("host-a", {}, at(clock, 30)), ("host-b", {"version": "0.1.0"}, at(clock, 10))]
    clock.advance(10)
    assert [h.host_id for h in store.live_hosts()] == ["host-a"]
    store.heartbeat("host-b", 10)  # it came back
    assert [h.host_id for h in store.live_hosts()] == ["host-a", "host-b"]
    store.remove_host("host-a")
    store.remove_host("never-there")
    assert [(h.host_id, h.renewed_at) for h in store.live_hosts()] == [("host-b", at(clock))]


def test_assignments(store) -> None:
    assert store.assignment("s", "sh1") is None
    store.assign("s", "sh1", "host-a")
    store.assign("s", "sh0", "host-b")
    store.assign("t", "sh1", "host-c")
    store.assign("s", "sh1", "host-b")  # moved
    assert store.assignment("s", "sh1") == "host-b"
    assert store.assignments("s") == {"sh0": "host-b", "sh1": "host-b"}
    store.assign("s", "sh0", None)
    store.assign("s", "never", None)
    assert store.assignments("s") == {"sh1": "host-b"}
    assert store.assignments("t") == {"sh1": "host-c"}


# ------------------------------------- status's view of the fleet and the ledger (issue 13)


def test_hosts_lists_every_registered_host_live_or_not(store, clock) -> None:
    assert store.hosts() == []
    store.heartbeat("host-b", 5, {"stream": "s", "running": "sh0"})
    store.heartbeat("host-a", 30)
    clock.advance(10)  # host-b's heartbeat stopped: not live, still registered
    assert [h.host_id for h in store.live_hosts()] == ["host-a"]
    assert [(h.host_id, h.renewed_at, h.expires_at, h.info) for h in store.hosts()] == [
        ("host-a", at(clock, -10), at(clock, 20), {}),
        ("host-b", at(clock, -10), at(clock, -5), {"stream": "s", "running": "sh0"})]
    store.remove_host("host-b")
    assert [h.host_id for h in store.hosts()] == ["host-a"]


def test_streams_are_those_with_leases_or_assignments(store) -> None:
    assert store.streams() == []
    store.acquire_lease("s2", "sh0", "o", TTL)
    store.acquire_lease("s1", "sh0", "o", TTL)
    store.acquire_lease("s1", "sh1", "o", TTL)
    store.acquire_lease("@loader", "page_views", "o", TTL)  # the loader's own lease
    store.assign("s3", "sh0", "host-a")
    assert store.streams() == ["s1", "s2", "s3"]


def test_staged_totals_count_a_window_in_every_state(store) -> None:
    base = datetime(2027, 1, 15, 8, 0, 0)

    def rec(key, minute, rows, dead, stream="s", table="page_views"):
        f = staged(key, table=table, rows=rows, staged_at=base + timedelta(minutes=minute))
        f.stream, f.dead_letter_count = stream, dead
        f.dead_letter_key = f"dl/{key}" if dead else None
        store.record_file(f)

    rec("old", 0, 100, 50)  # before the window
    rec("a", 5, 10, 1)
    rec("b", 6, 0, 4)  # every record dead: born loaded
    rec("c", 7, 20, 0)
    rec("d", 8, 5, 2, stream="t")
    rec("e", 9, 7, 7, table="clicks")
    store.mark_loaded("page_views", ["a"], "load-1")
    store.quarantine("c", "bad")
    got = store.staged_totals("page_views", base + timedelta(minutes=5))
    assert {k: (v.files, v.rows, v.dead_letters) for k, v in got.items()} == {
        "s": (3, 30, 5), "t": (1, 5, 2)}
    assert store.staged_totals("page_views", base + timedelta(minutes=10)) == {}
    stats = store.pending_stats("page_views")  # "old" and "d" are still pending
    assert (stats.files, stats.rows) == (2, 105)


def test_staged_files_since_returns_whole_entries_with_their_hour_counts(store) -> None:
    from shardline.records.ledger import format_hour_counts, parse_hour_counts

    base = datetime(2027, 1, 15, 8, 0, 0)
    hour = int(base.timestamp()) // 3600  # naive base read as local: only a key here
    for key, minute, table in (("old", 0, "page_views"), ("a", 5, "page_views"),
                               ("b", 6, "page_views"), ("c", 7, "clicks")):
        f = staged(key, table=table, staged_at=base + timedelta(minutes=minute))
        f.hour_counts = format_hour_counts({hour: 7, hour + 1: 3})
        store.record_file(f)
    store.mark_loaded("page_views", ["a"], "load-1")
    got = store.staged_files_since("page_views", base + timedelta(minutes=5))
    assert [(f.s3_key, f.state) for f in got] == [("a", "loaded"), ("b", "pending")]
    assert parse_hour_counts(got[0].hour_counts) == parse_hour_counts(f"{hour}:7,{hour + 1}:3")
    assert sum(parse_hour_counts(got[1].hour_counts).values()) == 10
    assert store.staged_files_since("page_views", base + timedelta(minutes=7)) == []


@pytest.mark.integration
def test_dynamodb_migrate_adds_an_index_missing_from_an_existing_table(stack, clock) -> None:
    from shardline.controlstore.dynamodb import DynamoStore

    client = stack.client("dynamodb")
    store = DynamoStore(client, f"t{uuid.uuid4().hex[:8]}_", clock=clock)
    store.create_tables()
    try:
        files = store.t["files"]
        client.update_table(TableName=files, GlobalSecondaryIndexUpdates=[
            {"Delete": {"IndexName": "staged"}}])  # a table made before the index existed
        assert store.create_tables() == [f"{files}.staged"]
        store.record_file(staged("a", staged_at=at(clock)))
        assert store.staged_totals("page_views", at(clock, -1))["s"].files == 1
        assert store.create_tables() == []
    finally:
        for name in store.t.values():
            client.delete_table(TableName=name)


# ------------------------------------------------------- shardline migrate --control


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> pytest.MonkeyPatch:
    monkeypatch.chdir(tmp_path)  # no ./shardline.ini
    for name in [n for n in __import__("os").environ if n.startswith("SHARDLINE_")]:
        monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize("env, key", [
    ({"SHARDLINE_CONTROL_BACKEND": "redis"}, "control.backend"),
    ({}, "control.dsn"),  # postgres is the default backend and needs a DSN
    ({"SHARDLINE_CONTROL_DSN": "host=db password=hunter2"}, "control.dsn"),
    ({"SHARDLINE_CONTROL_BACKEND": "dynamodb",
      "SHARDLINE_CONTROL_DYNAMODB_ENDPOINT_URL": "ftp://x"}, "control.dynamodb_endpoint_url"),
])
def test_bad_control_settings_exit_78_naming_the_key(cli_env, capsys, env, key) -> None:
    from shardline import cli

    for name, value in env.items():
        cli_env.setenv(name, value)
    assert cli.main(["migrate", "--control"]) == 78
    err = capsys.readouterr().err
    assert key in err and "hunter2" not in err


@pytest.mark.integration
def test_migrate_control_creates_the_postgres_tables_once(stack, cli_env, capsys) -> None:
    from shardline import cli

    schema = f"m_{uuid.uuid4().hex[:8]}"
    cli_env.setenv("SHARDLINE_CONTROL_DSN", stack.control_dsn)
    cli_env.setenv("SHARDLINE_CONTROL_SCHEMA", schema)
    conn = psycopg2.connect(stack.control_dsn)
    conn.autocommit = True
    try:
        assert cli.main(["migrate", "--control"]) == 0
        assert cli.main(["migrate", "--control"]) == 0  # nothing left to do
        with conn.cursor() as cur:
            cur.execute("SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = %s ORDER BY 1", (schema,))
            assert [r[0] for r in cur.fetchall()] == [
                "checkpoint_history", "checkpoints", "hosts", "schema_migrations",
                "shard_assignments", "shard_leases", "shard_status", "staged_files"]
            cur.execute(f'SELECT name FROM "{schema}".schema_migrations')
            assert sorted(cur.fetchall()) == [("001_control_store",), ("002_arrival_sample",),
                                             ("003_copy_failures",), ("004_ledger_versions",),
                                             ("005_column_list",), ("006_lake",),
                                             ("007_hour_counts",)]
        assert cli.main(["migrate", "--control", "--print-sql"]) == 0
        assert "CREATE TABLE shard_leases" in capsys.readouterr().out
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.close()


@pytest.mark.integration
def test_migrate_control_creates_the_dynamodb_tables(stack, cli_env) -> None:
    from shardline import cli
    from shardline.controlstore.dynamodb import DynamoStore

    prefix = f"m{uuid.uuid4().hex[:8]}_"
    for name, value in {**stack.env(), "SHARDLINE_CONTROL_BACKEND": "dynamodb",
                        "SHARDLINE_CONTROL_TABLE_PREFIX": prefix}.items():
        cli_env.setenv(name, value)
    client = stack.client("dynamodb")
    try:
        assert cli.main(["migrate", "--control"]) == 0
        assert cli.main(["migrate", "--control"]) == 0
        names = [n for n in client.list_tables()["TableNames"] if n.startswith(prefix)]
        assert sorted(names) == sorted(prefix + t for t in DynamoStore.TABLES)
        files = client.describe_table(TableName=f"{prefix}files")["Table"]
        assert files["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
        assert {i["IndexName"] for i in files["GlobalSecondaryIndexes"]} == {
            "pending", "quarantined", "staged", "lake_pending"}
    finally:
        for name in [n for n in client.list_tables()["TableNames"] if n.startswith(prefix)]:
            client.delete_table(TableName=name)


# ------------------------------------------------ connection trouble (real backends)


@pytest.mark.integration
def test_postgres_store_rebuilds_its_connection_after_it_was_cut(stack, clock) -> None:
    from shardline.controlstore.postgres import PostgresStore
    from shardline.errors import ServiceUnavailable

    made = _postgres(_Req(stack), clock)
    store = next(made)
    try:
        token = store.acquire_lease("s", "sh", "a", TTL)
        with store.tx() as cur:
            cur.execute("SELECT pg_backend_pid()")
            pid = cur.fetchone()[0]
        with contextlib.closing(psycopg2.connect(stack.control_dsn)) as admin:
            admin.autocommit = True
            with admin.cursor() as cur:
                cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(ServiceUnavailable, match="control store"):
            store.renew_lease("s", "sh", "a", token, TTL)
        store.renew_lease("s", "sh", "a", token, TTL)  # a new connection, same lease
        assert store.get_lease("s", "sh").token == token
    finally:
        next(made, None)  # the fixture's teardown: drop the schema
    down = PostgresStore("host=127.0.0.1 port=1 dbname=x user=y", connect_timeout_s=1,
                         clock=clock)
    with pytest.raises(ServiceUnavailable, match="port=1"):
        down.get_lease("s", "sh")


def test_dynamodb_store_unreachable_is_retriable(clock) -> None:
    import boto3
    from botocore.config import Config

    from shardline.controlstore.dynamodb import DynamoStore
    from shardline.errors import ServiceUnavailable

    client = boto3.client("dynamodb", endpoint_url="http://127.0.0.1:1", region_name="us-east-1",
                          config=Config(retries={"max_attempts": 1}, connect_timeout=1))
    store = DynamoStore(client, "x_", clock=clock)
    with pytest.raises(ServiceUnavailable) as err:
        store.acquire_lease("s", "sh", "a", TTL)
    assert err.value.retriable


class _Req:
    """Just enough of a pytest request for ``_postgres`` outside the ``store`` fixture."""

    def __init__(self, stack: Any):
        self.stack = stack

    def getfixturevalue(self, name: str) -> Any:
        assert name == "stack"
        return self.stack
