"""The Redshift dialect as SQL text: golden assertions on the load's statement sequence.

There is no Redshift here; a recording fake connection (tests/contract/loader_kit.py)
answers the ledger queries and records every statement with BEGIN/COMMIT/ROLLBACK.
"""
from __future__ import annotations

import json
import logging
import os
from datetime import timedelta

import psycopg2
import pytest

from tests.contract.loader_kit import (IAM_ROLE, SHARD0, SHARD1, T0, Clock, FakeWarehouse,
                                       ledger_row, page_view, seq, settings)
from tests.fakes import FakeS3
from shardline import csvformat
from shardline.errors import ConfigError, LoadFailed
from shardline.workers.warehouse import make_dialect
from shardline.workers.warehouse.redshift import RedshiftDialect
from shardline.workers.loader import Loader

COLS = ("event_id, occurred_at, url, url_host, url_path, url_query, referrer, referrer_host, "
        "user_agent, device_class, ip_prefix, user_id, session_id, shard_id, sequence_number, "
        "sub_sequence_number, arrival_time, staged_at")
STAGE = "stage_page_views_l1"
KEY_A = "pfx/staged/page_views/clicks/shardId-000000000000/a.csv.gz"
KEY_B = "pfx/staged/page_views/clicks/shardId-000000000000/b.csv.gz"

GOLDEN = [
    "BEGIN",
    "LOCK page_views",
    "SELECT s3_key, stream, shard_id, first_sequence, first_sub_sequence, last_sequence, "
    "last_sub_sequence, row_count, byte_count, staged_at FROM staged_files "
    "WHERE target_table = %s AND state = %s ORDER BY staged_at, s3_key LIMIT %s",
    f"CREATE TEMP TABLE {STAGE} (LIKE page_views INCLUDING DEFAULTS)",
    f"COPY {STAGE} ({COLS}) FROM 's3://bucket-x/pfx/manifests/page_views/L1.manifest' "
    f"IAM_ROLE '{IAM_ROLE}' MANIFEST FORMAT AS CSV DELIMITER ',' NULL AS '\\\\N' GZIP "
    "ENCODING UTF8 TIMEFORMAT 'YYYY-MM-DD HH:MI:SS' MAXERROR 0 STATUPDATE OFF COMPUPDATE OFF",
    f"SELECT COUNT(*) FROM {STAGE}",
    f"DELETE FROM {STAGE} USING page_views WHERE {STAGE}.event_id = page_views.event_id",
    f"INSERT INTO page_views ({COLS}) SELECT {COLS} FROM (SELECT {COLS}, ROW_NUMBER() OVER "
    "(PARTITION BY event_id ORDER BY shard_id, LENGTH(sequence_number), sequence_number, "
    f"sub_sequence_number) AS rn FROM {STAGE}) ranked WHERE rn = 1",
    "UPDATE staged_files SET state = %s, load_id = %s, loaded_at = %s "
    "WHERE target_table = %s AND state = %s AND s3_key IN %s",
    "INSERT INTO loads (load_id, target_table, manifest_key, file_count, byte_count, "
    "rows_copied, rows_inserted, started_at, finished_at) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
    "SELECT last_sequence, last_sub_sequence FROM staged_files WHERE target_table = %s AND "
    "stream = %s AND shard_id = %s AND state = 'pending' "
    "ORDER BY LENGTH(last_sequence), last_sequence, last_sub_sequence LIMIT 1",
    "SELECT last_sequence, last_sub_sequence FROM staged_files WHERE target_table = %s AND "
    "stream = %s AND shard_id = %s AND state = 'loaded' "
    "ORDER BY LENGTH(last_sequence) DESC, last_sequence DESC, last_sub_sequence DESC LIMIT 1",
    "SELECT loaded_sequence, loaded_sub_sequence FROM shard_watermarks "
    "WHERE stream = %s AND shard_id = %s AND target_table = %s",
    "INSERT INTO shard_watermarks (loaded_sequence, loaded_sub_sequence, load_id, updated_at, "
    "stream, shard_id, target_table) VALUES (%s, %s, %s, %s, %s, %s, %s)",
    f"DROP TABLE {STAGE}",
    "COMMIT",
]


