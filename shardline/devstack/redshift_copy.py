"""Redshift's ``COPY ... FROM 's3://...' IAM_ROLE ... MANIFEST`` on PostgreSQL, in the relay.

PostgreSQL cannot read S3, and the way a Redshift COPY fails is what the loader must cope
with: the error names no file ("Load into table 'x' failed. Check 'stl_load_errors' system
table for details."), and the details sit in ``STL_LOAD_ERRORS``, whose ``filename`` is
CHAR(256) (a long URL is cut) and holds the URL COPY read (a combined part, never the files
inside it), with the line number in that object. The redshift-like relay (relay.py) hands
each such query of a session to ``RedshiftCopy.run``, which, on the same session (the
staging table is a temporary table of its transaction):

1. reads the manifest and its objects from S3 (moto), gunzipping multi-member gzip;
2. applies the checks Redshift's COPY makes and PostgreSQL's does not: CHAR(n) takes only
   single-byte characters (error 1220), an input row is at most 4 MB;
3. streams the rows into ``COPY <table> (<columns>) FROM STDIN`` and, when PostgreSQL or a
   check refuses a row, records it in the session schema's ``stl_load_errors`` (from a
   connection of its own: the row survives the load's rollback, as Redshift's system table
   does) and answers with Redshift's error text, the transaction aborted.

The loader's own SQL reaches PostgreSQL unchanged but for this query, and for a write to a
fence table, which first takes the table's write lock as Redshift does (``write``).
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import queue
import re
import struct
from datetime import datetime, timezone
from typing import Callable

COPY_QUERY = re.compile(
    r"^\s*COPY\s+(?P<table>[\w\".]+)\s*\((?P<columns>[^)]*)\)\s+FROM\s+'(?P<url>(?:[^']|'')*)'"
    r"\s+IAM_ROLE\s+'(?:[^']|'')*'\s+(?P<options>.*?)\s*;?\s*$", re.I | re.S)
# The loader's fence tables: their writes take Redshift's table write lock here (below)
FENCE_WRITE = re.compile(r"^\s*(?:UPDATE|INSERT\s+INTO|DELETE\s+FROM)\s+(load_fence\w*)\b",
                         re.I)
FILENAME_CHARS = 256  # STL_LOAD_ERRORS.filename is CHAR(256)
MAX_ROW_BYTES = 4 * 1024 * 1024  # "one input row may be at most 4 MB"
CHUNK = 64 * 1024  # bytes per CopyData message
STL_LOAD_ERRORS_DDL = (
    "CREATE TABLE IF NOT EXISTS {schema}.stl_load_errors (userid INTEGER, slice INTEGER, "
    "tbl INTEGER, starttime TIMESTAMP, session INTEGER, query INTEGER, filename CHAR(256), "
    "line_number BIGINT, colname CHAR(127), type CHAR(10), col_length CHAR(10), "
    "position INTEGER, raw_line CHAR(1024), raw_field_value CHAR(1024), err_code INTEGER, "
    "err_reason CHAR(100), is_partial INTEGER, start_offset BIGINT)")


def is_copy_from_s3(text: bytes) -> bool:
    """A simple-query text the relay hands to ``RedshiftCopy`` (cheap check first)."""
    head = text[:64].lstrip().upper()
    return head.startswith(b"COPY ") and b" IAM_ROLE " in text.upper() \
        and COPY_QUERY.match(text.rstrip(b"\0").decode("utf-8", "replace")) is not None


def fence_write(text: bytes) -> str | None:
    """The fence table a simple-query text writes, if it is one (``RedshiftCopy.write``)."""
    match = FENCE_WRITE.match(text[:200].decode("utf-8", "replace"))
    return match.group(1) if match else None


def message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def error_response(text: str, code: str = "XX000") -> bytes:
    fields = b"".join(k + v.encode() + b"\0" for k, v in (
        (b"S", "ERROR"), (b"V", "ERROR"), (b"C", code), (b"M", text)))
    return message(b"E", fields + b"\0")


def error_fields(body: bytes) -> dict[str, str]:
    out = {}
    for part in body.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return out


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class Refusal(Exception):
    """A row Redshift's COPY refuses: what goes into ``stl_load_errors``."""

    def __init__(self, code: int, reason: str, line: int = 0, column: str = "",
                 kind: str = "", value: str = "", raw: str = ""):
        super().__init__(reason)
        self.code, self.reason, self.line, self.column = code, reason, line, column
        self.kind, self.value, self.raw = kind, value, raw


