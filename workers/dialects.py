"""Warehouse dialects for the loader: ONE load plan, two ways to run its COPY step.

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
   copy of each key by Kinesis position. Ranking in the INSERT's subquery instead
   of materialising a second staging table gives the same rows with one write less.
6. ``UPDATE staged_files SET state = 'loaded' ...`` for exactly these entries (a
   row count mismatch aborts the load).
7. ``INSERT INTO loads ...``: the history row.
8. Advance ``shard_watermarks`` per (stream, shard, table) touched.
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

import abc
import json
import re
import time
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Iterable, Sequence

from shardline import csvformat
from shardline.errors import ConfigError, LoadFailed
from shardline.tables import POSITION_KEY, TableSpec

PENDING, LOADED = "pending", "loaded"
LEDGER_IN_CHUNK = 1000  # keys per "s3_key IN (...)" statement

# Kinesis position order: sequence numbers are decimal strings longer than NUMERIC(38),
# so they compare by (length, text).
POSITION_ORDER = "shard_id, LENGTH(sequence_number), sequence_number, sub_sequence_number"


# -- ledger entries and manifests ------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """One pending ``staged_files`` row as the loader sees it."""

    s3_key: str
    stream: str
    shard_id: str
    first_sequence: str
    first_sub_sequence: int
    last_sequence: str
    last_sub_sequence: int
    row_count: int
    byte_count: int
    staged_at: datetime


ENTRY_COLUMNS = ("s3_key", "stream", "shard_id", "first_sequence", "first_sub_sequence",
                 "last_sequence", "last_sub_sequence", "row_count", "byte_count", "staged_at")


@dataclass(frozen=True)
class Manifest:
    bucket: str
    key: str
    entries: tuple[Entry, ...]  # only entries with rows: a 0-row batch has no object

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def object_url(self, entry: Entry) -> str:
        return f"s3://{self.bucket}/{entry.s3_key}"

    def to_json(self) -> bytes:
        """Redshift manifest format (the contract): url, mandatory, meta.content_length."""
        return json.dumps({"entries": [
            {"url": self.object_url(e), "mandatory": True,
             "meta": {"content_length": e.byte_count}} for e in self.entries]},
            indent=1).encode()


def manifest_key(prefix: str, table: str, load_id: str) -> str:
    head = prefix.strip("/")
    return f"{head + '/' if head else ''}manifests/{table}/{load_id}.manifest"


def parse_s3_url(url: str) -> tuple[str, str]:
    match = re.fullmatch(r"s3://([^/]+)/(.+)", url)
    if not match:
        raise ValueError(f"not an s3:// URL: {url!r}")
    return match.group(1), match.group(2)


# -- the plan ----------------------------------------------------------------------

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


def _quote_ident_list(names: Iterable[str]) -> str:
    return ", ".join(names)


def _key_match(left: str, right: str, key: Sequence[str]) -> str:
    return " AND ".join(f"{left}.{k} = {right}.{k}" for k in key)


def build_plan(spec: TableSpec, *, load_id: str, stage_table: str, manifest: Manifest,
               entries: Sequence[Entry], started_at: datetime,
               finished_at: Callable[[], datetime]) -> list[Step]:
    """The load as a list of steps, shared by both dialects (see the module doc)."""
    missing = [c for c in POSITION_KEY if c not in spec.column_names]
    if missing:
        raise ConfigError(f"table {spec.name}: the loader needs the position columns "
                          f"{', '.join(POSITION_KEY)} (missing {', '.join(missing)})")
    key = tuple(spec.dedup_key or POSITION_KEY)
    cols = _quote_ident_list(spec.column_names)
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
        steps.append(Sql(
            f"mark_loaded_{n}",
            "UPDATE staged_files SET state = %s, load_id = %s, loaded_at = %s "
            "WHERE target_table = %s AND state = %s AND s3_key IN %s",
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


# -- watermark SQL (shared) ---------------------------------------------------------

_SHARD_WHERE = "target_table = %s AND stream = %s AND shard_id = %s"
_FIRST_PENDING = (f"SELECT last_sequence, last_sub_sequence FROM staged_files "
                  f"WHERE {_SHARD_WHERE} AND state = 'pending' "
                  f"ORDER BY LENGTH(last_sequence), last_sequence, last_sub_sequence LIMIT 1")
_LAST_LOADED = (f"SELECT last_sequence, last_sub_sequence FROM staged_files "
                f"WHERE {_SHARD_WHERE} AND state = 'loaded'{{below}} "
                f"ORDER BY LENGTH(last_sequence) DESC, last_sequence DESC, "
                f"last_sub_sequence DESC LIMIT 1")
_BELOW = (" AND (LENGTH(last_sequence) < %s OR (LENGTH(last_sequence) = %s AND "
          "(last_sequence < %s OR (last_sequence = %s AND last_sub_sequence < %s))))")
_CURRENT_WM = ("SELECT loaded_sequence, loaded_sub_sequence FROM shard_watermarks "
               "WHERE stream = %s AND shard_id = %s AND target_table = %s")
_UPDATE_WM = ("UPDATE shard_watermarks SET loaded_sequence = %s, loaded_sub_sequence = %s, "
              "load_id = %s, updated_at = %s WHERE stream = %s AND shard_id = %s "
              "AND target_table = %s")
_INSERT_WM = ("INSERT INTO shard_watermarks (loaded_sequence, loaded_sub_sequence, load_id, "
              "updated_at, stream, shard_id, target_table) VALUES (%s, %s, %s, %s, %s, %s, %s)")


def position(seq: str, sub: int) -> tuple[int, str, int]:
    return (len(seq), seq, int(sub))


def advance_watermarks(cur: Any, step: AdvanceWatermarks) -> dict[tuple[str, str], tuple]:
    """Run inside the load transaction, after the ledger UPDATE; returns the new marks."""
    moved = {}
    for stream, shard in step.shards:
        where = (step.table, stream, shard)
        cur.execute(_FIRST_PENDING, where)
        pending = cur.fetchone()
        if pending is None:
            cur.execute(_LAST_LOADED.format(below=""), where)
        else:
            seq, sub = pending[0], pending[1]
            cur.execute(_LAST_LOADED.format(below=_BELOW),
                        where + (len(seq), len(seq), seq, seq, sub))
        best = cur.fetchone()
        if best is None:
            continue
        cur.execute(_CURRENT_WM, (stream, shard, step.table))
        current = cur.fetchone()
        if current is not None and position(*current) >= position(*best):
            continue
        params = (best[0], best[1], step.load_id, step.now, stream, shard, step.table)
        cur.execute(_UPDATE_WM if current is not None else _INSERT_WM, params)
        moved[(stream, shard)] = (best[0], best[1])
    return moved


# -- dialects ---------------------------------------------------------------------

@dataclass
class PlanResult:
    rows_copied: int = 0
    rows_inserted: int = 0
    watermarks: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)  # step name -> seconds


class Dialect(abc.ABC):
    """What differs between warehouses: the lock statement and the COPY step."""

    name: str = ""

    @abc.abstractmethod
    def lock_sql(self, table: str) -> str:
        ...

    @abc.abstractmethod
    def copy(self, cur: Any, step: CopyManifest) -> None:
        """Run the COPY; raise ``LoadFailed`` with a readable reason."""

    def copy_error_details(self, cur: Any) -> list[str]:
        """After a failed COPY and its rollback, in the same session: error rows to log."""
        return []

    def redact(self, text: str) -> str:
        return text

    def run(self, cur: Any, plan: Sequence[Step]) -> PlanResult:
        """Execute the plan's steps in the caller's transaction."""
        results: dict[str, Any] = {}
        out = PlanResult()
        for step in plan:
            t0 = time.perf_counter()
            self._run_step(cur, step, results, out)
            out.timings[step.name] = time.perf_counter() - t0
        out.rows_copied = int(results.get("rows_copied", 0))
        out.rows_inserted = int(results.get("rows_inserted", 0))
        return out

    def _run_step(self, cur: Any, step: Step, results: dict, out: PlanResult) -> None:
        if isinstance(step, CopyManifest):
            try:
                self.copy(cur, step)
            except LoadFailed as exc:
                exc.step = "copy"  # the loader then logs the dialect's error details
                raise
        elif isinstance(step, AdvanceWatermarks):
            out.watermarks = advance_watermarks(cur, step)
        else:
            params = step.params(results) if callable(step.params) else step.params
            cur.execute(step.text, params)
            if step.fetch == "one":
                results[step.result] = cur.fetchone()[0]
            elif step.fetch == "rowcount":
                results[step.result] = cur.rowcount
            if step.expect_rowcount is not None and cur.rowcount != step.expect_rowcount:
                raise LoadFailed(f"{step.name}: expected {step.expect_rowcount} pending "
                                 f"ledger rows, updated {cur.rowcount}; the ledger changed "
                                 f"under the lock, load abandoned")


_IAM_ROLE = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+")


class RedshiftDialect(Dialect):
    """COPY straight from S3 through the manifest, authenticated by an IAM role."""

    name = "redshift"

    def __init__(self, iam_role: str):
        roles = [r.strip() for r in iam_role.split(",")] if iam_role else []
        if not roles:
            raise ConfigError("warehouse.iam_role is required for the redshift dialect: the IAM "
                              "role ARN that COPY uses to read the staged files "
                              "(SHARDLINE_WAREHOUSE_IAM_ROLE)")
        if not all(_IAM_ROLE.fullmatch(r) for r in roles):
            # Do not echo the value: it never goes into a message.
            raise ConfigError("warehouse.iam_role does not look like an IAM role ARN "
                              "(arn:aws:iam::<12-digit account>:role/<name>; chain roles with ',')")
        self.iam_role = ",".join(roles)

    def lock_sql(self, table: str) -> str:
        return f"LOCK {table}"

    def copy_sql(self, step: CopyManifest) -> str:
        url = step.manifest.url.replace("'", "''")
        return (f"COPY {step.stage_table} ({', '.join(step.columns)}) FROM '{url}' "
                f"IAM_ROLE '{self.iam_role}' MANIFEST {csvformat.REDSHIFT_COPY_OPTIONS} "
                f"STATUPDATE OFF COMPUPDATE OFF")

    def redact(self, text: str) -> str:
        return text.replace(self.iam_role, "<warehouse.iam_role>")

    def copy(self, cur: Any, step: CopyManifest) -> None:
        import psycopg2

        try:
            cur.execute(self.copy_sql(step))
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            raise
        except psycopg2.Error as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise LoadFailed(self.redact(f"COPY of {step.manifest.url} failed: {first}")) \
                from None

    STL_LOAD_ERRORS = (
        "SELECT query, TRIM(filename), line_number, TRIM(colname), TRIM(type), "
        "TRIM(raw_field_value), err_code, TRIM(err_reason) FROM stl_load_errors "
        "WHERE query = pg_last_copy_id() ORDER BY starttime, line_number LIMIT 20")

    def copy_error_details(self, cur: Any) -> list[str]:
        cur.execute(self.STL_LOAD_ERRORS)
        lines = []
        for query, filename, line, col, kind, raw, code, reason in cur.fetchall():
            lines.append(self.redact(
                f"stl_load_errors query={query} file={filename} line={line} column={col} "
                f"type={kind} code={code} reason={reason!r} value={raw!r}"))
        return lines


class PostgresDialect(Dialect):
    """PostgreSQL cannot read S3: stream each manifest object (gunzip on the fly) into
    one ``COPY ... FROM STDIN``. The next few GETs are started ahead in threads so S3
    latency overlaps the COPY; bodies are read and decompressed as streams."""

    name = "postgres"
    READ_CHUNK = 256 * 1024  # bytes per copy_expert read
    BODY_CHUNK = 64 * 1024  # compressed bytes per S3 body read (~1 MB of CSV)

    def __init__(self, s3: Any, prefetch: int = 4):
        self.s3 = s3
        self.prefetch = max(1, prefetch)

    def lock_sql(self, table: str) -> str:
        return f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"

    def copy_sql(self, step: CopyManifest) -> str:
        return (f"COPY {step.stage_table} ({', '.join(step.columns)}) FROM STDIN WITH "
                f"{csvformat.POSTGRES_COPY_OPTIONS}")

    def copy(self, cur: Any, step: CopyManifest) -> None:
        import psycopg2

        entries = list(step.manifest.entries)
        if not entries:
            return
        with ThreadPoolExecutor(max_workers=self.prefetch,
                                thread_name_prefix="loader-get") as pool:
            reader = ManifestReader(self.s3, step.manifest, pool, self.prefetch)
            try:
                cur.copy_expert(self.copy_sql(step), reader, size=self.READ_CHUNK)
            except LoadFailed:
                raise
            except psycopg2.Error as exc:
                if reader.error is not None:  # read() failed: psycopg2 wraps it, unwrap
                    raise reader.error from None
                if isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
                    raise
                raise LoadFailed(_describe_pg_copy_error(exc, entries, step.manifest)) from None
            finally:
                reader.close()
        if reader.error is not None:  # psycopg2 may swallow an exception raised by read()
            raise reader.error


def _describe_pg_copy_error(exc: Any, entries: Sequence[Entry], manifest: Manifest) -> str:
    """PostgreSQL numbers CSV records across the whole stream ("line N"); map N to the
    file with the ledger's row counts."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    context = " ".join(line.strip() for line in text[1:])
    where = ""
    match = re.search(r"line (\d+)", context)
    if match:
        line = int(match.group(1))
        seen = 0
        for entry in entries:
            if line <= seen + entry.row_count:
                where = f" (record {line - seen} of {manifest.object_url(entry)})"
                break
            seen += entry.row_count
    return f"COPY of {manifest.url} failed: {first}{where} [{context}]"


