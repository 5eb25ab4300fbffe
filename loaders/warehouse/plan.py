"""ONE load plan for both warehouses; only its COPY step differs per dialect.

``build_plan`` turns "these ledger entries, this manifest, this table, this lease token"
into the steps of two transactions (``LoadPlan``). Every step but the COPY is the same SQL
text on PostgreSQL and Redshift (the subset both speak: no RETURNING, no ON CONFLICT, no
``= ANY``).

The *copy* transaction: the already-loaded guard (step 2), then steps 3-5 into a temporary
table of the session, committed. It touches no table another writer writes, however long
the COPY takes. The *merge* transaction, short, then does steps 1, 2 and 6-9: it starts at
the fence, so its snapshot (taken at its first statement, on Redshift as on PostgreSQL)
is younger than the COPY, and a retention or GDPR ``DELETE`` or an ``ADD COLUMN`` committed
during the COPY is what the merge works on, under SNAPSHOT and SERIALIZABLE alike. A merge
that fails on a serialization conflict is run again from the staging table, without the COPY.

1. ``UPDATE load_fence_X SET lease_token = T ... WHERE target_table = X AND lease_token <= T``
   must touch its one row: the fence, a table per target table (``fence_table``). A loader
   whose lease (in the control store) was taken over by a newer token cannot commit: a
   stale loader and the newer one of the same table queue on this table's write lock (held
   to commit), and the later one then finds a newer token (or a serialization conflict,
   after which it runs again and finds it) and is refused. Loaders of different tables write
   different fence tables, so neither waits for the other's fence (Redshift's write locks
   are per table: one shared fence table made every load wait for every other table's).
   No table lock: readers of the target never wait for a load.
2. ``SELECT s3_key FROM loaded_files WHERE ... s3_key IN (...)`` must return nothing: a
   file the warehouse already holds (a loader killed after its commit, before the control
   store heard of it) is never loaded twice (``Refused``; the loader reconciles).
3. ``CREATE TEMP TABLE stage_x (LIKE target INCLUDING DEFAULTS)``: same column types; on
   Redshift also the target's DISTKEY/SORTKEY. ``loaded_at`` is not staged: its default
   fills it here, and step 7 writes the loader's UTC time instead.
4. COPY the manifest's files into ``stage_x`` (the dialect's own step), naming the files'
   column list (``StagedFile.column_list``: a load takes files of one list), so files
   staged before an ``ADD COLUMN`` load with the new column at its default (or NULL).
5. ``SELECT COUNT(*)`` (rows copied), which must equal the files' row counts in the ledger
   (``CheckRows``: else the load fails), and ``MIN/MAX(sort key)`` of ``stage_x``.
6. ``DELETE FROM stage_x USING target WHERE <key equal> AND target.<sort key> BETWEEN
   min - window AND max + window``: drop rows already stored. The range predicate on the
   sort key is what Redshift's zone maps (a BRIN index locally) prune, so the cost follows
   the batch, not the table. Copies of one event carry the same ``occurred_at``; the
   window (``loader.dedup_window_s``) only matters for an event re-sent with another one.
7. ``INSERT INTO target (the files' columns, loaded_at, transform_version) ...
   ROW_NUMBER() OVER (PARTITION BY key ORDER BY position) ... WHERE rn = 1``: keep the first
   copy of each key by Kinesis position.
   Every row gets the load's ``transform_version`` (a load holds files of one version,
   ``load_group`` in the loader).
8. ``INSERT INTO loaded_files`` (one row per file) and ``INSERT INTO loads``: the
   insert-only record of what this transaction loaded, committed with the rows. The
   control store's ledger is reconciled from it (``shardline.loaders.warehouse.record``).
   Beside them, ``load_hours`` (``shardline.records.hours``): per UTC hour of arrival, the
   files' rows (``staged``, from the ledger's counts) and the rows step 7 inserted
   (``inserted``: the ledger's counts again when it inserted every row copied; only when it
   dropped duplicates, its ranking counted over ``stage_x``), so reconciliation knows the
   duplicates dropped in each hour; a reprocess load also counts the stored rows it removes
   (``replaced``) just before each replace DELETE, with the same predicate.
9. ``DROP TABLE stage_x``.

A *reprocess* load (``replace=True``: files a ``shardline reprocess`` run staged) adds,
before step 6, ``replace_range``: ``DELETE FROM target WHERE arrival_time BETWEEN lo AND hi
AND (<shard and position in the file's range> OR ...)``, removing every stored row of the
files' exact position ranges (rows the current transform now rejects included). The range
predicate is on ``arrival_time`` (the files' records' exact arrival range: set by Kinesis,
so the same whatever transform made the stored row), which zone maps prune as rows arrive
in that order; only files without a recorded arrival range fall back to the sort key
widened by the dedup window. Steps 6-7 then insert the files'
rows (an event stored at a position outside the ranges keeps its row: still exactly once).
All in the same transaction as the record, so a kill leaves either the old rows or the new.

Nothing here reads or writes a table that stage workers write (they write only the
control store), so the load has no read/write cycle with them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Iterator, Sequence

from shardline import positions
from shardline.errors import ConfigError, LoadFailed
from shardline.tables import POSITION_KEY, TableSpec
from shardline.records import hours
from shardline.records.ledger import StagedFile, arrival_bound
from shardline.loaders.warehouse.hour_steps import hour_count_step, inserted_hours_steps, \
    staged_hours_step
from shardline.loaders.warehouse.steps import Params, Results, Sql


IN_CHUNK = 500  # keys per "s3_key IN (...)" / rows per multi-row INSERT
STL_FILENAME_CHARS = 256  # Redshift's STL_LOAD_ERRORS.filename is CHAR(256): longer URLs are cut

# The merge keeps the first copy of an event: lowest shard, then Kinesis position.
POSITION_ORDER = "shard_id, " + positions.order_by("sequence_number", "sub_sequence_number")

LOADED_FILES_COLUMNS = ("s3_key", "target_table", "load_id", "stream", "shard_id",
                        "first_sequence", "first_sub_sequence", "last_sequence",
                        "last_sub_sequence", "row_count", "byte_count", "staged_at",
                        "loaded_at", "transform_version", "generation")
REPLACE_CHUNK = 100  # file ranges per replace DELETE


class Refused(LoadFailed):
    """A guard step of the plan refused the load (``step``: fence | already_loaded)."""

    def __init__(self, message: str, step: str):
        super().__init__(message)
        self.step = step


# -- manifests -----------------------------------------------------------------------

def entry_at_line(entries: Sequence[StagedFile], line: int) -> tuple[StagedFile, int] | None:
    """COPY's line ``line`` (1-based) of the concatenation of ``entries`` -> (the file, its
    record number), from the ledger's row counts (one record per line)."""
    seen = 0
    for entry in entries:
        if 0 < line <= seen + entry.row_count:
            return entry, line - seen
        seen += entry.row_count
    return None