def make_loader(wh: FakeWarehouse, s3: FakeS3 | None = None, **overrides: str) -> Loader:
    cfg = settings(**{"warehouse.dialect": "redshift", "warehouse.iam_role": IAM_ROLE,
                      "loader.max_interval_s": "0", **overrides})
    return Loader(cfg, "page_views", dialect=make_dialect(cfg), s3=s3 or FakeS3(), connect=wh,
                  clock=Clock(), load_id_factory=lambda now: "L1")


def two_files() -> FakeWarehouse:
    return FakeWarehouse([
        ledger_row(KEY_A, [page_view(1, 1), page_view(2, 2)]),
        ledger_row(KEY_B, [page_view(2, 3), page_view(3, 4)], staged_at=T0 + timedelta(1)),
    ], inserted=3)


def load_transaction(wh: FakeWarehouse) -> list[str]:
    txs = [tx for tx in wh.transactions() if any(s.startswith("LOCK") for s in tx)]
    assert len(txs) == 1
    return txs[0]


def test_golden_statement_sequence():
    wh, s3 = two_files(), FakeS3()
    result = make_loader(wh, s3).step()
    assert result.state == "loaded"
    assert load_transaction(wh) == GOLDEN
    # The trigger check ran first, in its own short read-only transaction.
    assert wh.transactions()[0][1].startswith("SELECT COUNT(*), COALESCE(SUM(byte_count), 0)")


def test_copy_options_are_csvformats_plus_statupdate_compupdate_off():
    wh = two_files()
    make_loader(wh).step()
    copy = next(s for s in wh.sql() if s.startswith("COPY"))
    assert f"MANIFEST {csvformat.REDSHIFT_COPY_OPTIONS} STATUPDATE OFF COMPUPDATE OFF" in copy
    assert "GZIP" in copy and "FORMAT AS CSV" in copy


def test_manifest_lists_every_file_with_its_size_under_the_contract_key():
    wh, s3 = two_files(), FakeS3()
    make_loader(wh, s3).step()
    (bucket, key, body), = s3.puts
    assert (bucket, key) == ("bucket-x", "pfx/manifests/page_views/L1.manifest")
    assert json.loads(body) == {"entries": [
        {"url": f"s3://bucket-x/{KEY_A}", "mandatory": True, "meta": {"content_length": 100}},
        {"url": f"s3://bucket-x/{KEY_B}", "mandatory": True, "meta": {"content_length": 100}},
    ]}


def test_ledger_loads_and_watermark_parameters():
    wh = two_files()
    result = make_loader(wh).step().load
    params = dict(wh.statements)
    assert params[GOLDEN[8]] == ("loaded", "L1", params[GOLDEN[8]][2], "page_views", "pending",
                                 (KEY_A, KEY_B))
    load_row = params[GOLDEN[9]]
    assert load_row[:7] == ("L1", "page_views", "pfx/manifests/page_views/L1.manifest", 2, 200,
                            4, 3)
    assert (result.rows_copied, result.rows_inserted) == (4, 3)
    assert wh.ledger[KEY_A].state == wh.ledger[KEY_B].state == "loaded"
    assert wh.watermarks[("clicks", SHARD0, "page_views")] == (seq(4), 0, "L1")


def test_ledger_update_is_chunked_and_checked():
    entries = [ledger_row(f"k{i:05d}", [page_view(i, i)], staged_at=T0 + timedelta(seconds=i))
               for i in range(2500)]
    wh = FakeWarehouse(entries, inserted=2500)
    make_loader(wh).step()
    updates = [p for s, p in wh.statements if s.startswith("UPDATE staged_files")]
    assert [len(p[-1]) for p in updates] == [1000, 1000, 500]


