"""The loader contract: the same scenarios against each warehouse dialect.

PostgreSQL runs them for real (moto S3 + PostgreSQL, plain and redshift-like); Redshift
checks the generated plan with a recording fake connection (see conftest.py). A scenario
asserts rows only where the backend has rows (``backend.supports_rows``); all check the
ledger (control store), the ``loads`` history and the ``loaded_files`` record.
"""
from __future__ import annotations

import logging
from pathlib import Path

from shardline.errors import ServiceUnavailable
from shardline.tables import PAGE_VIEWS
from tests.contract.loader_kit import (SHARD0, SHARD1, STREAM, event_id, page_view, seq,
                                       stage_file)


def run_until_idle(loader, limit: int = 20) -> list:
    """Step until not loading any more, then release the loader lease (as ``run`` does on
    its way out), so the next loader of the scenario can take the table."""
    results = []
    for _ in range(limit):
        r = loader.step()
        results.append(r)
        if r.state != "loaded":
            loader.release()
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
    assert [(row[0], row[1], row[2]) for row in backend.loads()] == [(load.load_id, 2, 3)]
    assert backend.record() == {a.s3_key: load.load_id, b.s3_key: load.load_id}
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
        assert [row[2:] for row in backend.loads()] == [(18, 12), (13, 3)]
    assert len(backend.record()) == 3


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
    assert backend.loads() == [] and backend.record() == {}
    if backend.supports_rows:
        assert backend.stored() == {}
    assert loader.step().state == "backoff"
    backend.check_atomic()


def test_killed_between_warehouse_commit_and_ledger_update(backend):
    """The warehouse committed, the control store never heard (the loader died, or the store
    was down): the next loader reconciles from loaded_files; nothing loaded twice or lost."""
    a = backend.stage("a", [page_view(1, 1), page_view(2, 2)])

    class StoreDownAfterCommit:
        def __init__(self, store):
            self.store = store

        def __getattr__(self, name):
            return getattr(self.store, name)

        def mark_loaded(self, *args, **kw):
            raise ServiceUnavailable("control store: connection refused")

    first = backend.loader(store=StoreDownAfterCommit(backend.store))
    r = first.step()
    assert r.state == "loaded"
    load_id = r.load.load_id
    assert backend.ledger() == {a.s3_key: ("pending", None)}  # the store did not hear
    assert backend.record() == {a.s3_key: load_id}
    first.release()  # it died: its lease lapses
    b = backend.stage("b", [page_view(2, 2), page_view(3, 3)])
    results = run_until_idle(backend.loader())
    assert backend.ledger() == {a.s3_key: ("loaded", load_id),
                                b.s3_key: ("loaded", results[0].load.load_id)}
    assert set(backend.record()) == {a.s3_key, b.s3_key}
    assert [row[1] for row in backend.loads()] == [1, 1]  # "a" was never loaded again
    if backend.supports_rows:
        assert sorted(backend.stored()) == [event_id(1), event_id(2), event_id(3)]


def test_a_file_whose_copy_keeps_failing_is_quarantined(backend):
    """After loader.quarantine_after failed COPYs the bad file leaves the load path with its
    error; the good one then loads."""
    good = backend.stage("good", [page_view(1, 1)])
    bad = backend.stage_bad("bad", [page_view(2, 2, occurred_at="not a time")])
    loader = backend.loader(**{"loader.quarantine_after": "2"})
    for _ in range(2):
        loader.retry_at = 0.0  # skip the backoff
        assert loader.step().state == "failed"
    assert backend.ledger()[bad.s3_key] == ("quarantined", None)
    (q,) = backend.store.quarantined("page_views")
    assert q.file.s3_key == bad.s3_key and "not a time" in q.error
    if hasattr(backend, "wh"):
        backend.wh.fail_on.clear()
    loader.retry_at = 0.0
    assert run_until_idle(loader)[0].state == "loaded"
    assert backend.ledger()[good.s3_key][0] == "loaded"
    if backend.supports_rows:
        assert set(backend.stored()) == {event_id(1)}