@dataclass(frozen=True)
class Manifest:
    bucket: str
    key: str
    entries: tuple[StagedFile, ...]  # only entries with rows: a 0-row batch has no object
    # (key, size) of combined parts standing in for some entries (combine.py); the JSON
    # lists the parts plus the entries no part holds
    parts: tuple[tuple[str, int], ...] = ()
    combined: frozenset[str] = frozenset()  # s3 keys of the entries inside the parts
    members: tuple[tuple[StagedFile, ...], ...] = ()  # per part: its entries, in part order

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def object_url(self, entry: StagedFile) -> str:
        return f"s3://{self.bucket}/{entry.s3_key}"

    def objects(self) -> list[tuple[str, tuple[StagedFile, ...]]]:
        """What COPY reads, in manifest order: (URL, the staged files in it, in order)."""
        return [(f"s3://{self.bucket}/{key}", files)
                for (key, _), files in zip(self.parts, self.members, strict=False)] + [
            (self.object_url(e), (e,)) for e in self.entries if e.s3_key not in self.combined]

    def locate(self, filename: str, line: int) -> StagedFile | None:
        """The staged file behind line ``line`` of the object ``filename`` names, as Redshift's
        STL_LOAD_ERRORS gives it: the URL cut at CHAR(256), maybe a combined part's (whose
        files' rows follow each other in the ledger's order and row counts)."""
        name = filename.rstrip()
        found = [files for url, files in self.objects() if url[:STL_FILENAME_CHARS] == name
                 or (name and len(name) >= STL_FILENAME_CHARS and url.startswith(name))]
        if len(found) != 1:  # unknown, or a cut so short it is ambiguous
            return None
        hit = entry_at_line(found[0], line)
        return hit[0] if hit else (found[0][0] if len(found[0]) == 1 else None)

    def to_json(self) -> bytes:
        """Redshift manifest format (the contract): url, mandatory, meta.content_length."""
        objects = [(key, size) for key, size in self.parts] + [
            (e.s3_key, e.byte_count) for e in self.entries if e.s3_key not in self.combined]
        return json.dumps({"entries": [
            {"url": f"s3://{self.bucket}/{key}", "mandatory": True,
             "meta": {"content_length": size}} for key, size in objects]},
            indent=1).encode()