class ManifestReader:
    """A file-like ``read(size)`` over the decompressed concatenation of the manifest's
    objects, for ``copy_expert``. Each object's ``get_object`` is started ``ahead``
    files early; its body is read and gunzipped in chunks (multi-member gzip too)."""

    def __init__(self, s3: Any, manifest: Manifest, pool: ThreadPoolExecutor, ahead: int):
        self.s3 = s3
        self.manifest = manifest
        self.pool = pool
        self.ahead = ahead
        self.todo = deque(manifest.entries)
        self.inflight: deque[tuple[Entry, Future]] = deque()
        self.body: Any = None
        self.entry: Entry | None = None
        self.inflater: Any = None
        self.in_member = False
        self.last_byte = b"\n"
        self.buffer = b""
        self.pos = 0
        self.error: LoadFailed | None = None
        self.bytes_out = 0

    def _get(self, entry: Entry) -> Any:
        return self.s3.get_object(Bucket=self.manifest.bucket, Key=entry.s3_key)["Body"]

    def _fill(self) -> None:
        while self.todo and len(self.inflight) < self.ahead:
            entry = self.todo.popleft()
            self.inflight.append((entry, self.pool.submit(self._get, entry)))

    def _next_body(self) -> bool:
        self._fill()
        if not self.inflight:
            return False
        self.entry, future = self.inflight.popleft()
        try:
            self.body = future.result()
        except Exception as exc:  # botocore ClientError, connection errors
            self.error = LoadFailed(f"cannot read {self.manifest.object_url(self.entry)}: "
                                    f"{_first_line(exc)}")
            raise self.error from None
        self.inflater = zlib.decompressobj(wbits=31)
        self.in_member = False
        self._fill()
        return True

    def _inflate(self, data: bytes) -> bytes:
        out = b""
        while data:
            self.in_member = True
            out += self.inflater.decompress(data)
            if self.inflater.eof:  # next gzip member, if any
                data = self.inflater.unused_data
                self.inflater = zlib.decompressobj(wbits=31)
                self.in_member = False
            else:
                data = b""
        return out

    def _chunk(self) -> bytes:
        """The next non-empty decompressed chunk, or b"" at the very end."""
        while True:
            if self.body is None and not self._next_body():
                return b""
            try:
                data = self.body.read(PostgresDialect.BODY_CHUNK)
                if data:
                    out = self._inflate(data)
                else:
                    out = b""
                    self.body.close()
                    self.body = None
                    if self.in_member:
                        raise zlib.error("truncated gzip stream")
                    if self.last_byte != b"\n":  # keep records of two files apart
                        out = b"\n"
            except zlib.error as exc:
                self.error = LoadFailed(f"{self.manifest.object_url(self.entry)} is not valid "
                                        f"gzip: {exc}")
                raise self.error from None
            except LoadFailed:
                raise
            except Exception as exc:
                self.error = LoadFailed(f"reading {self.manifest.object_url(self.entry)}: "
                                        f"{_first_line(exc)}")
                raise self.error from None
            if out:
                self.last_byte = out[-1:]
                return out

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (fewer at a chunk boundary); b"" only at the very end."""
        if size is None or size < 0:
            size = 1 << 62
        if self.pos >= len(self.buffer):
            self.buffer, self.pos = self._chunk(), 0
            if not self.buffer:
                return b""
        out = self.buffer[self.pos:self.pos + size]
        self.pos += len(out)
        self.bytes_out += len(out)
        return out

    def readline(self, size: int = -1) -> bytes:  # pragma: no cover - copy_expert uses read
        return self.read(size)

    def close(self) -> None:
        if self.body is not None:
            try:
                self.body.close()
            except Exception:
                pass
            self.body = None
        for _, future in self.inflight:
            future.cancel()
            if future.done() and not future.cancelled() and future.exception() is None:
                try:
                    future.result().close()
                except Exception:
                    pass
        self.inflight.clear()


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def make_dialect(settings: Any, s3: Any = None) -> Dialect:
    """The configured dialect; ``ConfigError`` at start when it cannot work."""
    name = settings.warehouse.dialect
    if name == "redshift":
        return RedshiftDialect(settings.warehouse.iam_role)
    if name == "postgres":
        if s3 is None:
            raise ConfigError("the postgres dialect needs an S3 client to stream staged files")
        return PostgresDialect(s3)
    raise ConfigError(f"warehouse.dialect {name!r} is not supported by the loader")
