"""Test kit for the loader: page-view rows, staged files, and a recording fake warehouse.

- ``page_view(...)``: a row in ``PAGE_VIEWS`` column order.
- ``stage_file(...)``: gzip'd CSV (``csvformat.format_row``) to S3 and its ledger row
  (``shardline.workers.ledger.StagedFile``, the stage worker's INSERT), without the stage worker.
- ``FakeWarehouse``: a psycopg2-like connection that records every statement (with
  ``BEGIN``/``COMMIT``/``ROLLBACK`` as psycopg2 issues them) and answers the loader's
  ledger and watermark queries from an in-memory ledger with transaction semantics.
  Used to assert the Redshift plan as SQL text (there is no Redshift here).
The S3 double is ``tests.fakes.FakeS3``.
"""
from __future__ import annotations

import gzip
import json
import re
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Iterable, Sequence

import psycopg2

from tests.fakes import FakeS3

from shardline import csvformat
from shardline.settings import Settings
from shardline.tables import PAGE_VIEWS
from shardline.workers.ledger import INSERT_SQL, LOADED, PENDING, PENDING_COLUMNS, StagedFile
from shardline.workers.loader import Loader
from shardline.positions import position
from shardline.workers.warehouse.redshift import RedshiftDialect

STREAM = "clicks"
SHARD0 = "shardId-000000000000"
SHARD1 = "shardId-000000000001"
T0 = datetime(2026, 1, 2, 3, 4, 5, 678901)


def seq(i: int) -> str:
    """56-digit sequence numbers like Kinesis."""
    return str(10 ** 55 + i * 1000)


