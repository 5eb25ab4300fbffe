"""``shardline try-transform``: what the tables file's transforms make of some events, offline.

    shardline try-transform EVENTS.jsonl | --from-archive LOCATION [--json] [--against-warehouse]

Reads records from a JSON-lines file (one event per line; ``-``: standard input) or from the
raw archive (``--from-archive``: ``s3://bucket/prefix``, every archive object under it, or a
local directory or file of its ``.slb.gz`` objects, each source record once as ``reprocess``
reads it), and runs them through the stage worker's own per-record path
(``RowBuilder.routed``: routing, each table's transform, the column checks) with the
transforms the stage workers would load. Nothing is written anywhere; no stack is needed.
It prints each table's rows as they would be staged and the dead letters with their reasons
(a table, or ``--json``). ``--against-warehouse`` (archive records only: the comparison is by
Kinesis position) also counts what the transforms would add, change or remove in each loaded
table, with ``reprocess --dry-run``'s comparison (``reprocess_diff``). It is for samples (an
hour of the archive, a file of events): what it reads is held in memory.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
import sys
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from shardline import codec, layout
from shardline.cli.kit import command_parser, load_settings, parse_command_args
from shardline.csvformat import NULL
from shardline.exitcodes import ExitCode
from shardline.ops.reprocess_diff import Diff, event_columns
from shardline.settings import Settings
from shardline.tables import Tables
from shardline.transforms import Transform
from shardline.workers.rows import DeadLetter

UTC = timezone.utc
JSONL_SHARD = "jsonl"  # the shard id of records read from a JSON-lines file
BATCH_RECORDS = 500
SHOW_CHARS = 40  # longest value shown in a table cell
StagedRow = dict[str, "str | None"]  # column -> its staged text (None: NULL)


class BadInput(Exception):
    """The events or the archive cannot be read: a one-line message, exit USAGE."""


@dataclass
class Tried:
    """What the transforms made of the records."""

    records: int = 0
    rows: dict[str, list[StagedRow]] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    columns: dict[str, list[str]] = field(default_factory=dict)  # each table's event columns
    warehouse: dict[str, Diff] = field(default_factory=dict)  # --against-warehouse


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "try-transform", "Run events through the tables file's routing and transforms, "
                         "offline, and show the rows and dead letters they make.")
    parser.add_argument("events", nargs="?", metavar="EVENTS.jsonl",
                        help="one event (a JSON object) per line; - reads standard input")
    parser.add_argument("--from-archive", metavar="LOCATION",
                        help="read the raw archive instead: s3://bucket/prefix, or a local "
                             "directory or file of its .slb.gz objects")
    parser.add_argument("--json", action="store_true", help="one JSON object, not tables")
    parser.add_argument("--against-warehouse", action="store_true",
                        help="also count the rows that would be added, changed and removed in "
                             "the loaded tables (needs the warehouse settings; archive only)")
    return parser


# -- reading the records ------------------------------------------------------------
def jsonl_batches(path: str) -> list[codec.Batch]:
    """One record per non-blank line, its bytes exactly; the sequence number is the line's."""
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise BadInput(f"cannot read {path}: {exc.strerror or exc}") from None
    now_ms = int(time.time() * 1000)
    records = [codec.Record(str(n), 0, "", line, now_ms)
               for n, line in enumerate(data.split(b"\n"), 1) if line.strip()]
    return [codec.Batch(path, JSONL_SHARD, records[i:i + BATCH_RECORDS])
            for i in range(0, len(records), BATCH_RECORDS)]


def archive_batches(location: str, settings: Settings) -> list[codec.Batch]:
    """Every archived batch under ``location``, each source record once per shard."""
    from shardline.ops.reprocess_sources import once_per_record

    objects = _s3_objects(location, settings) if location.startswith("s3://") \
        else _local_objects(location)
    by_shard: dict[tuple[str, str], list[codec.Batch]] = {}
    for name, body in objects:
        try:
            batch = codec.decode(gzip.decompress(body))
        except (OSError, EOFError, zlib.error, codec.CodecError) as exc:
            raise BadInput(f"{name}: not a raw archive object: {exc}") from None
        if batch.records:
            by_shard.setdefault((batch.stream, batch.shard_id), []).append(batch)
    if not by_shard:
        raise BadInput(f"no archive objects (*{layout.ARCHIVE_SUFFIX}) in {location}")
    out: list[codec.Batch] = []
    for (stream, shard), batches in sorted(by_shard.items()):
        batches.sort(key=lambda b: b.records[0].position)
        out += once_per_record(batches, stream, shard)
    return out


