"""The Redshift dialect as SQL text: golden assertions on the load's statement sequence.

There is no Redshift here; a recording fake connection (tests/contract/loader_kit.py)
keeps the load record and records every statement with BEGIN/COMMIT/ROLLBACK; the ledger
is an in-memory control store.
"""
from __future__ import annotations

import json
import logging
import os
from datetime import timedelta

import psycopg2
import pytest

from tests.contract.loader_kit import (IAM_ROLE, T0, Clock, FakeWarehouse,
                                       ledger_row, page_view, seq, settings)
from tests.fakes import FakeS3
from shardline import csvformat
from shardline.controlstore import MemoryStore
from shardline.errors import ConfigError, LoadFailed
from shardline.loaders.warehouse import make_dialect
from shardline.loaders.warehouse.redshift_dialect import RedshiftDialect
from shardline.loaders.loader import Loader

COLS = ("event_id, occurred_at, url, url_host, url_path, url_query, referrer, referrer_host, "
        "user_agent, device_class, ip_prefix, user_id, session_id, shard_id, sequence_number, "
        "sub_sequence_number, arrival_time, staged_at")
STAGE = "stage_page_views_l1"
KEY_A = "pfx/staged/page_views/clicks/shardId-000000000000/a.csv.gz"
KEY_B = "pfx/staged/page_views/clicks/shardId-000000000000/b.csv.gz"

REC_COLS = ("s3_key, target_table, load_id, stream, shard_id, first_sequence, "
            "first_sub_sequence, last_sequence, last_sub_sequence, row_count, byte_count, "
            "staged_at, loaded_at, transform_version, generation")
ROW13 = "(" + ", ".join(["%s"] * 15) + ")"  # one loaded_files row

GUARD = ("SELECT s3_key, load_id FROM loaded_files WHERE target_table = %s AND "
         "loaded_at >= %s AND s3_key IN (%s, %s)")
# The COPY's own transaction: only the staging table (a temporary table of the session)
HOUR_COLS = "load_id, target_table, hour, kind, row_count, recorded_at"
GOLDEN_COPY = [
    "BEGIN",
    GUARD,
    f"CREATE TEMP TABLE {STAGE} (LIKE page_views INCLUDING DEFAULTS)",
    f"COPY {STAGE} ({COLS}) FROM 's3://bucket-x/pfx/manifests/page_views/L1.manifest' "
    f"IAM_ROLE '{IAM_ROLE}' MANIFEST REGION 'eu-west-1' FORMAT AS CSV DELIMITER ',' "
    "NULL AS '\\\\N' GZIP ENCODING UTF8 TIMEFORMAT 'YYYY-MM-DD HH:MI:SS' MAXERROR 0 "
    "STATUPDATE OFF COMPUPDATE OFF",
    f"SELECT COUNT(*) FROM {STAGE}",
    f"SELECT MIN(occurred_at), MAX(occurred_at) FROM {STAGE}",
    "COMMIT",
]
# then the short merge: its snapshot is taken at the fence, after the COPY
GOLDEN = [
    "BEGIN",
    # the table's own fence: a load of another table never waits for it
    "UPDATE load_fence_page_views SET lease_token = %s, load_id = %s, updated_at = %s "
    "WHERE target_table = %s AND lease_token <= %s",
    GUARD,
    f"DELETE FROM {STAGE} USING page_views WHERE {STAGE}.event_id = page_views.event_id "
    "AND page_views.occurred_at BETWEEN %s AND %s",
    f"INSERT INTO page_views ({COLS}, loaded_at, transform_version) SELECT {COLS}, %s, %s "
    f"FROM (SELECT {COLS}, "
    "ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY shard_id, LENGTH(sequence_number), "
    f"sequence_number, sub_sequence_number) AS rn FROM {STAGE}) ranked WHERE rn = 1",
    # it dropped a duplicate: the rows it inserted, counted per hour of arrival
    f"INSERT INTO load_hours ({HOUR_COLS}) SELECT %s, %s, DATE_TRUNC('hour', arrival_time), "
    "%s, COUNT(*), %s FROM (SELECT arrival_time, ROW_NUMBER() OVER (PARTITION BY event_id "
    "ORDER BY shard_id, LENGTH(sequence_number), sequence_number, sub_sequence_number) AS rn "
    f"FROM {STAGE}) ranked WHERE rn = 1 GROUP BY DATE_TRUNC('hour', arrival_time)",
    f"INSERT INTO loaded_files ({REC_COLS}) VALUES {ROW13}, {ROW13}",
    # the files' rows per hour, from the ledger (all four rows arrived in one hour)
    f"INSERT INTO load_hours ({HOUR_COLS}) VALUES (%s, %s, %s, %s, %s, %s)",
    "INSERT INTO loads (load_id, target_table, manifest_key, file_count, byte_count, "
    "rows_copied, rows_inserted, lease_token, started_at, finished_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
    f"DROP TABLE {STAGE}",
    "COMMIT",
]