def event_id(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


def page_view(eid: str | int, sequence: str | int, sub: int = 0, shard: str = SHARD0,
              **overrides: Any) -> list[Any]:
    """A page_views row (column order of the staged CSV)."""
    eid = event_id(eid) if isinstance(eid, int) else eid
    sequence = seq(sequence) if isinstance(sequence, int) else sequence
    row = {
        "event_id": eid, "occurred_at": T0, "url": "https://example.com/a/b?x=1",
        "url_host": "example.com", "url_path": "/a/b", "url_query": "x=1",
        "referrer": None, "referrer_host": None, "user_agent": "Mozilla/5.0",
        "device_class": "desktop", "ip_prefix": "192.0.2.0/24", "user_id": None,
        "session_id": "s-1", "shard_id": shard, "sequence_number": sequence,
        "sub_sequence_number": sub, "arrival_time": T0, "staged_at": T0,
    }
    unknown = set(overrides) - set(row)
    assert not unknown, unknown
    row.update(overrides)
    return [row[c] for c in PAGE_VIEWS.column_names]


def csv_gz(rows: Iterable[Sequence[Any]]) -> bytes:
    return gzip.compress("".join(csvformat.format_row(r) for r in rows).encode("utf-8"))


def _pos(row: Sequence[Any]) -> tuple:
    names = PAGE_VIEWS.column_names
    return position(row[names.index("sequence_number")], row[names.index("sub_sequence_number")])


def _last_pos(entry: StagedFile) -> tuple:
    return position(entry.last_sequence, entry.last_sub_sequence)


def ledger_row(key: str, rows: Sequence[Sequence[Any]], *, shard: str = SHARD0,
               stream: str = STREAM, staged_at: datetime = T0, byte_count: int = 100,
               table: str = "page_views", first: tuple | None = None,
               last: tuple | None = None) -> StagedFile:
    """The ledger row the stage worker would write for ``rows`` (born ``loaded`` if empty)."""
    names = PAGE_VIEWS.column_names
    si, ssi = names.index("sequence_number"), names.index("sub_sequence_number")
    ordered = sorted(rows, key=_pos)
    first = first or ((ordered[0][si], ordered[0][ssi]) if rows else (seq(0), 0))
    last = last or ((ordered[-1][si], ordered[-1][ssi]) if rows else first)
    return StagedFile(s3_key=key, target_table=table, stream=stream, shard_id=shard,
                      first_sequence=first[0], first_sub_sequence=int(first[1]),
                      last_sequence=last[0], last_sub_sequence=int(last[1]),
                      row_count=len(rows), byte_count=byte_count, staged_at=staged_at)


def stage_file(s3: Any, bucket: str, cur: Any, key: str, rows: Sequence[Sequence[Any]], *,
               shard: str = SHARD0, stream: str = STREAM, staged_at: datetime = T0,
               first: tuple | None = None, last: tuple | None = None) -> StagedFile:
    """Write the staged object (unless the batch has no rows) and its ledger row."""
    body = csv_gz(rows) if rows else b""
    if rows:
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    entry = ledger_row(key, rows, shard=shard, stream=stream, staged_at=staged_at,
                       byte_count=len(body), first=first, last=last)
    if cur is not None:
        cur.execute(INSERT_SQL, entry.params())
    return entry


# -- fakes ---------------------------------------------------------------------------

class FakeCursor:
    def __init__(self, conn: "FakeWarehouse"):
        self.conn = conn
        self.rowcount = -1
        self._rows: list[tuple] = []

    def __enter__(self) -> "FakeCursor":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def execute(self, sql: str, params: Any = None) -> None:
        self.conn._begin()
        self.conn.statements.append((sql, params))
        rows, count = self.conn._answer(sql, params)
        self._rows = list(rows)
        self.rowcount = count if count is not None else len(self._rows)

    def copy_expert(self, sql: str, file: Any, size: int = 8192) -> None:
        self.conn._begin()
        data = b""
        while True:
            chunk = file.read(size)
            if not chunk:
                break
            data += chunk
        self.conn.statements.append((sql, None))
        self.conn.copied.append(data)

    def fetchone(self) -> tuple | None:
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[tuple]:
        rows, self._rows = self._rows, []
        return rows


class FakeWarehouse:
    """Recording psycopg2 stand-in with a transactional in-memory ledger.

    ``statements``: (sql, params) in order, with "BEGIN", "COMMIT", "ROLLBACK" as
    psycopg2 would send them (implicit BEGIN before the first statement).
    ``fail_on``: {regex: exception} raised when a statement matches.
    ``staged_rows``: rows COPY would put in the staging table (for COUNT(*)).
    ``inserted``: what ``INSERT INTO <target>`` reports as its row count.
    """

    def __init__(self, ledger: Iterable[StagedFile] = (), *, staged_rows: int | None = None,
                 inserted: int | None = None):
        self.ledger: dict[str, StagedFile] = {e.s3_key: e for e in ledger}
        self.watermarks: dict[tuple, tuple] = {}
        self.loads: list[tuple] = []
        self.statements: list[tuple[str, Any]] = []
        self.copied: list[bytes] = []
        self.fail_on: dict[str, BaseException] = {}
        self.load_errors: list[tuple] = []
        self.staged_rows = staged_rows
        self.inserted = inserted
        self.closed = 0
        self.autocommit = False
        self._tx: dict | None = None

    # connection API
    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def commit(self) -> None:
        if self._tx is not None:
            self.statements.append(("COMMIT", None))
            self.ledger, self.watermarks, self.loads = (self._tx["ledger"],
                                                         self._tx["watermarks"],
                                                         self._tx["loads"])
            self._tx = None

    def rollback(self) -> None:
        if self._tx is not None:
            self.statements.append(("ROLLBACK", None))
            self._tx = None

    def close(self) -> None:
        self.closed = 1

    def __call__(self) -> "FakeWarehouse":  # usable as the connect function
        self.closed = 0
        return self

    # helpers for assertions
    def sql(self) -> list[str]:
        return [s for s, _ in self.statements]

    def transactions(self) -> list[list[str]]:
        out, cur = [], None
        for s in self.sql():
            if s == "BEGIN":
                cur = [s]
            elif cur is not None:
                cur.append(s)
                if s in ("COMMIT", "ROLLBACK"):
                    out.append(cur)
                    cur = None
        return out

    # internals
    def _begin(self) -> None:
        if self._tx is None and not self.autocommit:
            self.statements.append(("BEGIN", None))
            self._tx = {"ledger": {k: replace(v) for k, v in self.ledger.items()},
                        "watermarks": dict(self.watermarks), "loads": list(self.loads)}

    def _state(self) -> dict:
        return self._tx or {"ledger": self.ledger, "watermarks": self.watermarks,
                            "loads": self.loads}

    def _answer(self, sql: str, params: Any) -> tuple[list[tuple], int | None]:
        for pattern, exc in self.fail_on.items():
            if re.search(pattern, sql):
                raise exc
        st = self._state()
        ledger: dict[str, StagedFile] = st["ledger"]
        flat = " ".join(sql.split())
        if flat.startswith("SELECT COUNT(*), COALESCE(SUM(byte_count), 0), MIN(staged_at)"):
            table, state = params
            rows = [e for e in ledger.values() if e.target_table == table and e.state == state]
            return [(len(rows), sum(e.byte_count for e in rows),
                     min((e.staged_at for e in rows), default=None))], None
        if flat.startswith(f"SELECT {', '.join(PENDING_COLUMNS)} FROM staged_files"):
            table, state, limit = params
            rows = sorted((e for e in ledger.values()
                           if e.target_table == table and e.state == state),
                          key=lambda e: (e.staged_at, e.s3_key))[:limit]
            return [tuple(getattr(e, c) for c in PENDING_COLUMNS) for e in rows], None
        if flat.startswith("SELECT COUNT(*) FROM stage_"):
            n = self.staged_rows
            if n is None:
                n = sum(e.row_count for e in ledger.values() if e.state == PENDING)
            return [(n,)], None
        if flat.startswith("INSERT INTO page_views") or flat.startswith("INSERT INTO "
                                                                         "position_table"):
            return [], self.inserted if self.inserted is not None else 0
        if flat.startswith("UPDATE staged_files SET state"):
            state, load_id, loaded_at, table, pending, keys = params
            n = 0
            for k in keys:
                e = ledger.get(k)
                if e and e.state == pending and e.target_table == table:
                    e.state, e.load_id, e.loaded_at = state, load_id, loaded_at
                    n += 1
            return [], n
        if flat.startswith("INSERT INTO loads"):
            st["loads"].append(params)
            return [], 1
        if flat.startswith("SELECT last_sequence, last_sub_sequence FROM staged_files"):
            table, stream, shard = params[:3]
            mine = [e for e in ledger.values()
                    if (e.target_table, e.stream, e.shard_id) == (table, stream, shard)]
            if f"state = '{PENDING}'" in flat:
                cands = sorted((e for e in mine if e.state == PENDING), key=_last_pos)
            else:
                cands = [e for e in mine if e.state == LOADED]
                if len(params) > 3:
                    bound = (params[3], params[5], params[7])
                    cands = [e for e in cands if _last_pos(e) < bound]
                cands = sorted(cands, key=_last_pos, reverse=True)
            return [(e.last_sequence, e.last_sub_sequence) for e in cands[:1]], None
        if flat.startswith("SELECT loaded_sequence, loaded_sub_sequence FROM shard_watermarks"):
            wm = st["watermarks"].get(tuple(params))
            return ([wm[:2]] if wm else []), None
        if flat.startswith("UPDATE shard_watermarks") or flat.startswith(
                "INSERT INTO shard_watermarks"):
            seq_, sub, load_id, now, stream, shard, table = params
            st["watermarks"][(stream, shard, table)] = (seq_, sub, load_id)
            return [], 1
        if flat.startswith("SELECT query, TRIM(filename)"):
            return list(self.load_errors), None
        return [], 0


def settings(**overrides: str) -> Any:
    """Settings for unit tests: no file, no environment."""
    base = {"warehouse.dsn": "host=127.0.0.1 dbname=x user=u", "s3.bucket": "bucket-x",
            "s3.prefix": "pfx", "loader.min_files": "1000", "loader.min_bytes": "1000000",
            "loader.max_interval_s": "30", "loader.poll_s": "0.5"}
    base.update(overrides)
    return Settings().replace(**base)


class Clock:
    def __init__(self, start: datetime = T0 + timedelta(seconds=5)):
        from datetime import timezone

        self.t = start.replace(tzinfo=timezone.utc).timestamp()

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


IAM_ROLE = "arn:aws:iam::123456789012:role/shardline-copy"


# -- backends for the contract suite -----------------------------------------------------
# postgres: the real local stack; redshift: the recording fake (SQL text, no rows).

LOADER_DEFAULTS = {"loader.max_interval_s": "0", "loader.poll_s": "0.05"}


class Backend:
    name = ""
    supports_rows = False

    def __init__(self) -> None:
        self.n = 0

    def key(self, name: str, shard: str = SHARD0) -> str:
        return f"{self.prefix}/staged/page_views/{STREAM}/{shard}/{name}.csv.gz"

    def next_time(self):
        self.n += 1
        return T0 + timedelta(seconds=self.n)


class PostgresBackend(Backend):
    name = "postgres"
    supports_rows = True

    def __init__(self, env: dict, pg_conn: Any, pg_schema: str, s3: Any, prefix: str):
        super().__init__()
        from shardline import migrate

        self.env, self.schema, self.s3, self.prefix = env, pg_schema, s3, prefix.strip("/")
        self.bucket = env["SHARDLINE_S3_BUCKET"]
        self.conn = pg_conn
        self.conn.autocommit = True
        with self.conn.cursor() as cur:
            cur.execute(f'SET search_path TO "{pg_schema}"')
        migrate.migrate(self.conn, "postgres")
        self.conn.autocommit = True

    def settings(self, **overrides: str) -> Settings:
        return Settings().replace(**{
            "warehouse.dsn": self.env["SHARDLINE_WAREHOUSE_DSN"],
            "warehouse.schema": self.schema,
            "s3.endpoint_url": self.env.get("SHARDLINE_S3_ENDPOINT_URL", ""),
            "s3.bucket": self.bucket, "s3.prefix": self.prefix,
            **LOADER_DEFAULTS, **overrides})

    def stage(self, name: str, rows: list, *, shard: str = SHARD0, staged_at=None, **kw: Any):
        with self.conn.cursor() as cur:
            return stage_file(self.s3, self.bucket, cur, self.key(name, shard), rows,
                              shard=shard, staged_at=staged_at or self.next_time(), **kw)

    def stage_bad(self, name: str, rows: list, **kw: Any):
        """Stage rows the warehouse will refuse (PostgreSQL refuses them for real)."""
        return self.stage(name, rows, **kw)

    def loader(self, **overrides: str) -> Loader:
        return Loader(self.settings(**overrides), "page_views", s3=self.s3)

    def query(self, sql: str, params: Any = None) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def stored(self) -> dict[str, tuple]:
        """event_id -> (shard_id, sequence_number, sub_sequence_number, url)."""
        rows = self.query("SELECT event_id, shard_id, sequence_number, sub_sequence_number, url "
                          "FROM page_views")
        out = {}
        for eid, *rest in rows:
            assert eid not in out, f"{eid} stored twice"
            out[eid] = tuple(rest)
        return out

    def ledger(self) -> dict[str, tuple]:
        return {k: (s, l) for k, s, l in self.query(
            "SELECT s3_key, state, load_id FROM staged_files")}

    def loads(self) -> list[tuple]:
        return self.query("SELECT load_id, file_count, rows_copied, rows_inserted FROM loads "
                          "ORDER BY started_at, load_id")

    def watermarks(self) -> dict[str, tuple]:
        return {shard: (s, int(sub)) for shard, s, sub in self.query(
            "SELECT shard_id, loaded_sequence, loaded_sub_sequence FROM shard_watermarks "
            "WHERE target_table = 'page_views'")}

    def check_dedup_plan(self) -> None:
        pass  # executed for real: the rows are checked instead

    def check_atomic(self) -> None:
        pass  # the SIGKILL test in tests/integration checks atomicity for real


class RedshiftBackend(Backend):
    name = "redshift"
    prefix = "pfx"
    bucket = "bucket-x"

    def __init__(self) -> None:
        super().__init__()
        self.s3 = FakeS3()
        self.wh = FakeWarehouse()
        self.clock = Clock(T0 + timedelta(hours=1))
        self.load_no = 0

    def stage(self, name: str, rows: list, *, shard: str = SHARD0, staged_at=None, **kw: Any):
        entry = stage_file(self.s3, self.bucket, None, self.key(name, shard), rows, shard=shard,
                           staged_at=staged_at or self.next_time(), **kw)
        self.wh.ledger[entry.s3_key] = entry
        return entry

    def stage_bad(self, name: str, rows: list, **kw: Any):
        """Stage rows Redshift would refuse: the fake COPY fails the way Redshift does and
        STL_LOAD_ERRORS holds the reason."""
        entry = self.stage(name, rows, **kw)
        self.wh.fail_on[r"^COPY "] = psycopg2.InternalError(
            "Load into table 'stage' failed.  Check 'stl_load_errors' system table for details.")
        self.wh.load_errors = [(77, f"s3://{self.bucket}/{entry.s3_key}", 1, "occurred_at",
                                "timestamp", "not a time", 1206,
                                "Invalid timestamp format or value")]
        return entry

    def loader(self, **overrides: str) -> Loader:
        cfg = settings(**{"warehouse.dialect": "redshift", "warehouse.iam_role": IAM_ROLE,
                          **LOADER_DEFAULTS, **overrides})

        def next_id(now):
            self.load_no += 1
            return f"L{self.load_no}"

        return Loader(cfg, "page_views", dialect=RedshiftDialect(IAM_ROLE), s3=self.s3,
                      connect=self.wh, clock=self.clock, load_id_factory=next_id)

    def ledger(self) -> dict[str, tuple]:
        return {k: (e.state, e.load_id) for k, e in self.wh.ledger.items()}

    def loads(self) -> list[tuple]:
        return [(p[0], p[3], p[5], p[6]) for p in self.wh.loads]

    def watermarks(self) -> dict[str, tuple]:
        return {shard: (s, int(sub)) for (_, shard, _), (s, sub, _) in self.wh.watermarks.items()}

    def load_transactions(self) -> list[list[str]]:
        return [tx for tx in self.wh.transactions() if any(s.startswith("LOCK") for s in tx)]

    def check_dedup_plan(self) -> None:
        """Every committed load: COPY through its manifest, then the dedup merge on event_id
        keeping the first by position, then the ledger UPDATE, in one BEGIN..COMMIT."""
        committed = [tx for tx in self.load_transactions() if tx[-1] == "COMMIT"]
        assert committed
        for tx in committed:
            flat = [" ".join(s.split()) for s in tx]
            order = [next(i for i, s in enumerate(flat) if re.match(p, s)) for p in (
                r"^LOCK page_views$",
                r"^COPY stage_\w+ \(event_id, .*\) FROM 's3://bucket-x/pfx/manifests/page_views/"
                r"L\d+\.manifest' IAM_ROLE '" + re.escape(IAM_ROLE) + r"' MANIFEST .*GZIP.*"
                r"STATUPDATE OFF COMPUPDATE OFF$",
                r"^DELETE FROM (stage_\w+) USING page_views WHERE \1\.event_id = "
                r"page_views\.event_id$",
                r"^INSERT INTO page_views \(.*\) SELECT .* ROW_NUMBER\(\) OVER \(PARTITION BY "
                r"event_id ORDER BY shard_id, LENGTH\(sequence_number\), sequence_number, "
                r"sub_sequence_number\) AS rn FROM stage_\w+\) ranked WHERE rn = 1$",
                r"^UPDATE staged_files SET state = %s",
                r"^INSERT INTO loads ",
            )]
            assert order == sorted(order), flat
            assert tx[0] == "BEGIN" and tx[-1] == "COMMIT"
        # Each manifest lists exactly the files that load marked loaded (with rows).
        manifests = {k: json.loads(b) for _, k, b in self.s3.puts
                     if k.endswith(".manifest")}
        for load_id, key in ((p[0], p[2]) for p in self.wh.loads):
            urls = {e["url"] for e in manifests[key]["entries"]}
            marked = {f"s3://{self.bucket}/{k}" for k, e in self.wh.ledger.items()
                      if e.load_id == load_id and e.row_count > 0}
            assert urls == marked

    def check_atomic(self) -> None:
        for tx in self.load_transactions():
            assert tx[0] == "BEGIN" and tx[-1] in ("COMMIT", "ROLLBACK")
            assert tx.count("BEGIN") == 1