class RedshiftCopy:
    """One relayed session's Redshift COPYs. ``send_server``/``send_client`` write bytes;
    ``replies`` receives what the server sends while a COPY is being run here; ``startup``
    the session's startup parameters (user, database) for the side connection."""

    def __init__(self, s3_endpoint_url: str, upstream: tuple[str, int],
                 send_server: Callable[[bytes], None], send_client: Callable[[bytes], None],
                 replies: "queue.Queue[bytes]", startup: dict[str, str]):
        self.s3_endpoint_url, self.upstream = s3_endpoint_url, upstream
        self.send_server, self.send_client, self.replies = send_server, send_client, replies
        self.startup = startup
        self._buf = b""

    # -- talking to the server on the session --------------------------------------------
    def _next(self) -> tuple[bytes, bytes]:
        while True:
            if len(self._buf) >= 5:
                size = 1 + int.from_bytes(self._buf[1:5], "big")
                if len(self._buf) >= size:
                    msg, self._buf = self._buf[:size], self._buf[size:]
                    return msg[:1], msg[5:]
            chunk = self.replies.get(timeout=600)
            if not chunk:
                raise ConnectionError("the server closed the session")
            self._buf += chunk

    def _until_ready(self) -> list[tuple[bytes, bytes]]:
        out = []
        while True:
            kind, body = self._next()
            out.append((kind, body))
            if kind == b"Z":
                return out

    def _query(self, sql: str) -> list[tuple[bytes, bytes]]:
        self.send_server(message(b"Q", sql.encode() + b"\0"))
        return self._until_ready()

    @staticmethod
    def _rows(replies: list[tuple[bytes, bytes]]) -> list[list[str | None]]:
        rows: list[list[str | None]] = []
        for kind, body in replies:
            if kind != b"D":
                continue
            row: list[str | None] = []
            n, pos = struct.unpack("!h", body[:2])[0], 2
            for _ in range(n):
                size = struct.unpack("!i", body[pos:pos + 4])[0]
                pos += 4
                if size < 0:
                    row.append(None)
                else:
                    row.append(body[pos:pos + size].decode())
                    pos += size
            rows.append(row)
        return rows

    def _forward(self, replies: list[tuple[bytes, bytes]]) -> None:
        self.send_client(b"".join(message(k, b) for k, b in replies))

    def _fail(self, text: str) -> None:
        """Abort the session's transaction with Redshift's error ``text`` and answer it."""
        replies = self._query("DO $$BEGIN RAISE EXCEPTION USING ERRCODE = 'XX000', MESSAGE = "
                              f"{literal(text).replace('$', '')}; END$$")
        self._forward(replies)

    # -- Redshift's write locks ------------------------------------------------------------
    def write(self, table: str, msg: bytes) -> None:
        """Redshift's write locks are per table and held to commit ("COPY and INSERT
        operations against the same table are held in a wait state until the lock is
        released"); PostgreSQL locks rows. Take the table's lock first (conflicting with
        itself, not with readers), then run the statement. Only the loader's fence tables
        get this here, which is what shows two loads queueing on one fence."""
        replies = self._query(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE")
        if any(k == b"E" for k, _ in replies):
            self._forward(replies)  # the transaction is aborted: the statement would fail too
            return
        self.send_server(msg)
        self._forward(self._until_ready())

    # -- the COPY ------------------------------------------------------------------------
    def run(self, text: str) -> None:
        """Run one COPY query and answer the client (CommandComplete or ErrorResponse)."""
        match = COPY_QUERY.match(text)
        assert match is not None
        table, columns = match["table"], match["columns"]
        url, options = match["url"].replace("''", "'"), match["options"].upper()
        info = self._query("SELECT pg_backend_pid(), current_schema(), a.attname, "
                           "format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                           f"WHERE a.attrelid = {literal(table)}::regclass AND a.attnum > 0 "
                           "AND NOT a.attisdropped")
        if any(k == b"E" for k, _ in info):
            self._forward(info)  # no such table, or the transaction is aborted already
            return
        rows = self._rows(info)
        session, schema = int(rows[0][0] or 0), rows[0][1] or "public"
        types = {name: kind or "" for _, _, name, kind in rows if name is not None}
        started = datetime.now(timezone.utc).replace(tzinfo=None)
        try:
            objects = self._read(url, "MANIFEST" in options.split(), "GZIP" in options.split())
        except Exception as exc:  # S3 or gzip errors: Redshift names them, and the object
            self._fail(str(exc))
            return
        try:
            _check(objects, [c.strip() for c in columns.split(",")], types)
        except Refusal as exc:
            self._record(schema, session, started, objects, exc)
            self._fail(_stl_message(table))
            return
        self.send_server(message(b"Q", (
            f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv, DELIMITER ',', "
            "QUOTE '\"', NULL '\\N', ENCODING 'UTF8')").encode() + b"\0"))
        replies = []
        while True:  # CopyInResponse, or an error at once (then ReadyForQuery)
            kind, body = self._next()
            replies.append((kind, body))
            if kind in (b"G", b"Z"):
                break
        if kind == b"Z":
            self._forward(replies)
            return
        for _, data in objects:
            for start in range(0, len(data), CHUNK):
                self.send_server(message(b"d", data[start:start + CHUNK]))
        self.send_server(message(b"c", b""))
        replies = self._until_ready()
        error = next((b for k, b in replies if k == b"E"), None)
        if error is None:
            self._forward(replies)
            return
        fields = error_fields(error)
        refusal = _pg_refusal(fields)
        self._record(schema, session, started, objects, refusal)
        self._forward([(k, b) if k != b"E" else (b"E", error_response(_stl_message(table))[5:])
                       for k, b in replies])

    def _read(self, url: str, manifest: bool, gzipped: bool) -> list[tuple[str, bytes]]:
        from shardline.devstack.aws import boto_client

        s3 = boto_client("s3", self.s3_endpoint_url)

        def get(u: str) -> bytes:
            bucket, _, key = u.removeprefix("s3://").partition("/")
            try:
                body: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                return body
            except Exception as exc:
                raise RuntimeError(f"S3ServiceException:{type(exc).__name__} reading {u}: "
                                   f"{str(exc)[:200]}") from None

        urls = [e["url"] for e in json.loads(get(url))["entries"]] if manifest else [url]
        out = []
        for u in urls:
            body = get(u)
            if gzipped:
                try:
                    body = gzip.decompress(body)
                except (OSError, EOFError) as exc:
                    raise RuntimeError(f"gzip: {u}: {exc}") from None
            if body and not body.endswith(b"\n"):
                body += b"\n"  # each object's last record ends its line
            out.append((u, body))
        return out

    def _record(self, schema: str, session: int, started: datetime,
                objects: list[tuple[str, bytes]], refusal: Refusal) -> None:
        """The refused row into ``<schema>.stl_load_errors``, committed at once."""
        import psycopg2

        filename, line = _locate(objects, refusal.line)
        conn = psycopg2.connect(host=self.upstream[0], port=self.upstream[1],
                                dbname=self.startup.get("database") or self.startup.get("user"),
                                user=self.startup.get("user"), connect_timeout=5)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                quoted = '"' + schema.replace('"', '""') + '"'
                cur.execute(STL_LOAD_ERRORS_DDL.format(schema=quoted))
                cur.execute(
                    f"INSERT INTO {quoted}.stl_load_errors (userid, slice, tbl, starttime, "
                    "session, query, filename, line_number, colname, type, position, raw_line, "
                    "raw_field_value, err_code, err_reason, is_partial, start_offset) "
                    f"SELECT 100, 0, 0, %s, %s, COALESCE(MAX(query), 0) + 1, %s, %s, %s, %s, 0, "
                    f"%s, %s, %s, %s, 0, 0 FROM {quoted}.stl_load_errors",
                    (started, session, filename[:FILENAME_CHARS], line, refusal.column[:127],
                     refusal.kind[:10], refusal.raw[:1024], refusal.value[:1024], refusal.code,
                     refusal.reason[:100]))
        finally:
            conn.close()


def _stl_message(table: str) -> str:
    return (f"Load into table '{table.strip(chr(34))}' failed.  Check 'stl_load_errors' "
            "system table for details.")


def _locate(objects: list[tuple[str, bytes]], line: int) -> tuple[str, int]:
    """Stream line ``line`` (1-based) -> (the object's URL, its line in that object)."""
    seen = 0
    for url, data in objects:
        n = data.count(b"\n")
        if line <= seen + n:
            return url, line - seen
        seen += n
    return (objects[-1][0] if objects else ""), max(0, line - seen)


def _pg_refusal(fields: dict[str, str]) -> Refusal:
    """PostgreSQL's COPY error -> an stl_load_errors row (its CONTEXT names the line)."""
    where = fields.get("W", "")
    line = re.search(r"line (\d+)", where)
    column = re.search(r"column (\w+)", where)
    value = re.search(r': "(.*)"\s*$', where)
    return Refusal(1200 if fields.get("C", "").startswith("22") else 9999,
                   fields.get("M", "error"), int(line.group(1)) if line else 0,
                   column.group(1) if column else "", "", value.group(1) if value else "")


def _check(objects: list[tuple[str, bytes]], names: list[str], types: dict[str, str]) -> None:
    """Redshift's own refusals, before PostgreSQL sees the rows."""
    chars = {i for i, n in enumerate(names) if types.get(n, "").startswith("character(")}
    seen = 0
    for _, data in objects:
        lines = data.split(b"\n")[:-1]
        for n, raw in enumerate(lines, start=seen + 1):
            if len(raw) + 1 > MAX_ROW_BYTES:
                raise Refusal(1224, "Row is larger than the 4 MB limit", n,
                              raw=raw[:1024].decode("utf-8", "replace"))
            if chars and not raw.isascii():
                for i, value in enumerate(next(csv.reader(io.StringIO(raw.decode())))):
                    if i in chars and not value.isascii():
                        raise Refusal(1220, "Multibyte character not supported for CHAR "
                                            "(Hint: try using VARCHAR). Invalid char: "
                                            f"{value.encode()[:4].hex()}", n, names[i],
                                      "char", value, raw.decode()[:1024])
        seen += len(lines)