class Rig:
    """A Redshift loader over the recording fake, fake S3 and an in-memory store."""

    def __init__(self, entries, inserted: int | None = None, **overrides: str):
        self.s3, self.clock = FakeS3(), Clock()
        self.store = MemoryStore(self.clock)
        for e in entries:
            self.store.record_file(e)
        self.wh = FakeWarehouse(s3=self.s3, inserted=inserted,
                                rows_of=lambda key: self.store.get_file(key).row_count)
        cfg = settings(**{"warehouse.dialect": "redshift", "warehouse.iam_role": IAM_ROLE,
                          "aws.region": "eu-west-1", "loader.max_interval_s": "0",
                          "loader.combine_min_bytes": "0",  # (its own test below)
                          **overrides})
        self.loader = Loader(cfg, "page_views", dialect=make_dialect(cfg), s3=self.s3,
                             connect=self.wh, store=self.store, clock=self.clock,
                             load_id_factory=lambda now: "L1")

    def load_transaction(self) -> list[str]:
        txs = [tx for tx in self.wh.transactions()
               if any(s.startswith("UPDATE load_fence") for s in tx)]
        assert len(txs) == 1
        return txs[0]


def two_files(**overrides: str) -> Rig:
    return Rig([
        ledger_row(KEY_A, [page_view(1, 1), page_view(2, 2)]),
        ledger_row(KEY_B, [page_view(2, 3), page_view(3, 4)], staged_at=T0 + timedelta(1)),
    ], inserted=3, **overrides)


def test_golden_statement_sequence():
    rig = two_files()
    result = rig.loader.step()
    assert result.state == "loaded"
    assert rig.load_transaction() == GOLDEN
    txs = rig.wh.transactions()
    assert txs[txs.index(GOLDEN) - 1] == GOLDEN_COPY
    # before it: the fence row made once, and the reconcile read (no ledger in the warehouse)
    first = [s for tx in rig.wh.transactions()[:2] for s in tx]
    assert any(s.startswith("INSERT INTO load_fence") for s in first)
    assert not any("staged_files" in s or s.startswith("LOCK") for s in rig.wh.sql())


def test_no_region_when_none_is_set():
    rig = two_files(**{"aws.region": ""})
    rig.loader.step()
    copy = next(s for s in rig.wh.sql() if s.startswith("COPY"))
    assert "REGION" not in copy
    assert f"MANIFEST {csvformat.REDSHIFT_COPY_OPTIONS} STATUPDATE OFF COMPUPDATE OFF" in copy


def test_copy_options_are_csvformats_plus_statupdate_compupdate_off():
    rig = two_files()
    rig.loader.step()
    copy = next(s for s in rig.wh.sql() if s.startswith("COPY"))
    assert f"{csvformat.REDSHIFT_COPY_OPTIONS} STATUPDATE OFF COMPUPDATE OFF" in copy
    assert "GZIP" in copy and "FORMAT AS CSV" in copy


def test_manifest_lists_every_file_with_its_size_under_the_contract_key():
    rig = two_files()
    rig.loader.step()
    (bucket, key, body), = rig.s3.puts
    assert (bucket, key) == ("bucket-x", "pfx/manifests/page_views/L1.manifest")
    assert json.loads(body) == {"entries": [
        {"url": f"s3://bucket-x/{KEY_A}", "mandatory": True, "meta": {"content_length": 100}},
        {"url": f"s3://bucket-x/{KEY_B}", "mandatory": True, "meta": {"content_length": 100}},
    ]}


def test_record_loads_fence_and_window_parameters():
    rig = two_files(**{"loader.dedup_window_s": "600"})
    result = rig.loader.step().load
    params = dict(rig.wh.statements)
    token = rig.loader.token
    assert params[GOLDEN[1]][0] == token and params[GOLDEN[1]][3:] == ("page_views", token)
    assert params[GOLDEN[3]] == (T0 - timedelta(seconds=600), T0 + timedelta(seconds=600))
    load_row = params[GOLDEN[-3]]
    hour = T0.replace(minute=0, second=0, microsecond=0)
    assert params[GOLDEN[-4]][:5] == ("L1", "page_views", hour, "staged", 4)
    assert load_row[:8] == ("L1", "page_views", "pfx/manifests/page_views/L1.manifest", 2, 200,
                            4, 3, token)
    assert (result.rows_copied, result.rows_inserted) == (4, 3)
    assert set(rig.wh.loaded) == {KEY_A, KEY_B}
    assert rig.wh.loaded[KEY_B]["last_sequence"] == seq(4)
    assert rig.store.get_file(KEY_A).state == rig.store.get_file(KEY_B).state == "loaded"
    assert rig.store.get_file(KEY_A).load_id == "L1"


