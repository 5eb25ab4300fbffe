"""ONE load plan for both warehouses; only its COPY step differs per dialect.

``build_plan`` turns "these ledger entries, this manifest, this table" into a list
of steps. Every step but the COPY is the same SQL text on PostgreSQL and
Redshift (the subset both speak: no RETURNING, no ON CONFLICT, no ``= ANY``):

1. ``CREATE TEMP TABLE stage_x (LIKE target INCLUDING DEFAULTS)``: same column
   types; on Redshift also the target's DISTKEY/SORTKEY, so the merge join on the
   dedup key is co-located. ``INCLUDING DEFAULTS`` because ``loaded_at`` is
   ``NOT NULL DEFAULT ...`` and is not in the staged CSV.
2. COPY the manifest's files into ``stage_x`` (the dialect's own step):
   Redshift ``COPY ... FROM 's3://.../x.manifest' IAM_ROLE ... MANIFEST``;
   PostgreSQL streams each object from S3 (gunzip as a stream) into
   ``COPY ... FROM STDIN``.
3. ``SELECT COUNT(*) FROM stage_x``: rows copied.
4. ``DELETE FROM stage_x USING target WHERE <key equal>``: drop rows already
   stored (a replay, a file staged twice, a producer retry loaded earlier).
5. ``INSERT INTO target (cols) SELECT cols FROM (SELECT cols, ROW_NUMBER() OVER
   (PARTITION BY key ORDER BY shard_id, LENGTH(sequence_number), sequence_number,
   sub_sequence_number) AS rn FROM stage_x) ranked WHERE rn = 1``: keep the first
   copy of each key by Kinesis position (``shardline.positions``). Ranking in the
   INSERT's subquery instead of materialising a second staging table gives the same
   rows with one write less.
6. ``UPDATE staged_files SET state = 'loaded' ...`` for exactly these entries (a
   row count mismatch aborts the load).
7. ``INSERT INTO loads ...``: the history row.
8. Advance ``shard_watermarks`` per (stream, shard, table) touched (``watermarks.py``).
9. ``DROP TABLE stage_x`` (the loader's session lives on; temp tables would pile up).

The loader runs the steps after taking the table lock and re-reading the pending
entries, all in one transaction: a crash anywhere leaves none or all of a load.

Locking: the target table (PostgreSQL ``SHARE ROW EXCLUSIVE``: readers go on, a second
loader of the same table waits; Redshift ``LOCK``). Not the ledger, so stage workers
keep recording files during a load. On Redshift a stage worker's insert can still make
the load fail with a serializable isolation violation (1023); that is a ``LoadFailed``
like any other: rolled back, retried after a backoff.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Sequence

from shardline import positions
from shardline.errors import ConfigError
from shardline.tables import POSITION_KEY, TableSpec
from shardline.workers.ledger import LOADED, MARK_LOADED_SQL, PENDING, StagedFile

LEDGER_IN_CHUNK = 1000  # keys per "s3_key IN (...)" statement

# The merge keeps the first copy of an event: lowest shard, then Kinesis position.
POSITION_ORDER = "shard_id, " + positions.order_by("sequence_number", "sub_sequence_number")


# -- manifests -----------------------------------------------------------------------

@dataclass(frozen=True)
class Manifest:
    bucket: str
    key: str
    entries: tuple[StagedFile, ...]  # only entries with rows: a 0-row batch has no object

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def object_url(self, entry: StagedFile) -> str:
        return f"s3://{self.bucket}/{entry.s3_key}"

    def to_json(self) -> bytes:
        """Redshift manifest format (the contract): url, mandatory, meta.content_length."""
        return json.dumps({"entries": [
            {"url": self.object_url(e), "mandatory": True,
             "meta": {"content_length": e.byte_count}} for e in self.entries]},
            indent=1).encode()


# -- the steps -----------------------------------------------------------------------

@dataclass(frozen=True)
class Sql:
    """One statement. ``params`` is a tuple, or a callable of the results so far.
    ``result`` names what to keep: the first column of the first row (``fetch="one"``)
    or the statement's row count (``fetch="rowcount"``)."""

    name: str
    text: str
    params: Any = None
    result: str | None = None
    fetch: str | None = None
    expect_rowcount: int | None = None