def test_ledger_changed_under_the_lock_rolls_back():
    wh = two_files()
    # Someone flipped B to loaded between our re-read and our UPDATE: the count check fails.
    real = wh._answer

    def answer(sql, params):
        if sql.startswith("UPDATE staged_files SET state"):
            wh._state()["ledger"][KEY_B].state = "loaded"
        return real(sql, params)

    wh._answer = answer
    result = make_loader(wh).step()
    assert result.state == "failed" and isinstance(result.error, LoadFailed)
    assert load_transaction(wh)[-1] == "ROLLBACK"
    assert wh.ledger[KEY_A].state == "pending" and not wh.loads and not wh.watermarks


def test_two_shards_get_one_watermark_each():
    wh = FakeWarehouse([
        ledger_row("a", [page_view(1, 1, shard=SHARD0)], shard=SHARD0),
        ledger_row("b", [page_view(2, 7, shard=SHARD1)], shard=SHARD1),
    ], inserted=2)
    make_loader(wh).step()
    assert wh.watermarks == {("clicks", SHARD0, "page_views"): (seq(1), 0, "L1"),
                             ("clicks", SHARD1, "page_views"): (seq(7), 0, "L1")}


def test_copy_failure_reads_stl_load_errors_and_never_logs_the_role(caplog):
    wh = two_files()
    wh.fail_on[r"^COPY "] = psycopg2.InternalError(
        f"Load into table 'stage_page_views_l1' failed.  Check 'stl_load_errors' system table "
        f"for details. (role {IAM_ROLE})")
    wh.load_errors = [(4242, f"s3://bucket-x/{KEY_B}", 2, "occurred_at", "timestamp",
                       "notatime", 1206, "Invalid timestamp format or value")]
    loader = make_loader(wh)
    with caplog.at_level(logging.INFO, logger="shardline"):
        result = loader.step()
    assert result.state == "failed" and isinstance(result.error, LoadFailed)
    assert result.error.retriable
    txs = wh.transactions()
    assert txs[1][-1] == "ROLLBACK"  # the load: nothing applied
    # then, in the same session, the error rows of the last COPY
    assert "stl_load_errors WHERE query = pg_last_copy_id()" in txs[2][1]
    assert wh.ledger[KEY_A].state == wh.ledger[KEY_B].state == "pending"
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
    wh, s3 = FakeWarehouse([empty]), FakeS3()
    result = make_loader(wh, s3).step()
    assert result.state == "loaded" and result.load.rows_copied == 0
    tx = load_transaction(wh)
    assert not [s for s in tx if s.startswith(("CREATE", "COPY", "DELETE", "DROP"))]
    assert [s for s in tx if s.startswith("UPDATE staged_files")]
    assert not s3.puts and wh.ledger["pfx/staged/e.csv.gz"].state == "loaded"


def test_table_without_natural_key_dedups_on_the_kinesis_position():
    from shardline.workers.warehouse.plan import Manifest, build_plan
    from shardline.tables import PAGE_VIEWS, POSITION_KEY, TableSpec

    spec = TableSpec("clicks_raw", PAGE_VIEWS.columns)  # dedup_key defaults to POSITION_KEY
    assert spec.dedup_key == POSITION_KEY
    plan = build_plan(spec, load_id="L9", stage_table="stage_c", entries=[],
                      manifest=Manifest("b", "m", (None,)), started_at=T0,
                      finished_at=lambda: T0)
    sql = {step.name: getattr(step, "text", None) for step in plan}
    assert sql["delete_existing"] == (
        "DELETE FROM stage_c USING clicks_raw WHERE stage_c.shard_id = clicks_raw.shard_id "
        "AND stage_c.sequence_number = clicks_raw.sequence_number "
        "AND stage_c.sub_sequence_number = clicks_raw.sub_sequence_number")
    assert ("ROW_NUMBER() OVER (PARTITION BY shard_id, sequence_number, sub_sequence_number "
            "ORDER BY shard_id, LENGTH(sequence_number)") in sql["insert_new"]