def test_quarantine_counts_survive_a_loader_restart(backend):
    """The failures are counted in the control store: a new Loader after every failure
    (a restarted process) still quarantines the file at loader.quarantine_after."""
    bad = backend.stage_bad("bad", [page_view(2, 2, occurred_at="not a time")])
    for n in (1, 2):
        loader = backend.loader(**{"loader.quarantine_after": "3"})
        assert loader.step().state == "failed"
        loader.release()  # the next process takes the lease at once
        loader.close()
        assert backend.store.get_file(bad.s3_key).state == "pending"
        count, error = backend.store.copy_failures(bad.s3_key)
        assert count == n and "not a time" in error
    loader = backend.loader(**{"loader.quarantine_after": "3"})
    assert loader.step().state == "failed"
    (q,) = backend.store.quarantined("page_views")
    assert q.file.s3_key == bad.s3_key and "not a time" in q.error


def test_one_loader_per_table_the_other_stands_by(backend):
    backend.stage("a", [page_view(1, 1)])
    first, second = backend.loader(), backend.loader()
    assert first.step().state == "loaded"
    backend.stage("b", [page_view(2, 2)])
    assert second.step().state == "standby"
    assert first.step().state == "loaded"
    first.release()
    backend.stage("c", [page_view(3, 3)])
    assert second.step().state == "loaded"
    assert len(backend.record()) == 3


def test_reprocess_file_replaces_its_position_range(backend):
    """A reprocess run's file (``generation``) over positions 2..6 of SHARD0: the stored
    rows of that range are replaced by the file's (3 changed, 5 now rejected: removed,
    6 once rejected: added); rows outside it (1, 7, and 4 on SHARD1) are untouched; an
    event stored at another position keeps its one row, and a stored row whose occurred_at
    the old transform got hours wrong is replaced too. Then a file of the run whose
    records are all rejected now (no rows) still removes its range."""
    from tests.contract.loader_kit import T0

    ms = int(T0.replace(tzinfo=__import__("datetime").timezone.utc).timestamp() * 1000)
    # v1 got event 3's occurred_at 5 h wrong (a time-zone bug, say): far outside the dedup
    # window of the fixed row, it is still found by the records' arrival range.
    wrong = T0 - __import__("datetime").timedelta(hours=5)
    backend.stage("v1", [page_view(1, 1), page_view(2, 2), page_view(3, 3, occurred_at=wrong),
                         page_view(5, 5), page_view(7, 7), page_view(8, 8)],
                  transform_version="v1")
    backend.stage("v1b", [page_view(4, 4, shard=SHARD1)], shard=SHARD1, transform_version="v1")
    run_until_idle(backend.loader())
    r = dict(generation="g1", transform_version="v2", arrival_min_ms=ms, arrival_max_ms=ms)
    backend.stage("r1", [page_view(2, 2), page_view(3, 3, url="https://example.com/new"),
                         page_view(4, 4), page_view(6, 6)],
                  first=(seq(2), 0), last=(seq(6), 0), **r)
    backend.stage("r2", [], first=(seq(8), 0), last=(seq(8), 0), **r)  # 8 now rejected
    results = run_until_idle(backend.loader())
    assert [x.state for x in results] == ["loaded", "idle"]
    assert results[0].load.files == 2
    assert {s for s, _ in backend.ledger().values()} == {"loaded"}
    if backend.supports_rows:
        stored = backend.stored()
        assert sorted(stored) == [event_id(i) for i in (1, 2, 3, 4, 6, 7)]
        assert sorted(r[0] for r in backend.query("SELECT event_id FROM page_views")) == \
            [event_id(i) for i in (1, 2, 3, 4, 6, 7)]  # each once: the 5 h-off row replaced
        assert stored[event_id(3)][3] == "https://example.com/new"
        assert stored[event_id(4)][0] == SHARD1  # stored elsewhere: kept, not doubled
        versions = dict(backend.query("SELECT event_id, transform_version FROM page_views"))
        assert {versions[event_id(i)] for i in (2, 3, 6)} == {"v2"}
        assert {versions[event_id(i)] for i in (1, 4, 7)} == {"v1"}
        assert results[0].load.rows_replaced == 4  # 2, 3, 5 (r1) and 8 (r2)
    else:
        flat = [" ".join(s.split()) for tx in backend.load_transactions() for s in tx]
        assert any(s.startswith("DELETE FROM page_views WHERE arrival_time BETWEEN %s AND %s "
                                "AND ((shard_id = %s AND") for s in flat)