@dataclass(frozen=True)
class CopyManifest:
    """Load every file of ``manifest`` into ``stage_table`` (dialect-specific)."""

    name: str
    stage_table: str
    columns: tuple[str, ...]
    manifest: Manifest


@dataclass(frozen=True)
class AdvanceWatermarks:
    """Per (stream, shard) touched: the highest last position such that every ledger
    entry of that shard whose last position is at or before it is loaded. Never moves
    back (after a replay, the re-staged positions were already queryable)."""

    name: str
    table: str
    shards: tuple[tuple[str, str], ...]
    load_id: str
    now: datetime


Step = Sql | CopyManifest | AdvanceWatermarks


def _key_match(left: str, right: str, key: Sequence[str]) -> str:
    return " AND ".join(f"{left}.{k} = {right}.{k}" for k in key)


def build_plan(spec: TableSpec, *, load_id: str, stage_table: str, manifest: Manifest,
               entries: Sequence[StagedFile], started_at: datetime,
               finished_at: Callable[[], datetime]) -> list[Step]:
    """The load as a list of steps, the same on every warehouse (see the module doc)."""
    missing = [c for c in POSITION_KEY if c not in spec.column_names]
    if missing:
        raise ConfigError(f"table {spec.name}: the loader needs the position columns "
                          f"{', '.join(POSITION_KEY)} (missing {', '.join(missing)})")
    key = tuple(spec.dedup_key or POSITION_KEY)
    cols = ", ".join(spec.column_names)
    target = spec.name
    steps: list[Step] = [] if not manifest.entries else [  # only 0-row batches: no COPY
        Sql("create_stage",
            f"CREATE TEMP TABLE {stage_table} (LIKE {target} INCLUDING DEFAULTS)"),
        CopyManifest("copy", stage_table, tuple(spec.column_names), manifest),
        Sql("count_staged", f"SELECT COUNT(*) FROM {stage_table}",
            result="rows_copied", fetch="one"),
        Sql("delete_existing",
            f"DELETE FROM {stage_table} USING {target} "
            f"WHERE {_key_match(stage_table, target, key)}"),
        Sql("insert_new",
            f"INSERT INTO {target} ({cols}) SELECT {cols} FROM ("
            f"SELECT {cols}, ROW_NUMBER() OVER (PARTITION BY {', '.join(key)} "
            f"ORDER BY {POSITION_ORDER}) AS rn FROM {stage_table}) ranked WHERE rn = 1",
            result="rows_inserted", fetch="rowcount"),
    ]
    keys = [e.s3_key for e in entries]
    for n, start in enumerate(range(0, len(keys), LEDGER_IN_CHUNK)):
        chunk = tuple(keys[start:start + LEDGER_IN_CHUNK])
        steps.append(Sql(f"mark_loaded_{n}", MARK_LOADED_SQL,
                         (LOADED, load_id, started_at, target, PENDING, chunk),
                         expect_rowcount=len(chunk)))
    files = len(manifest.entries)
    size = sum(e.byte_count for e in entries)
    steps.append(Sql(
        "insert_load",
        "INSERT INTO loads (load_id, target_table, manifest_key, file_count, byte_count, "
        "rows_copied, rows_inserted, started_at, finished_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        lambda r: (load_id, target, manifest.key, files, size, r.get("rows_copied", 0),
                   r.get("rows_inserted", 0), started_at, finished_at())))
    shards = tuple(sorted({(e.stream, e.shard_id) for e in entries}))
    steps.append(AdvanceWatermarks("watermarks", target, shards, load_id, started_at))
    if manifest.entries:
        steps.append(Sql("drop_stage", f"DROP TABLE {stage_table}"))
    return steps
