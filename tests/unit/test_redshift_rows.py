"""Rows Redshift's COPY refuses although every value passes its column's check: the stage
worker makes them dead letters with the reason (never a failed file), on every warehouse."""
from __future__ import annotations

import gzip
import json

import pytest

from shardline import codec, tables_file
from shardline.tables import MAX_ROW_BYTES, PAGE_VIEWS, copy_row_check
from shardline.workers.transform import page_view
from tests.unit.test_stage import enc, good_event, make_batch, make_job

BIG = 70  # varchar(65535) columns: a row of them all full is over 4 MB
TABLES = """
[tables.wide]
transform = "shardline.workers.transform:page_view"
route = "default"
dedup_key = ["code"]
columns = [
  { name = "code", type = "char(4)", not_null = true },
""" + "".join(f'  {{ name = "v{i}", type = "varchar(65535)" }},\n' for i in range(BIG)) + "]\n"


def identity(event: dict) -> dict:
    return dict(event)


def wide_row(code: str, fill: int = 10) -> dict:
    return {"code": code, **{f"v{i}": "x" * fill for i in range(BIG)}}


@pytest.mark.parametrize("dialect", ["postgres", "redshift"])
def test_multibyte_in_char_and_a_row_over_4_mb_are_dead_letters(dialect):
    over = {"code": "big1", **{f"v{i}": "y" * 65535 for i in range(BIG)}}  # 4.6 MB
    under = {"code": "ok02", **{f"v{i}": "z" * 65535 for i in range(BIG // 2)}}  # 2.3 MB
    datas = [enc(wide_row("ok01")), enc(wide_row("é")), enc(over), enc(under),
             enc(wide_row("a\u00e9"))]
    extra = {"warehouse.dialect": "redshift",
             "warehouse.iam_role": "arn:aws:iam::123456789012:role/r"} \
        if dialect == "redshift" else {}
    job = make_job(**extra)
    job.__init__(job.settings, s3=job.s3, ledger=job.ledger, clock=job.clock,
                 tables=tables_file.parse(TABLES), transform=identity)
    job.run(codec.encode(make_batch(datas)))
    (entry,) = job.ledger.rows.values()
    assert (entry.row_count, entry.dead_letter_count) == (2, 3)
    letters = [json.loads(line) for line in
               gzip.decompress(job.s3.objects[entry.dead_letter_key]).splitlines()]
    reasons = [d["reason"] for d in letters]
    assert sum("column code: CHAR takes single-byte characters only" in r for r in reasons) == 2
    assert sum(f"over Redshift COPY's limit of {MAX_ROW_BYTES} bytes" in r for r in reasons) == 1
    staged = gzip.decompress(job.s3.objects[entry.s3_key]).decode()
    assert staged.count("\n") == 2 and '"ok01"' in staged and '"ok02"' in staged


def test_page_views_checks_its_char_column_only():
    """page_views' limits keep a row far under 4 MB: only event_id (CHAR(36)) is looked at."""
    check = copy_row_check(PAGE_VIEWS)
    assert check is not None
    assert check({"event_id": "00000000-0000-4000-8000-000000000001", "url": "é" * 2000}) is None
    assert "event_id" in check({"event_id": "00000000-0000-4000-8000-00000000000é"})


def test_page_view_with_a_multibyte_event_id_never_reaches_a_staged_file():
    """The shipped transform already refuses a non-UUID event_id; a transform that does not
    (a user's) still gets the CHAR check."""
    bad = good_event(2, event_id="00000000-0000-4000-8000-00000000000é")
    job = make_job()

    def lenient(event: dict) -> dict:  # page_view, but keeping any event_id it is given
        return {**page_view({**event, "event_id": good_event(3)["event_id"]}),
                "event_id": event["event_id"]}

    job.__init__(job.settings, s3=job.s3, ledger=job.ledger, clock=job.clock,
                 transform=lenient)
    job.run(codec.encode(make_batch([enc(good_event(1)), enc(bad)])))
    (entry,) = job.ledger.rows.values()
    assert (entry.row_count, entry.dead_letter_count) == (1, 1)
