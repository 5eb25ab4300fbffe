"""Test kit for the loader: page-view rows, staged files, and a recording fake warehouse.

- ``page_view(...)``: a row in ``PAGE_VIEWS`` column order.
- ``stage_file(...)``: gzip'd CSV (``csvformat.format_row``) to S3 and its ledger entry
  (``shardline.records.ledger.StagedFile``) in a control store, without the stage worker.
- ``FakeWarehouse``: a psycopg2-like connection that records every statement (with
  ``BEGIN``/``COMMIT``/``ROLLBACK`` as psycopg2 issues them) and keeps the load record
  (``loaded_files``, ``loads``, ``load_fence``) with transaction semantics. Used to assert
  the Redshift plan as SQL text (there is no Redshift here).
The S3 double is ``tests.fakes.FakeS3``.
"""
from __future__ import annotations

import gzip
import json
import re
from datetime import datetime, timedelta
from typing import Any, Iterable, Sequence

import psycopg2

from tests.fakes import FakeS3

from shardline import csvformat
from shardline.settings import Settings
from shardline.tables import PAGE_VIEWS
from shardline.controlstore import MemoryStore
from shardline.records.ledger import StagedFile, epoch_hour, format_hour_counts
from shardline.loaders.loader import Loader
from shardline.positions import position
from shardline.loaders.warehouse.plan import LOADED_FILES_COLUMNS
from shardline.loaders.warehouse.redshift_dialect import RedshiftDialect

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


def ledger_row(key: str, rows: Sequence[Sequence[Any]], *, shard: str = SHARD0,
               stream: str = STREAM, staged_at: datetime = T0, byte_count: int = 100,
               table: str = "page_views", first: tuple | None = None,
               last: tuple | None = None, **extra: Any) -> StagedFile:
    """The ledger row the stage worker would write for ``rows`` (born ``loaded`` if empty)."""
    names = PAGE_VIEWS.column_names
    si, ssi = names.index("sequence_number"), names.index("sub_sequence_number")
    ordered = sorted(rows, key=_pos)
    first = first or ((ordered[0][si], ordered[0][ssi]) if rows else (seq(0), 0))
    last = last or ((ordered[-1][si], ordered[-1][ssi]) if rows else first)
    ai = names.index("arrival_time")
    hours: dict[int, int] | None = {}
    for r in rows:
        try:
            arrived = r[ai] if isinstance(r[ai], datetime) else datetime.fromisoformat(str(r[ai]))
        except ValueError:  # a row the warehouse is meant to refuse: counts unknown
            hours = None
            break
        hours[epoch_hour(arrived)] = hours.get(epoch_hour(arrived), 0) + 1
    extra.setdefault("hour_counts", format_hour_counts(hours) if hours is not None else None)
    return StagedFile(s3_key=key, target_table=table, stream=stream, shard_id=shard,
                      first_sequence=first[0], first_sub_sequence=int(first[1]),
                      last_sequence=last[0], last_sub_sequence=int(last[1]),
                      row_count=len(rows), byte_count=byte_count, staged_at=staged_at,
                      **extra)


def stage_file(s3: Any, bucket: str, store: Any, key: str, rows: Sequence[Sequence[Any]], *,
               shard: str = SHARD0, stream: str = STREAM, staged_at: datetime = T0,
               first: tuple | None = None, last: tuple | None = None,
               **extra: Any) -> StagedFile:
    """Write the staged object (unless the batch has no rows) and its ledger entry;
    ``extra``: more ledger fields (generation, transform_version, arrival_*_ms)."""
    body = csv_gz(rows) if rows else b""
    if rows:
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    entry = ledger_row(key, rows, shard=shard, stream=stream, staged_at=staged_at,
                       byte_count=len(body), first=first, last=last, **extra)
    if store is not None:
        assert store.record_file(entry)
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
        self.conn._state()["staged"] = data.count(b"\n")  # test rows hold no newline

    def fetchone(self) -> tuple | None:
        return self._rows.pop(0) if self._rows else None

    def fetchall(self) -> list[tuple]:
        rows, self._rows = self._rows, []
        return rows