def _local_objects(location: str) -> Iterator[tuple[str, bytes]]:
    path = Path(location)
    if not path.exists():
        raise BadInput(f"{location}: no such file or directory")
    files = [path] if path.is_file() else sorted(path.rglob(f"*{layout.ARCHIVE_SUFFIX}"))
    for f in files:
        try:
            yield str(f), f.read_bytes()
        except OSError as exc:
            raise BadInput(f"cannot read {f}: {exc.strerror or exc}") from None


def _s3_objects(location: str, settings: Settings) -> Iterator[tuple[str, bytes]]:
    from botocore.exceptions import BotoCoreError, ClientError

    from shardline import clients
    from shardline.errors import ServiceUnavailable

    bucket, _, prefix = location[len("s3://"):].partition("/")
    if not bucket:
        raise BadInput(f"{location}: no bucket (s3://bucket/prefix)")
    s3 = clients.s3_client(settings)
    try:
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=prefix)
                for o in page.get("Contents", []) if o["Key"].endswith(layout.ARCHIVE_SUFFIX)]
        for key in sorted(keys):
            yield f"s3://{bucket}/{key}", s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        raise BadInput(f"{location}: {exc.response.get('Error', {}).get('Code', '?')}: "
                       f"{exc.response.get('Error', {}).get('Message', exc)}") from None
    except BotoCoreError as exc:
        raise ServiceUnavailable(f"S3 ({settings.s3.endpoint_url or 'AWS'}): {exc}") from None


# -- running the transforms -----------------------------------------------------------
def try_batches(settings: Settings, batches: list[codec.Batch], *,
                against_warehouse: bool = False) -> Tried:
    """Stage the batches as a stage worker would, writing nothing; with
    ``against_warehouse`` compare each table's rows with the stored ones."""
    from shardline.tables import load_tables
    from shardline.workers.rows import RowBuilder
    from shardline.workers.stage import refuse_null_marker
    from shardline.workers.transform import load_table_transforms, transform_version

    tables = load_tables(settings)
    transforms = load_table_transforms(tables, settings)
    tried = Tried(versions={name: transform_version(t) for name, t in transforms.items()},
                  columns={spec.name: event_columns(spec) for spec in tables.tables})
    if settings.warehouse.dialect == "redshift":  # as the stage worker runs them there
        transforms = {name: refuse_null_marker(t) for name, t in transforms.items()}
    builder = RowBuilder.routed(tables, transforms)
    now = datetime.now(UTC)
    tried.rows = {name: [] for name in tables.names}
    for batch in batches:
        tried.records += len(batch.records)
        routed = builder.build_tables(batch, now)
        for name, staged in routed.tables.items():
            tried.rows[name] += _parse_csv(staged.csv_text, tables[name].column_names)
        tried.dead_letters += routed.dead_letters
    if against_warehouse:
        tried.warehouse = _against_warehouse(settings, tables, transforms, tried.versions,
                                             batches, now)
    return tried


def _parse_csv(text: str, columns: list[str]) -> list[StagedRow]:
    return [{c: None if v == NULL else v for c, v in zip(columns, values, strict=True)}
            for values in csv.reader(io.StringIO(text, newline=""))]


def _against_warehouse(settings: Settings, tables: Tables, transforms: dict[str, Transform],
                       versions: dict[str, str], batches: list[codec.Batch],
                       now: datetime) -> dict[str, Diff]:
    import psycopg2

    from shardline import clients
    from shardline.errors import ServiceUnavailable
    from shardline.lifecycle import first_line
    from shardline.ops.reprocess_diff import diff_batches
    from shardline.workers.rows import RowBuilder

    out = {}
    conn = clients.warehouse_connect(settings)
    try:
        with conn.cursor() as cur:
            for name in tables.names:  # each table's rows of the routed records
                out[name] = diff_batches(cur, RowBuilder.routed(tables, transforms, first=name),
                                         versions[name], batches, now)
        conn.rollback()
    except psycopg2.Error as exc:
        raise ServiceUnavailable(f"warehouse: {first_line(exc)}") from None
    finally:
        conn.close()
    return out