def test_loads_under_the_backends_isolation_level(backend):
    """The redshift-like stand-in runs the suite under each of Redshift's isolation levels
    (SERIALIZABLE, SNAPSHOT as REPEATABLE READ): the loader's own sessions get it."""
    backend.stage("a", [page_view(1, 1)])
    loader = backend.loader()
    assert [r.state for r in run_until_idle(loader)] == ["loaded", "idle"]
    if backend.supports_rows:
        with loader.warehouse.tx() as cur:
            cur.execute("SHOW transaction_isolation")
            assert cur.fetchone() == (backend.isolation,)
        assert set(backend.stored()) == {event_id(1)}


def test_one_bad_row_in_twenty_files_quarantines_its_file_alone(backend, caplog):
    """20 pending files, one row of one of them refused. Redshift's error names no file and
    STL_LOAD_ERRORS holds the URL COPY read (on the redshift-like stand-in a combined part's,
    cut at 256 characters here) and the line: the loader maps them to the staged file, counts
    the failures against it alone, and once it is quarantined the other 19 load together.
    Loads until the table is current: quarantine_after failed ones, then one."""
    long = "x" * 160  # the loader's combined parts get URLs of 256 + a few characters
    bad_at = 7
    good, bad = [], None
    for i in range(20):
        rows = [page_view(i * 3 + j + 1, i * 3 + j + 1) for j in range(3)]
        if i == bad_at:
            rows[1] = page_view(i * 3 + 2, i * 3 + 2, occurred_at="not a time")
            bad = backend.stage_bad(f"f{i:02d}", rows)
        else:
            good.append(backend.stage(f"f{i:02d}", rows))
    prefix = f"{backend.prefix}/{long}"
    part_url = f"s3://{backend.bucket}/{prefix}/combined/page_views/"
    load_id_len = len("20260102T030405Z-0123456789ab")
    pad = 256 + 5 - len(part_url) - load_id_len - len("/0000.csv.gz")
    loader = backend.loader(**{"s3.prefix": prefix + "y" * max(0, pad)})
    states = []
    with caplog.at_level(logging.INFO, logger="shardline"):
        for _ in range(40):
            loader.retry_at = 0.0  # skip the backoff
            r = loader.step()
            states.append(r.state)
            if r.state == "idle":
                break
    loads = sum(s in ("loaded", "failed") for s in states)
    assert states == ["failed", "failed", "failed", "loaded", "idle"], \
        f"{loads} loads until the table was current: {states}"
    assert backend.ledger()[bad.s3_key] == ("quarantined", None)
    assert {backend.ledger()[g.s3_key][0] for g in good} == {"loaded"}
    assert backend.store.copy_failures(good[0].s3_key) == (0, None)
    assert "not a time" in caplog.text
    if backend.supports_rows:
        assert len(backend.stored()) == 19 * 3