# -- the steps -----------------------------------------------------------------------

@dataclass(frozen=True)
class CopyManifest:
    """Load every file of ``manifest`` into ``stage_table`` (dialect-specific)."""

    name: str
    stage_table: str
    columns: tuple[str, ...]
    manifest: Manifest


@dataclass(frozen=True)
class CheckRows:
    """The rows COPY staged (``rows_copied``) must be the rows the ledger counts in the
    files: a gzip member COPY did not read, or a CSV misparse, must fail the load, not lose
    or invent rows silently."""

    name: str
    expected: int


Step = Sql | CopyManifest | CheckRows


@dataclass(frozen=True)
class LoadPlan:
    """A load's two transactions, in order. ``copy`` fills the staging table (a temporary
    table of the session, so it outlives its transaction) and reads no table the loader does
    not own; ``merge`` is short and starts at the fence, so its snapshot is taken after the
    COPY: a DELETE or ADD COLUMN another session committed during the COPY is what the merge
    sees, and a merge that must be retried does not redo the COPY."""

    copy: tuple[Step, ...]
    merge: tuple[Step, ...]

    def __iter__(self) -> Iterator[Step]:
        return iter((*self.copy, *self.merge))


def _key_match(left: str, right: str, key: Sequence[str]) -> str:
    return " AND ".join(f"{left}.{k} = {right}.{k}" for k in key)


def _window(window_s: float) -> Callable[[Results], Params]:
    def params(results: Results) -> Params:
        low, high = results.get("sort_range") or (None, None)
        if low is None or high is None:
            return (None, None)  # nothing staged: matches nothing
        pad = timedelta(seconds=window_s)
        return (low - pad, high + pad)
    return params


def fence_table(table: str) -> str:
    """The table's own fence table (``record.ensure_fence`` makes it)."""
    return f"load_fence_{table}"


def fence_step(table: str, token: int, load_id: str, now: datetime) -> Sql:
    return Sql("fence", f"UPDATE {fence_table(table)} SET lease_token = %s, load_id = %s, "
                        "updated_at = %s WHERE target_table = %s AND lease_token <= %s",
               (token, load_id, now, table, token), expect_rowcount=1,
               refusal=f"load fence of {table}: a loader with a lease token newer than "
                       f"{token} has loaded (our loader lease was taken over); load abandoned")


def already_loaded_steps(table: str, entries: Sequence[StagedFile]) -> list[Sql]:
    if not entries:
        return []
    since = min(e.staged_at for e in entries) - timedelta(hours=1)  # clock skew between hosts
    keys = [e.s3_key for e in entries]
    steps = []
    for n, start in enumerate(range(0, len(keys), IN_CHUNK)):
        chunk = keys[start:start + IN_CHUNK]
        steps.append(Sql(
            f"already_loaded_{n}",
            "SELECT s3_key, load_id FROM loaded_files WHERE target_table = %s AND loaded_at >= %s"
            f" AND s3_key IN ({', '.join(['%s'] * len(chunk))})",
            (table, since, *chunk), expect_empty=True,
            refusal="some of these files are already in the warehouse (a load committed "
                    "before the control store heard of it); reconciling"))
    return steps