class FakeWarehouse:
    """Recording psycopg2 stand-in keeping the load record with transaction semantics.

    ``statements``: (sql, params) in order, with "BEGIN", "COMMIT", "ROLLBACK" as
    psycopg2 would send them (implicit BEGIN before the first statement).
    ``fail_on``: {regex: exception} raised when a statement matches.
    ``rows_of``: s3 key -> rows in that file (the COPY's row count comes from the manifest).
    ``inserted``: what ``INSERT INTO <target>`` reports as its row count.
    """

    def __init__(self, *, s3: Any = None, rows_of: Any = None, inserted: int | None = None):
        self.s3 = s3
        self.rows_of = rows_of or (lambda key: 0)
        self.loaded: dict[str, dict] = {}  # loaded_files by s3_key
        self.loads: list[tuple] = []
        self.fence: dict[str, int] = {}
        self.statements: list[tuple[str, Any]] = []
        self.copied: list[bytes] = []
        self.fail_on: dict[str, BaseException] = {}
        self.load_errors: list[tuple] = []
        # s3 key -> its STL_LOAD_ERRORS row: a COPY whose manifest lists it fails as Redshift's
        self.bad_keys: dict[str, tuple] = {}
        # s3 keys whose rows the target refuses at the merge's INSERT (a CHECK, say)
        self.poison_keys: set[str] = set()
        self.copied_keys: set[str] = set()  # the staging table's files
        self.copies = 76
        self.inserted = inserted
        self.closed = 0
        self.staged = 0  # rows in the session's staging table
        self.autocommit = False
        self._tx: dict | None = None

    # connection API
    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def commit(self) -> None:
        if self._tx is not None:
            self.statements.append(("COMMIT", None))
            self.loaded, self.loads, self.fence = (self._tx["loaded"], self._tx["loads"],
                                                   self._tx["fence"])
            self.staged = self._tx["staged"]  # a temporary table outlives its transaction
            self._tx = None

    def rollback(self) -> None:
        if self._tx is not None:
            self.statements.append(("ROLLBACK", None))
            self._tx = None

    def close(self) -> None:
        self.closed = 1
        self.staged = 0  # the session's temporary tables go with it

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
            self._tx = {"loaded": dict(self.loaded), "loads": list(self.loads),
                        "fence": dict(self.fence), "staged": self.staged}

    def _state(self) -> dict:
        return self._tx or {"loaded": self.loaded, "loads": self.loads, "fence": self.fence,
                            "staged": self.staged}

    def _answer(self, sql: str, params: Any) -> tuple[list[tuple], int | None]:
        for pattern, exc in self.fail_on.items():
            if re.search(pattern, sql):
                raise exc
        st = self._state()
        flat = " ".join(sql.split())
        if flat.startswith("INSERT INTO load_fence"):
            table = params[0]
            if table in st["fence"]:
                return [], 0
            st["fence"][table] = 0
            return [], 1
        if flat.startswith("UPDATE load_fence"):
            token, _, _, table, _ = params
            if table in st["fence"] and st["fence"][table] <= token:
                st["fence"][table] = token
                return [], 1
            return [], 0
        if flat.startswith("SELECT s3_key, load_id FROM loaded_files"):
            table, since, *keys = params
            return [(k, st["loaded"][k]["load_id"]) for k in keys if k in st["loaded"]
                    and st["loaded"][k]["target_table"] == table
                    and st["loaded"][k]["loaded_at"] >= since], None
        if flat.startswith("COPY "):
            url = re.search(r"FROM 's3://[^/]+/([^']+)'", flat).group(1)
            manifest = json.loads(self.s3.objects[url]) if self.s3 else {"entries": []}
            keys = [e["url"].split("/", 3)[3] for e in manifest["entries"]]
            self.copied_keys = set(keys)
            if any(k in self.bad_keys for k in keys):
                self.copies += 1  # each COPY is a query of its own in STL_LOAD_ERRORS
                self.load_errors = [(self.copies, *self.bad_keys[k][1:]) for k in keys
                                    if k in self.bad_keys]
                raise psycopg2.InternalError(
                    "Load into table 'stage' failed.  Check 'stl_load_errors' system table for "
                    "details.")
            st["staged"] = sum(gzip.decompress(self.s3.objects[k]).count(b"\n")
                               if k in self.s3.objects else self.rows_of(k) for k in keys)
            return [], 0
        if flat.startswith("SELECT COUNT(*) FROM stage_"):
            return [(st["staged"],)], None
        if flat.startswith("SELECT MIN(occurred_at), MAX(occurred_at) FROM stage_"):
            return [(T0, T0)], None
        if flat.startswith("INSERT INTO page_views") and self.copied_keys & self.poison_keys:
            raise psycopg2.errors.CheckViolation(
                'new row for relation "page_views" violates check constraint "no_poison"')
        if flat.startswith("INSERT INTO page_views") or flat.startswith("INSERT INTO "
                                                                         "position_table"):
            return [], self.inserted if self.inserted is not None else st["staged"]
        if flat.startswith("INSERT INTO loaded_files"):
            n = len(LOADED_FILES_COLUMNS)
            for i in range(0, len(params), n):
                row = dict(zip(LOADED_FILES_COLUMNS, params[i:i + n], strict=True))
                st["loaded"][row["s3_key"]] = row
            return [], len(params) // n
        if flat.startswith("INSERT INTO loads"):
            st["loads"].append(params)
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

    def __init__(self, env: dict, pg_conn: Any, pg_schema: str, s3: Any, prefix: str,
                 store: Any, target: str = "postgres", isolation: str = "read committed"):
        super().__init__()
        from shardline import migrate

        self.env, self.schema, self.s3, self.prefix = env, pg_schema, s3, prefix.strip("/")
        self.isolation = isolation  # the warehouse sessions' default (SHOW transaction_isolation)
        # redshift-like: the loader runs the Redshift dialect; the stand-in's relay answers
        # its COPY from S3 the way Redshift does (shardline/devstack/redshift_copy.py)
        self.dialect = {"warehouse.dialect": "redshift", "warehouse.iam_role": IAM_ROLE} \
            if target == "redshift-like" else {}
        self.target = target
        self.bucket = env["SHARDLINE_S3_BUCKET"]
        self.store = store
        self.conn = pg_conn
        self.conn.autocommit = True
        with self.conn.cursor() as cur:
            cur.execute(f'SET search_path TO "{pg_schema}"')
        migrate.migrate(self.conn, target)
        self.conn.autocommit = True

    def settings(self, **overrides: str) -> Settings:
        return Settings().replace(**{
            "warehouse.dsn": self.env["SHARDLINE_WAREHOUSE_DSN"],
            "warehouse.schema": self.schema,
            "control.dsn": self.env["SHARDLINE_CONTROL_DSN"],
            "control.schema": self.schema,
            "s3.endpoint_url": self.env.get("SHARDLINE_S3_ENDPOINT_URL", ""),
            "s3.bucket": self.bucket, "s3.prefix": self.prefix,
            **self.dialect, **LOADER_DEFAULTS, **overrides})

    def stage(self, name: str, rows: list, *, shard: str = SHARD0, staged_at=None, **kw: Any):
        return stage_file(self.s3, self.bucket, self.store, self.key(name, shard), rows,
                          shard=shard, staged_at=staged_at or self.next_time(), **kw)

    def stage_bad(self, name: str, rows: list, **kw: Any):
        """Stage rows the warehouse will refuse (PostgreSQL refuses them for real)."""
        return self.stage(name, rows, **kw)

    def loader(self, store: Any = None, table: str = "page_views", **overrides: str) -> Loader:
        return Loader(self.settings(**overrides), table, s3=self.s3,
                      store=store or self.store)

    def query(self, sql: str, params: Any = None) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def execute(self, sql: str, params: Any = None) -> None:
        """Another session's statement, committed at once (a retention DELETE, say)."""
        with self.conn.cursor() as cur:
            cur.execute(sql, params)

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
        with self.store.tx() as cur:
            cur.execute("SELECT s3_key, state, load_id FROM staged_files")
            return {k: (s, load_id) for k, s, load_id in cur.fetchall()}

    def loads(self) -> list[tuple]:
        return self.query("SELECT load_id, file_count, rows_copied, rows_inserted FROM loads "
                          "ORDER BY started_at, load_id")

    def record(self) -> dict[str, str]:
        """The warehouse's loaded_files: s3_key -> load_id (a key twice is a failure)."""
        rows = self.query("SELECT s3_key, load_id FROM loaded_files")
        assert len(rows) == len({k for k, _ in rows}), f"a file recorded twice: {rows}"
        return dict(rows)

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
        self.clock = Clock(T0 + timedelta(hours=1))
        self.store = MemoryStore(self.clock)
        self.wh = FakeWarehouse(s3=self.s3, rows_of=lambda key: self.store.get_file(key).row_count)
        self.load_no = 0

    def stage(self, name: str, rows: list, *, shard: str = SHARD0, staged_at=None, **kw: Any):
        return stage_file(self.s3, self.bucket, self.store, self.key(name, shard), rows,
                          shard=shard, staged_at=staged_at or self.next_time(), **kw)

    def stage_bad(self, name: str, rows: list, **kw: Any):
        """Stage rows Redshift would refuse: the fake COPY fails the way Redshift does and
        STL_LOAD_ERRORS holds the reason."""
        entry = self.stage(name, rows, **kw)
        self.wh.bad_keys[entry.s3_key] = (77, f"s3://{self.bucket}/{entry.s3_key}", 1,
                                          "occurred_at", "timestamp", "not a time", 1206,
                                          "Invalid timestamp format or value")
        return entry

    def loader(self, store: Any = None, table: str = "page_views", **overrides: str) -> Loader:
        cfg = settings(**{"warehouse.dialect": "redshift", "warehouse.iam_role": IAM_ROLE,
                          "loader.combine_min_bytes": "0",  # combining: test_redshift_sql
                          **LOADER_DEFAULTS, **overrides})

        def next_id(now):
            self.load_no += 1
            return f"L{self.load_no}"

        return Loader(cfg, table, dialect=RedshiftDialect(IAM_ROLE), s3=self.s3,
                      connect=self.wh, clock=self.clock, load_id_factory=next_id,
                      store=store or self.store)

    def ledger(self) -> dict[str, tuple]:
        return {k: (e.state, e.load_id) for k, e in self.store._files.items()}

    def loads(self) -> list[tuple]:
        return [(p[0], p[3], p[5], p[6]) for p in self.wh.loads]

    def record(self) -> dict[str, str]:
        return {k: r["load_id"] for k, r in self.wh.loaded.items()}

    def load_transactions(self) -> list[list[str]]:
        return [tx for tx in self.wh.transactions()
                if any(s.startswith("UPDATE load_fence") for s in tx)]

    def check_dedup_plan(self) -> None:
        """Every committed load: the already-loaded guard and COPY through its manifest in a
        transaction of their own, then the fence, the guard again, the dedup merge on event_id
        bounded by occurred_at, keeping the first by position, then the record, in one short
        BEGIN..COMMIT; never a LOCK."""
        txs = self.wh.transactions()
        committed = [(txs[n - 1], tx) for n, tx in enumerate(txs) if tx[-1] == "COMMIT"
                     and any(s.startswith("UPDATE load_fence") for s in tx)]
        assert committed
        for copy_tx, tx in committed:
            assert copy_tx[-1] == "COMMIT" and not any(
                s.startswith(("UPDATE load_fence", "INSERT", "DELETE")) for s in copy_tx)
            assert not any(s.startswith(("COPY", "CREATE")) for s in tx)
            flat = [" ".join(s.split()) for s in copy_tx[:-1] + tx[1:]]
            assert not any(s.startswith("LOCK") for s in flat), flat
            order = [next(i for i, s in enumerate(flat) if re.match(p, s)) for p in (
                r"^SELECT s3_key, load_id FROM loaded_files WHERE target_table = %s AND "
                r"loaded_at >= %s AND s3_key IN ",
                r"^COPY stage_\w+ \(event_id, .*\) FROM 's3://bucket-x/pfx/manifests/page_views/"
                r"L\d+\.manifest' IAM_ROLE '" + re.escape(IAM_ROLE) + r"' MANIFEST .*GZIP.*"
                r"STATUPDATE OFF COMPUPDATE OFF$",
                r"^SELECT MIN\(occurred_at\), MAX\(occurred_at\) FROM stage_\w+$",
                r"^UPDATE load_fence_page_views SET lease_token = %s",
                r"^DELETE FROM (stage_\w+) USING page_views WHERE \1\.event_id = "
                r"page_views\.event_id AND page_views\.occurred_at BETWEEN %s AND %s$",
                r"^INSERT INTO page_views \(.*, loaded_at, transform_version\) SELECT .*, %s, %s "
        r"FROM \(SELECT .* "
                r"ROW_NUMBER\(\) OVER \(PARTITION BY "
                r"event_id ORDER BY shard_id, LENGTH\(sequence_number\), sequence_number, "
                r"sub_sequence_number\) AS rn FROM stage_\w+\) ranked WHERE rn = 1$",
                r"^INSERT INTO loaded_files ",
                r"^INSERT INTO loads ",
            )]
            assert order == sorted(order), flat
            assert tx[0] == "BEGIN" and tx[-1] == "COMMIT"
        # Each manifest lists exactly the files that load recorded (with rows).
        manifests = {k: json.loads(b) for _, k, b in self.s3.puts
                     if k.endswith(".manifest")}
        for load_id, key in ((p[0], p[2]) for p in self.wh.loads):
            urls = {e["url"] for e in manifests[key]["entries"]}
            marked = {f"s3://{self.bucket}/{k}" for k, r in self.wh.loaded.items()
                      if r["load_id"] == load_id and r["row_count"] > 0}
            assert urls == marked

    def check_atomic(self) -> None:
        for tx in self.load_transactions():
            assert tx[0] == "BEGIN" and tx[-1] in ("COMMIT", "ROLLBACK")
            assert tx.count("BEGIN") == 1