def test_a_delete_committed_during_the_copy_is_what_the_merge_sees(backend):
    """A retention or GDPR DELETE commits while the COPY runs. The merge's transaction
    starts after the COPY, so it works on the target as it is now: the deleted event, staged
    again, is stored again (a merge on the older snapshot would skip it as a duplicate,
    or fail the load with a serialization error and redo the COPY); the COPY runs once."""
    backend.stage("first", [page_view(1, 1), page_view(2, 2)])
    run_until_idle(backend.loader())
    backend.stage("again", [page_view(1, 1), page_view(3, 3)])  # a replay, and a new one
    loader = backend.loader()
    copy, copies = loader.dialect.copy, []

    def slow_copy(cur, step):
        copy(cur, step)
        copies.append(step.manifest.key)
        if backend.supports_rows:  # another session deletes, and commits, meanwhile
            backend.execute("DELETE FROM page_views WHERE event_id = %s", (event_id(1),))
        else:  # the recording fake: no transaction that touches the target is open yet
            open_tx = backend.wh.sql()[len(backend.wh.sql()) - backend.wh.sql()[::-1].index(
                "BEGIN") - 1:]
            assert not any(s.startswith(("UPDATE load_fence", "DELETE", "INSERT"))
                           for s in open_tx), open_tx

    loader.dialect.copy = slow_copy
    assert [r.state for r in run_until_idle(loader)] == ["loaded", "idle"]
    assert len(copies) == 1
    if backend.supports_rows:
        assert set(backend.stored()) == {event_id(1), event_id(2), event_id(3)}
        assert [load[3] for load in backend.loads()] == [2, 2]


CLICKS_TABLE = """
[tables.clicks]
transform = "shardline.workers.transform:page_view"
route = { type = ["click"] }
dedup_key = ["event_id"]
sort_key = "occurred_at"
columns = [
""" + "".join(f'  {{ name = "{c.name}", type = "{c.type}"'
              f'{", not_null = true" if not c.nullable else ""} }},\n'
              for c in PAGE_VIEWS.user_columns) + "]\n"


def test_two_tables_load_at_once_each_behind_its_own_fence(backend, tmp_path):
    """A clicks load while a page_views load holds its merge transaction open: each table
    has a fence of its own, so the clicks load neither waits for page_views' fence (on
    Redshift, and on the redshift-like stand-in, write locks are per table and held to
    commit) nor for its COPY."""
    import threading

    from shardline import migrate, tables_file
    from shardline.tables import DEFAULT_TABLES

    path = tmp_path / "tables.toml"
    default = (Path(tables_file.__file__).parent / "default_tables.toml").read_text()
    path.write_text(default + CLICKS_TABLE)
    tables = tables_file.load(str(path))
    assert tables.names == [*DEFAULT_TABLES.names, "clicks"]
    if backend.supports_rows:
        migrate.migrate_tables(backend.conn, backend.target, tables)
    backend.stage("pv", [page_view(1, 1)])
    stage_file(backend.s3, backend.bucket, backend.store,
               f"{backend.prefix}/staged/clicks/{STREAM}/{SHARD0}/c.csv.gz", [page_view(2, 2)],
               table="clicks", staged_at=backend.next_time())
    views = backend.loader(**{"tables.file": str(path)})
    clicks = backend.loader(table="clicks", **{"tables.file": str(path)})
    during: list = []
    run = views.dialect.run

    def merge_held_open(cur, steps, results=None):
        out = run(cur, steps, results)
        if any(s.name == "fence" for s in steps) and not during:
            if backend.supports_rows:  # a clicks load meanwhile, on its own connection
                worker = threading.Thread(target=lambda: during.append(clicks.step().state))
                worker.start()
                worker.join(8)
                during.append("waited" if worker.is_alive() else "done")
                if worker.is_alive():
                    during.append(worker)
            else:
                during.append(clicks.step().state)
        return out

    views.dialect.run = merge_held_open
    assert views.step().state == "loaded"
    for waiting in during[2:]:
        waiting.join(30)
    assert during[:2] in (["loaded", "done"], ["loaded"]), during
    if backend.supports_rows:
        assert backend.query("SELECT event_id FROM clicks") == [(event_id(2),)]
        assert set(backend.stored()) == {event_id(1)}
    else:
        fences = [s.split()[1] for s in backend.wh.sql() if s.startswith("UPDATE load_fence")]
        assert sorted(set(fences)) == ["load_fence_clicks", "load_fence_page_views"]