def record_steps(table: str, load_id: str, entries: Sequence[StagedFile],
                 loaded_at: datetime) -> list[Sql]:
    """Multi-row INSERTs into the insert-only ``loaded_files`` record."""
    cols = ", ".join(LOADED_FILES_COLUMNS)
    steps = []
    for n, start in enumerate(range(0, len(entries), IN_CHUNK)):
        chunk = entries[start:start + IN_CHUNK]
        row = "(" + ", ".join(["%s"] * len(LOADED_FILES_COLUMNS)) + ")"
        params: list[Any] = []
        for e in chunk:
            params += [e.s3_key, table, load_id, e.stream, e.shard_id, e.first_sequence,
                       e.first_sub_sequence, e.last_sequence, e.last_sub_sequence, e.row_count,
                       e.byte_count, e.staged_at, loaded_at, e.transform_version, e.generation]
        steps.append(Sql(f"record_files_{n}", f"INSERT INTO loaded_files ({cols}) VALUES "
                                              + ", ".join([row] * len(chunk)), tuple(params)))
    return steps


def _replace_bound(spec: TableSpec, window_s: float, entries: Sequence[StagedFile]
                   ) -> tuple[str, Callable[[Results], Params] | Params]:
    """The range predicate that keeps the replace delete as cheap as the dedup.

    ``arrival_time`` when every file knows its records' arrival range (files staged since
    the ledger kept it: every reprocess file): Kinesis sets it, so it is the same whatever
    transform made the stored row, and it bounds the files' position ranges exactly -- a
    row whose ``occurred_at`` an old transform got hours wrong is still found. Redshift
    keeps a zone map on every column and rows are appended in arrival order, so this
    prunes like the sort key (a BRIN index in the redshift-like mode). Otherwise the sort
    key widened by the dedup window, as the dedup."""
    if entries and all(e.arrival_min_ms is not None and e.arrival_max_ms is not None
                       for e in entries):
        return "arrival_time BETWEEN %s AND %s AND ", arrival_bound(
            min(e.arrival_min_ms for e in entries),  # type: ignore[type-var, arg-type]
            max(e.arrival_max_ms for e in entries))  # type: ignore[type-var, arg-type]
    if not spec.sort_key:
        return "", ()

    def params(results: Results) -> Params:
        low, high = results.get("sort_range") or (None, None)
        if low is None or high is None:
            return (None, None)  # no staged rows and no arrival range: matches nothing
        pad = timedelta(seconds=window_s)
        return (low - pad, high + pad)
    return f"{spec.sort_key} BETWEEN %s AND %s AND ", params


def replace_steps(spec: TableSpec, entries: Sequence[StagedFile], window_s: float,
                  load_id: str, recorded_at: datetime) -> list[Sql]:
    """Delete the stored rows of the files' exact position ranges (reprocess loads)."""
    term = "(shard_id = %s AND " + positions.within("sequence_number", "sub_sequence_number") + ")"
    bound, window = _replace_bound(spec, window_s, entries)
    steps = []
    for n, start in enumerate(range(0, len(entries), REPLACE_CHUNK)):
        chunk = entries[start:start + REPLACE_CHUNK]
        ranges: list[Any] = []
        for e in chunk:
            ranges += [e.shard_id, *positions.within_params(
                (e.first_sequence, e.first_sub_sequence), (e.last_sequence, e.last_sub_sequence))]
        where = " OR ".join([term] * len(chunk))
        params: Any = (lambda r, ranges=tuple(ranges): (*window(r), *ranges)) \
            if callable(window) else (*window, *ranges)
        steps += [
            hour_count_step(f"record_replaced_{n}", hours.REPLACED, spec.name, load_id,
                            recorded_at, f"{spec.name} WHERE {bound}({where})", params),
            Sql(f"replace_range_{n}", f"DELETE FROM {spec.name} WHERE {bound}({where})",
                params, result=f"rows_replaced_{n}", fetch="rowcount")]
    return steps


