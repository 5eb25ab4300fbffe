"""Staged CSV to the lake's Arrow rows with the warehouse COPY's rules, and the dedup of a
lake load (first copy by Kinesis position; keys already stored)."""
from __future__ import annotations

from datetime import datetime

import pyarrow as pa

from shardline.lake.schema import iceberg_schema
from shardline.loaders.lake.rows import first_by_position, not_stored, read_staged
from shardline.tables import PAGE_VIEWS
from tests.contract.loader_kit import SHARD0, SHARD1, T0, csv_gz, event_id, page_view, seq

SCHEMA = iceberg_schema(PAGE_VIEWS).as_arrow()
LOADED = datetime(2026, 12, 8, 2, 0, 0)


def _read(rows: list, columns: list[str] | None = None, **kw: object) -> pa.Table:
    return read_staged(csv_gz(rows), columns or PAGE_VIEWS.column_names, SCHEMA,
                       loaded_at=LOADED, transform_version="v7", **kw)  # type: ignore[arg-type]


def test_null_empty_and_odd_text_are_read_as_the_warehouse_copy_reads_them() -> None:
    odd = 'a,"b"\nc\\N'
    got = _read([page_view(1, 1, url_query=None, referrer="", user_id="\\N",
                           session_id=odd)]).to_pylist()[0]
    assert (got["url_query"], got["referrer"], got["user_id"], got["session_id"]) == (
        None, "", "\\N", odd)
    assert got["occurred_at"] == T0 and got["sub_sequence_number"] == 0
    assert (got["loaded_at"], got["transform_version"]) == (LOADED, "v7")


def test_a_column_the_file_lacks_gets_its_default_or_null() -> None:
    schema = SCHEMA.append(pa.field("plan", pa.string())).append(pa.field("n", pa.int64()))
    names = PAGE_VIEWS.column_names
    got = read_staged(csv_gz([page_view(1, 1)]), names, schema, loaded_at=LOADED,
                      transform_version=None, defaults={"plan": "free"}).to_pylist()[0]
    assert (got["plan"], got["n"], got["transform_version"]) == ("free", None, None)


def test_one_row_per_key_the_first_by_position_and_none_already_stored() -> None:
    rows = _read([page_view(2, 11, url_query="later"), page_view(2, 3),
                  page_view(1, 2, shard=SHARD1), page_view(1, 1, shard=SHARD0),
                  # a longer sequence number comes later whatever its text
                  page_view(3, "9" * 55), page_view(3, "1" + "0" * 56, url_query="longer")])
    firsts = first_by_position(rows, ["event_id"])
    got = {r["event_id"]: (r["shard_id"], r["sequence_number"]) for r in firsts.to_pylist()}
    assert got == {event_id(1): (SHARD0, seq(1)), event_id(2): (SHARD0, seq(3)),
                   event_id(3): (SHARD0, "9" * 55)}
    stored = pa.table({"event_id": [event_id(2)]})
    assert sorted(not_stored(firsts, stored, ["event_id"]).column("event_id").to_pylist()) == [
        event_id(1), event_id(3)]
    key = ["shard_id", "sequence_number", "sub_sequence_number"]  # a table without a key
    by_position = pa.table({"shard_id": [SHARD0], "sequence_number": [seq(3)],
                            "sub_sequence_number": pa.array([0], pa.int64())})
    left = not_stored(firsts, by_position, key)
    assert sorted(left.column("event_id").to_pylist()) == [event_id(1), event_id(3)]
    assert left.schema == firsts.schema