def test_migrate_drops_a_declared_key_an_earlier_release_made(backend):
    """page_views (migration 005) and a tables-file table made with a primary key by an
    earlier release: migrate leaves no unique key, and a plain index on the key."""
    if not backend.supports_rows:  # the SQL text: tests/unit/test_redshift_sql.py
        return
    from shardline import ddl, migrate, tables_file

    keys = "SELECT constraint_type FROM information_schema.table_constraints WHERE " \
           "table_schema = current_schema() AND table_name = %s AND constraint_type IN " \
           "('PRIMARY KEY', 'UNIQUE')"
    assert backend.query(keys, ("page_views",)) == []
    tables = tables_file.parse(
        "[tables.page_views]\ntransform = \"shardline.workers.transform:page_view\"\n"
        "route = \"default\"\ndedup_key = [\"event_id\"]\ncolumns = [\n"
        "  { name = \"event_id\", type = \"char(36)\", not_null = true },\n]\n"
        "[tables.taps]\ntransform = \"m:f\"\nroute = { type = [\"tap\"] }\ncolumns = [\n"
        "  { name = \"target\", type = \"varchar(64)\", not_null = true },\n]\n")
    old = ddl.create_table(tables["taps"], "redshift-like")[0].replace(
        "transform_version VARCHAR(64)\n)",
        "transform_version VARCHAR(64),\n    PRIMARY KEY (shard_id, sequence_number, "
        "sub_sequence_number)\n)")
    backend.execute(old)
    assert backend.query(keys, ("taps",)) == [("PRIMARY KEY",)]
    changes = migrate.migrate_tables(backend.conn, backend.target, type(tables)(
        (tables["taps"],)))
    backend.conn.autocommit = True
    assert [c.action for c in changes] == ["drop_key"]
    assert backend.query(keys, ("taps",)) == []
    if backend.target == "postgres":
        assert backend.query("SELECT indexname FROM pg_indexes WHERE schemaname = "
                             "current_schema() AND tablename = 'taps'") == [("taps_position",)]


def test_copy_staging_another_row_count_than_the_ledger_fails_the_load(backend, caplog):
    """COPY read fewer rows than the ledger counts (a gzip member skipped, a CSV misparse):
    the load fails with both numbers and an alert (log line and metric) instead of loading
    what it read; then, as for a failed COPY, the file is found and quarantined alone."""
    from prometheus_client import REGISTRY

    from tests.contract.loader_kit import csv_gz

    def mismatches() -> float:
        return REGISTRY.get_sample_value("shardline_loader_row_count_mismatches_total",
                                         {"table": "page_views"}) or 0.0

    good = backend.stage("good", [page_view(1, 1)])
    short = backend.stage("short", [page_view(2, 2), page_view(3, 3), page_view(4, 4)])
    backend.s3.put_object(Bucket=backend.bucket, Key=short.s3_key,
                          Body=csv_gz([page_view(2, 2), page_view(3, 3)]))
    loader = backend.loader(**{"loader.quarantine_after": "2"})
    before = mismatches()
    with caplog.at_level(logging.INFO, logger="shardline"):
        r = loader.step()
    assert r.state == "failed"
    assert "COPY staged 3 rows, but the ledger counts 4" in str(r.error)
    assert "ALERT row count mismatch" in caplog.text and mismatches() == before + 1
    assert backend.ledger() == {good.s3_key: ("pending", None), short.s3_key: ("pending", None)}
    assert backend.loads() == [] and backend.record() == {}
    if backend.supports_rows:
        assert backend.stored() == {}
    states = []
    for _ in range(10):
        loader.retry_at = 0.0  # skip the backoff
        states.append(loader.step().state)
        if states[-1] == "idle":
            break
    assert backend.ledger()[short.s3_key] == ("quarantined", None)
    assert backend.ledger()[good.s3_key][0] == "loaded"
    if backend.supports_rows:
        assert set(backend.stored()) == {event_id(1)}