def build_plan(spec: TableSpec, *, load_id: str, stage_table: str, manifest: Manifest,
               entries: Sequence[StagedFile], started_at: datetime,
               finished_at: Callable[[], datetime], lease_token: int,
               dedup_window_s: float, replace: bool = False,
               transform_version: str | None = None,
               columns: Sequence[str] | None = None) -> LoadPlan:
    """The load as a list of steps, the same on every warehouse (see the module doc).

    ``columns``: the staged files' column list (``StagedFile.columns``; every file of a
    load has the same), which the COPY and the INSERT name: a column the table has and the
    files do not (added after they were staged) gets its default, or NULL."""
    staged = tuple(columns or spec.column_names)
    missing = [c for c in (*POSITION_KEY, *(spec.dedup_key or ())) if c not in staged]
    if missing:
        raise ConfigError(f"table {spec.name}: the loader needs the position and dedup key "
                          f"columns in the staged files (missing {', '.join(missing)})")
    key = tuple(spec.dedup_key or POSITION_KEY)
    cols = ", ".join(staged)
    target = spec.name
    copy: list[Step] = []
    steps: list[Step] = [fence_step(target, lease_token, load_id, started_at),
                         *already_loaded_steps(target, entries)]
    if not manifest.entries and replace:
        steps += replace_steps(spec, entries, dedup_window_s, load_id, started_at)  # all rejected
    if manifest.entries:  # only 0-row batches: no COPY
        dedup = f"DELETE FROM {stage_table} USING {target} " \
                f"WHERE {_key_match(stage_table, target, key)}"
        # the guard first, so a file already loaded costs no COPY; the merge checks again
        copy += [
            *already_loaded_steps(target, entries),
            Sql("create_stage",
                f"CREATE TEMP TABLE {stage_table} (LIKE {target} INCLUDING DEFAULTS)"),
            CopyManifest("copy", stage_table, staged, manifest),
            Sql("count_staged", f"SELECT COUNT(*) FROM {stage_table}",
                result="rows_copied", fetch="one"),
            CheckRows("check_rows", sum(e.row_count for e in entries)),
        ]
        if spec.sort_key:
            sk = spec.sort_key
            copy.append(Sql("sort_range", f"SELECT MIN({sk}), MAX({sk}) FROM {stage_table}",
                            result="sort_range", fetch="row"))
            steps += [
                *(replace_steps(spec, entries, dedup_window_s, load_id, started_at)
                  if replace else ()),
                Sql("delete_existing", f"{dedup} AND {target}.{sk} BETWEEN %s AND %s",
                    _window(dedup_window_s)),
            ]
        else:
            steps += [*(replace_steps(spec, entries, dedup_window_s, load_id, started_at)
                        if replace else ()),
                      Sql("delete_existing", dedup)]
        steps.append(Sql(  # loaded_at from the loader's UTC clock, never a session-zone default
            "insert_new",
            f"INSERT INTO {target} ({cols}, loaded_at, transform_version) SELECT {cols}, %s, %s "
            f"FROM (SELECT {cols}, ROW_NUMBER() OVER (PARTITION BY {', '.join(key)} "
            f"ORDER BY {POSITION_ORDER}) AS rn FROM {stage_table}) ranked WHERE rn = 1",
            (started_at, transform_version), result="rows_inserted", fetch="rowcount"))
        steps += inserted_hours_steps(spec.name, key, POSITION_ORDER, stage_table, load_id,
                                      entries, started_at)
    steps += record_steps(target, load_id, entries, started_at)
    steps += staged_hours_step(target, load_id, entries, started_at)
    files = len(manifest.entries)
    size = sum(e.byte_count for e in entries)
    steps.append(Sql(
        "insert_load",
        "INSERT INTO loads (load_id, target_table, manifest_key, file_count, byte_count, "
        "rows_copied, rows_inserted, lease_token, started_at, finished_at) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        lambda r: (load_id, target, manifest.key, files, size, r.get("rows_copied", 0),
                   r.get("rows_inserted", 0), lease_token, started_at, finished_at())))
    if manifest.entries:
        steps.append(Sql("drop_stage", f"DROP TABLE {stage_table}"))
    return LoadPlan(tuple(copy), tuple(steps))