# -- showing it -----------------------------------------------------------------------
def source_of(shard_id: str, sequence_number: str | None, sub: object) -> str:
    """Where a record came from: its line, or its shard and Kinesis position."""
    if shard_id == JSONL_SHARD:
        return f"line {sequence_number}"
    return f"{shard_id} {sequence_number}" + (f"/{sub}" if str(sub) != "0" else "")


def as_json(tried: Tried) -> dict[str, Any]:
    rows = {name: [{"source": source_of(r["shard_id"] or "", r["sequence_number"],
                                        r["sub_sequence_number"]), "row": r} for r in rows]
            for name, rows in tried.rows.items()}
    dead = [{"source": source_of(str(d["shard_id"]), str(d["sequence_number"]),
                                 d["sub_sequence_number"]), **d} for d in tried.dead_letters]
    out: dict[str, Any] = {"records": tried.records, "transform_versions": tried.versions,
                           "rows": rows, "dead_letters": dead}
    if tried.warehouse:
        out["warehouse"] = {name: {"added": d.added, "changed": d.changed, "removed": d.removed,
                                   "unchanged": d.unchanged, "retagged": d.retagged,
                                   "examples": d.examples}
                            for name, d in tried.warehouse.items()}
    return out


def _cell(value: str | None) -> str:
    if value is None:
        return "NULL"
    text = value.encode("unicode_escape").decode("ascii") if not value.isprintable() \
        else value
    return text if len(text) <= SHOW_CHARS else text[:SHOW_CHARS - 1] + "…"


def _grid(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    line = "  ".join

    def fmt(cells: list[str]) -> str:
        return line(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return [fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]


def render(tried: Tried) -> str:
    """The readable form: each table's rows (event columns), the dead letters, a summary."""
    out = []
    made = {name: rows for name, rows in tried.rows.items() if rows}
    for name, rows in made.items():
        cols = tried.columns[name]
        out += [f"{name}: {len(rows)} row(s) (transform {tried.versions[name]})"]
        out += ["  " + s for s in _grid(
            ["source", *cols],
            [[source_of(r["shard_id"] or "", r["sequence_number"], r["sub_sequence_number"]),
              *(_cell(r[c]) for c in cols)] for r in rows])] + [""]
    if tried.dead_letters:
        out += [f"dead letters: {len(tried.dead_letters)}"]
        out += ["  " + s for s in _grid(
            ["source", "reason"],
            [[source_of(str(d["shard_id"]), str(d["sequence_number"]),
                        d["sub_sequence_number"]),
              str(d["reason"]).encode("unicode_escape").decode("ascii")[:200]]
             for d in tried.dead_letters])] + [""]
    counts = ", ".join(f"{name} {len(rows)}" for name, rows in made.items())
    out.append(f"{tried.records} record(s): {sum(map(len, made.values()))} row(s)"
               f"{f' ({counts})' if counts else ''}, {len(tried.dead_letters)} dead letter(s)")
    for name, d in tried.warehouse.items():
        out.append(f"{name} against the warehouse: would add {d.added} row(s), change "
                   f"{d.changed}, remove {d.removed}; {d.unchanged} unchanged "
                   f"({d.retagged} of them only get the new transform version)")
        out += [f"  changed: {e}" for e in d.examples]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    parser = build_parser()
    args, code = parse_command_args(parser, argv)
    if args is None:
        return code
    problem = None
    if (args.events is None) == (args.from_archive is None):
        problem = "give either EVENTS.jsonl or --from-archive LOCATION"
    elif args.against_warehouse and args.from_archive is None:
        problem = ("--against-warehouse compares by Kinesis position: it needs records "
                   "with theirs (--from-archive)")
    if problem:
        print(f"shardline try-transform: {problem}", file=sys.stderr)
        return ExitCode.USAGE
    settings = load_settings(args)
    try:
        batches = jsonl_batches(args.events) if args.events is not None \
            else archive_batches(args.from_archive, settings)
    except BadInput as exc:
        print(f"shardline try-transform: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    tried = try_batches(settings, batches, against_warehouse=args.against_warehouse)
    print(json.dumps(as_json(tried), indent=1) if args.json else render(tried))
    return ExitCode.OK
