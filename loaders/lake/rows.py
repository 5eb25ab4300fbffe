"""Staged files to Arrow rows in the lake table's schema, and the dedup of one load.

A staged file is gzip CSV (``shardline.csvformat``): ``\\N`` unquoted is NULL, a quoted
``"\\N"`` is that text, ``""`` an empty string, timestamps UTC ``YYYY-MM-DD
HH:MM:SS.ffffff``; its columns are the file's ``column_list``. Read here with the rules
the warehouse COPY applies: a column the file does not have (staged before the column
was added) is its default or NULL; the loader's columns (``loaded_at``, ``transform_version``) come
from the load and the file's ledger entry.
"""
from __future__ import annotations

import gzip
import io
from datetime import datetime
from typing import Mapping, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from shardline.csvformat import NULL
from shardline.records.tables import POSITION_KEY

_ROW = "__shardline_row"
_SEQ_LEN = "__shardline_seq_len"


def read_staged(body: bytes, columns: Sequence[str], schema: pa.Schema, *,
                loaded_at: datetime, transform_version: str | None,
                defaults: Mapping[str, object] | None = None) -> pa.Table:
    """One staged file's rows in ``schema`` (the lake table's Arrow schema); a column the
    file lacks gets its ``defaults`` value (the tables file's), else NULL, as the warehouse
    COPY into a table with the column gives it."""
    raw = gzip.decompress(body)
    types = {name: schema.field(name).type for name in columns if name in schema.names}
    parsed = pacsv.read_csv(
        io.BytesIO(raw),
        read_options=pacsv.ReadOptions(column_names=list(columns), use_threads=False),
        parse_options=pacsv.ParseOptions(delimiter=",", quote_char='"', double_quote=True,
                                         escape_char=False, newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(column_types=types, null_values=[NULL],
                                             strings_can_be_null=True,
                                             quoted_strings_can_be_null=False,
                                             true_values=["True", "true", "t", "1"],
                                             false_values=["False", "false", "f", "0"]))
    n = parsed.num_rows
    arrays = []
    for field in schema:
        if field.name in parsed.column_names:
            arrays.append(parsed.column(field.name).cast(field.type))
        elif field.name == "loaded_at":
            arrays.append(pa.array([loaded_at] * n, field.type))
        elif field.name == "transform_version":
            arrays.append(pa.array([transform_version] * n, field.type))
        elif defaults and defaults.get(field.name) is not None:
            arrays.append(pa.array([defaults[field.name]] * n).cast(field.type))
        else:
            arrays.append(pa.nulls(n, field.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def first_by_position(rows: pa.Table, key: Sequence[str]) -> pa.Table:
    """One row per dedup key: the first copy by Kinesis position (sequence numbers compare
    by length, then text; then the sub-sequence number), as the warehouse merge keeps."""
    if rows.num_rows == 0:
        return rows
    work = rows.append_column(_SEQ_LEN, pc.utf8_length(rows.column(POSITION_KEY[1])))
    ordered = work.sort_by([(POSITION_KEY[0], "ascending"), (_SEQ_LEN, "ascending"),
                            (POSITION_KEY[1], "ascending"), (POSITION_KEY[2], "ascending")])
    ordered = ordered.drop_columns([_SEQ_LEN])
    ordered = ordered.append_column(_ROW, pa.array(range(ordered.num_rows), pa.int64()))
    # the shard first, then the position: copies of one event on two shards keep the
    # earlier shard's (any one copy would do; this one is deterministic)
    firsts = ordered.group_by(list(key), use_threads=False).aggregate([(_ROW, "min")])
    keep = pc.sort_indices(firsts.column(f"{_ROW}_min"))
    picked = ordered.take(pc.take(firsts.column(f"{_ROW}_min"), keep))
    return picked.drop_columns([_ROW])


def not_stored(rows: pa.Table, stored: pa.Table, key: Sequence[str]) -> pa.Table:
    """The rows whose dedup key is not among ``stored``'s (the table's keys in the window)."""
    if rows.num_rows == 0 or stored.num_rows == 0:
        return rows
    stored = stored.select(list(key)).cast(
        pa.schema([(k, rows.schema.field(k).type) for k in key]))  # string vs large_string
    if len(key) == 1:
        mask = pc.invert(pc.is_in(rows.column(key[0]), value_set=stored.column(key[0])))
        return rows.filter(mask)
    unique = stored.group_by(list(key), use_threads=False).aggregate([])
    kept = rows.join(unique, keys=list(key), join_type="left anti", use_threads=False)
    return kept.select(rows.column_names).cast(rows.schema)