def test_record_and_guard_are_chunked():
    entries = [ledger_row(f"k{i:05d}", [page_view(i, i)], staged_at=T0 + timedelta(seconds=i))
               for i in range(1200)]
    rig = Rig(entries, inserted=1200, **{"loader.max_files_per_load": "5000"})
    rig.loader.step()
    guards = [p for s, p in rig.wh.statements if s.startswith("SELECT s3_key, load_id")]
    inserts = [p for s, p in rig.wh.statements if s.startswith("INSERT INTO loaded_files")]
    assert [len(p) - 2 for p in guards[-3:]] == [500, 500, 200]
    assert [len(p) // 15 for p in inserts] == [500, 500, 200]  # 15 columns a row


def test_copy_failure_reads_stl_load_errors_and_never_logs_the_role(caplog):
    rig = two_files()
    wh = rig.wh
    wh.fail_on[r"^COPY "] = psycopg2.InternalError(
        f"Load into table 'stage_page_views_l1' failed.  Check 'stl_load_errors' system table "
        f"for details. (role {IAM_ROLE})")
    wh.load_errors = [(4242, f"s3://bucket-x/{KEY_B}", 2, "occurred_at", "timestamp",
                       "notatime", 1206, "Invalid timestamp format or value")]
    with caplog.at_level(logging.INFO, logger="shardline"):
        result = rig.loader.step()
    assert result.state == "failed" and isinstance(result.error, LoadFailed)
    assert result.error.retriable
    txs = wh.transactions()
    assert txs[-2][-1] == "ROLLBACK"  # the load: nothing applied
    # then, in the same session, the error rows of its COPY: by session and time, never by
    # pg_last_copy_id(), which a rolled-back COPY does not update
    assert "stl_load_errors WHERE session = pg_backend_pid() AND starttime >= %s" in txs[-1][1]
    assert "pg_last_copy_id" not in txs[-1][1]
    assert rig.store.get_file(KEY_A).state == rig.store.get_file(KEY_B).state == "pending"
    # counted (in the control store) against the file it names
    assert rig.store.copy_failures(KEY_B)[0] == 1 and rig.store.copy_failures(KEY_A) == (0, None)
    text = caplog.text + str(result.error)
    assert "Invalid timestamp format or value" in text and "notatime" in text
    assert f"bucket-x/{KEY_B}" in text
    assert IAM_ROLE not in text and "123456789012" not in text
    assert all("load_id=L1" in r.ctx for r in caplog.records if r.name == "shardline.loader"
               and r.levelno >= logging.ERROR)


def test_iam_role_required_for_redshift():
    cfg = settings(**{"warehouse.dialect": "redshift"})
    with pytest.raises(ConfigError, match="warehouse.iam_role is required"):
        make_dialect(cfg)


def test_bad_iam_role_is_refused_without_echoing_it():
    with pytest.raises(ConfigError) as info:
        RedshiftDialect("arn:aws:iam::1234:role/x' CREDENTIALS 'y")
    assert "CREDENTIALS" not in str(info.value)


def test_loader_main_refuses_redshift_without_role(monkeypatch, capsys):
    from shardline import cli
    from shardline.exitcodes import ExitCode

    for name in [k for k in os.environ if k.startswith("SHARDLINE_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir("/")
    code = cli.main(["loader", "--once", "--set", "warehouse.dialect=redshift",
                     "--set", "warehouse.dsn=host=127.0.0.1 dbname=x user=u",
                     "--set", "s3.bucket=bucket-x"])
    assert code == ExitCode.CONFIG
    assert "warehouse.iam_role is required" in capsys.readouterr().err


def test_only_empty_batches_mark_loaded_without_copy():
    empty = ledger_row("pfx/staged/e.csv.gz", [])
    empty.state = "pending"  # a ledger writer that leaves 0-row batches pending
    rig = Rig([empty])
    result = rig.loader.step()
    assert result.state == "loaded" and result.load.rows_copied == 0
    tx = rig.load_transaction()
    assert not [s for s in tx if s.startswith(("CREATE", "COPY", "DELETE", "DROP"))]
    assert [s for s in tx if s.startswith("INSERT INTO loaded_files")]
    assert not rig.s3.puts and rig.store.get_file("pfx/staged/e.csv.gz").state == "loaded"


def test_table_without_natural_key_dedups_on_the_kinesis_position():
    from shardline.loaders.warehouse.plan import Manifest, build_plan
    from shardline.tables import PAGE_VIEWS, POSITION_KEY, TableSpec

    spec = TableSpec("clicks_raw", PAGE_VIEWS.columns)  # dedup_key defaults to POSITION_KEY
    assert spec.dedup_key == POSITION_KEY
    plan = build_plan(spec, load_id="L9", stage_table="stage_c", entries=[],
                      manifest=Manifest("b", "m", (None,)), started_at=T0,
                      finished_at=lambda: T0, lease_token=1, dedup_window_s=60)
    sql = {step.name: getattr(step, "text", None) for step in plan}
    assert sql["delete_existing"] == (
        "DELETE FROM stage_c USING clicks_raw WHERE stage_c.shard_id = clicks_raw.shard_id "
        "AND stage_c.sequence_number = clicks_raw.sequence_number "
        "AND stage_c.sub_sequence_number = clicks_raw.sub_sequence_number")
    assert ("ROW_NUMBER() OVER (PARTITION BY shard_id, sequence_number, sub_sequence_number "
            "ORDER BY shard_id, LENGTH(sequence_number)") in sql["insert_new"]


def test_small_files_are_combined_into_parts_of_at_least_1mb():
    """40 small staged objects: COPY reads parts of >= combine_min_bytes (multi-member gzip),
    at least one per slice, not the objects."""
    import gzip as gz

    from tests.contract.loader_kit import stage_file

    rig = Rig([], **{"loader.combine_min_bytes": "100000", "loader.slices": "2",
                     "loader.max_files_per_load": "100"})
    entries = []
    for i in range(40):
        rows = [page_view(i * 1000 + j, i * 1000 + j, url="https://e.com/" + os.urandom(
            2000).hex()) for j in range(4)]
        entries.append(stage_file(rig.s3, "bucket-x", rig.store, f"pfx/staged/f{i:03d}.csv.gz",
                                  rows, staged_at=T0 + timedelta(seconds=i)))
    assert all(e.byte_count < 100000 for e in entries)
    result = rig.loader.step()
    assert result.state == "loaded" and result.load.rows_copied == 160
    manifest = json.loads(rig.s3.objects["pfx/manifests/page_views/L1.manifest"])
    urls = [e["url"] for e in manifest["entries"]]
    assert all("/combined/page_views/L1/" in u for u in urls)
    assert len(urls) >= 2 and len(urls) < 40
    sizes = [e["meta"]["content_length"] for e in manifest["entries"]]
    assert min(sizes) >= 100000
    # a part is the concatenation of its files: every row, in order
    text = b"".join(gz.decompress(rig.s3.objects[u.split("/", 3)[3]]) for u in urls)
    assert text.count(b"\n") == 160
    assert set(rig.wh.loaded) == {e.s3_key for e in entries}  # the record names the files


def test_copy_and_insert_name_each_files_columns_one_column_list_per_load():
    """A file staged before an ADD COLUMN loads with its own (shorter) column list; the
    files with the new list go in the next load (docs/tables.md)."""
    import dataclasses

    from shardline.tables import PAGE_VIEWS

    old_cols = ",".join(PAGE_VIEWS.column_names)
    new_cols = old_cols.replace("session_id,", "session_id,campaign,")
    a = dataclasses.replace(ledger_row(KEY_A, [page_view(1, 1)]), column_list=None)
    b = dataclasses.replace(ledger_row(KEY_B, [page_view(2, 2)], staged_at=T0 + timedelta(1)),
                            column_list=new_cols)
    rig = Rig([a, b], inserted=1)
    first = rig.loader.step()
    assert first.state == "loaded" and first.load.files == 1 and first.load.capped
    assert first.wait_s == 0  # the rest is due at once
    rig.loader.load_id_factory = lambda now: "L2"
    assert rig.loader.step().load.files == 1
    copies = [s for s in rig.wh.sql() if s.startswith("COPY ")]
    inserts = [s for s in rig.wh.sql() if s.startswith("INSERT INTO page_views")]
    assert copies[0].startswith(f"COPY {STAGE} ({COLS}) FROM") and "campaign" not in inserts[0]
    assert copies[1].startswith(f"COPY stage_page_views_l2 ({new_cols.replace(',', ', ')}) ")
    assert inserts[1].startswith(f"INSERT INTO page_views ({new_cols.replace(',', ', ')}, "
                                 f"loaded_at, transform_version) SELECT")
    assert [f.state for f in (rig.store.get_file(KEY_A), rig.store.get_file(KEY_B))] == \
        ["loaded", "loaded"]


def test_stl_load_errors_filename_and_line_find_the_staged_file():
    """STL_LOAD_ERRORS names the object COPY read, cut at CHAR(256): a combined part's URL
    and the line in it map to the staged file by the ledger's row counts, in part order; a
    cut that leaves two objects possible names none."""
    from shardline.loaders.warehouse.plan import Manifest

    files = [ledger_row(f"k{i}", [page_view(j, j) for j in range(i + 1)]) for i in range(3)]
    single = ledger_row("alone", [page_view(9, 9)])
    prefix = "p" * 250
    parts = ((f"{prefix}/combined/page_views/L1/0000.csv.gz", 10),
             (f"{prefix}/combined/page_views/L1/0001.csv.gz", 10))
    manifest = Manifest("b", "m", (*files, single), parts=parts,
                        combined=frozenset(f.s3_key for f in files),
                        members=((files[0], files[1]), (files[2],)))
    part0, part1 = (f"s3://b/{k}" for k, _ in parts)
    assert len(part0) > 256
    assert manifest.locate(part0[:256], 1) is None  # both parts start with these 256
    short = Manifest("b", "m", manifest.entries, parts=(("c/0000.csv.gz", 1), ("c/1.csv.gz", 1)),
                     combined=manifest.combined, members=manifest.members)
    assert [short.locate("s3://b/c/0000.csv.gz", n) for n in (1, 2, 3)] == \
        [files[0], files[1], files[1]]  # 1 row, then 2 rows
    assert short.locate("s3://b/c/1.csv.gz", 3) is files[2]
    assert short.locate("s3://b/alone", 1) is single
    assert short.locate("s3://b/c/0000.csv.gz", 4) is None  # past the part's rows
    assert short.locate("s3://b/elsewhere", 1) is None
    cut = Manifest("b", "m", (single,), parts=((f"{'q' * 245}/0000.csv.gz", 1),),
                   combined=frozenset({"x"}), members=((files[0],),))
    url = f"s3://b/{'q' * 245}/0000.csv.gz"
    assert cut.locate(url[:256], 1) is files[0]  # cut in ".csv.gz": still only one


def test_a_merge_that_conflicts_runs_again_without_the_copy():
    """A serialization conflict (PostgreSQL 40001, Redshift 1023) in the merge, here at its
    COMMIT: the merge runs again on the same session from the staging table; one COPY."""
    rig = two_files()
    commit, failed = rig.wh.commit, []

    def commit_once_failing():
        if rig.wh._tx is not None and any(s.startswith("INSERT INTO loads")
                                           for s in rig.wh.sql()[-3:]) and not failed:
            failed.append(1)
            rig.wh.rollback()
            raise psycopg2.errors.SerializationFailure("could not serialize access")
        commit()

    rig.wh.commit = commit_once_failing
    result = rig.loader.step()
    assert result.state == "loaded" and failed == [1]
    assert sum(s.startswith("COPY") for s in rig.wh.sql()) == 1
    assert sum(s.startswith("UPDATE load_fence") for s in rig.wh.sql()) == 2
    assert rig.wh.closed == 0  # the session (and its staging table) was kept
    assert set(rig.wh.loaded) == {KEY_A, KEY_B} and len(rig.wh.loads) == 1


@pytest.mark.parametrize("target", ["redshift", "postgres"])
def test_no_declared_key_on_new_tables_and_migrate_drops_the_old_ones(target):
    """The dedup key is unique within the dedup window only: Redshift's planner would trust a
    declared key, PostgreSQL would fail every load over one re-sent id. New tables declare
    none; migration 005 drops page_views' (and the old fence's on Redshift)."""
    from shardline import ddl, migrate
    from shardline.tables import PAGE_VIEWS

    assert not any("PRIMARY KEY" in s or "UNIQUE" in s
                   for s in ddl.create_table(PAGE_VIEWS, target))
    path = next(p for _, n, p in migrate.migrations() if n == "005_no_unguaranteed_keys")
    sql = migrate.render(path.read_text(), target)
    assert any(s.startswith("ALTER TABLE page_views DROP CONSTRAINT") and "page_views_pkey" in s
               for s in sql)
    assert migrate.render(path.read_text(), "redshift-like") == []  # it never had one