def _step_until_idle(loader, limit: int = 40) -> list[str]:
    """Step, skipping every backoff, until the loader is idle (then release its lease, as
    ``run`` does on its way out); the states seen."""
    states = []
    for _ in range(limit):
        loader.retry_at = 0.0
        states.append(loader.step().state)
        if states[-1] == "idle":
            loader.release()  # the next loader of the scenario takes the table at once
            return states
    raise AssertionError(f"never idle: {states}")


def test_a_value_the_target_refuses_is_narrowed_down_to_its_file(backend):
    """A load that keeps failing after its COPY (here a CHECK on the target the staging
    table does not have) is narrowed down to its file and quarantined like a failed COPY;
    the other files load."""
    files = [backend.stage(f"f{i}", [page_view(i * 2 + 1, i * 2 + 1),
                                     page_view(i * 2 + 2, i * 2 + 2,
                                               url="https://e.com/poison" if i == 1
                                               else "https://e.com/ok")])
             for i in range(4)]
    if backend.supports_rows:
        backend.execute("ALTER TABLE page_views ADD CONSTRAINT no_poison "
                        "CHECK (url <> 'https://e.com/poison')")
    else:
        backend.wh.poison_keys.add(files[1].s3_key)
    states = _step_until_idle(backend.loader(**{"loader.quarantine_after": "2"}))
    assert backend.ledger()[files[1].s3_key] == ("quarantined", None), states
    assert {backend.ledger()[f.s3_key][0] for f in files if f is not files[1]} == {"loaded"}
    (q,) = backend.store.quarantined("page_views")
    assert "no_poison" in q.error
    if backend.supports_rows:
        assert set(backend.stored()) == {event_id(n) for n in (1, 2, 5, 6, 7, 8)}


def test_an_event_id_back_outside_the_dedup_window_never_stalls_the_table(backend):
    """2,000 events stored with last week's occurred_at; 300 of their ids come back with
    today's (a client re-using ids, a redrive, a replayed backup), then 2,000 fresh events.
    Every fresh one lands, on every warehouse: the dedup key is unique within the dedup
    window only, so a re-sent id outside it is stored again, the same everywhere
    (docs/operations.md), and never fails a load."""
    from datetime import timedelta

    from tests.contract.loader_kit import T0

    week_ago = T0 - timedelta(days=7)
    old = [page_view(n, n, occurred_at=week_ago) for n in range(1, 2001)]
    for part in range(4):
        backend.stage(f"lastweek-{part}", old[part * 500:(part + 1) * 500])
    assert set(_step_until_idle(backend.loader())) <= {"loaded", "idle"}
    resent = [page_view(n, 10_000 + n) for n in range(1, 301)]  # today's occurred_at
    fresh = [page_view(n, n, shard=SHARD1) for n in range(5001, 7001)]
    backend.stage("resent", resent)
    for part in range(4):
        backend.stage(f"fresh-{part}", fresh[part * 500:(part + 1) * 500], shard=SHARD1)
    states = _step_until_idle(backend.loader())
    assert set(states) <= {"loaded", "idle"}, states
    assert {s for s, _ in backend.ledger().values()} == {"loaded"}
    if backend.supports_rows:
        assert backend.query("SELECT count(*), count(DISTINCT event_id) FROM page_views") \
            == [(4300, 4000)]  # the 300 re-sent ids are stored twice, as documented
        stored = {r[0] for r in backend.query("SELECT event_id FROM page_views WHERE "
                                              "shard_id = %s", (SHARD1,))}
        assert stored == {event_id(n) for n in range(5001, 7001)}
