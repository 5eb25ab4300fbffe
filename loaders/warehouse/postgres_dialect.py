"""PostgreSQL (the local stand-in for Redshift): it cannot read S3, so the COPY step
streams each manifest object, gunzipped on the fly, into one ``COPY ... FROM STDIN``.

The next few GETs are started ahead in threads so S3 latency overlaps the COPY;
bodies are read and decompressed as streams, never whole files in memory.
"""
from __future__ import annotations

import re
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Sequence

from shardline import csvformat
from shardline.errors import LoadFailed
from shardline.records.ledger import StagedFile
from shardline.lifecycle import first_line
from shardline.loaders.warehouse.base import Dialect
from shardline.loaders.warehouse.plan import CopyManifest, Manifest, entry_at_line


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
        # Autovacuum never analyzes a temporary table: without statistics the planner takes
        # the freshly filled staging table for a few rows and may join it to the target row
        # by row (the dedup DELETE then grows with the table). Redshift's COPY into an empty
        # table updates its statistics itself (STATUPDATE).
        cur.execute(f"ANALYZE {step.stage_table}")


def _describe_pg_copy_error(exc: Any, entries: Sequence[StagedFile], manifest: Manifest) -> str:
    """PostgreSQL numbers CSV records across the whole stream ("line N"); map N to the
    file with the ledger's row counts."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    context = " ".join(line.strip() for line in text[1:])
    where = ""
    match = re.search(r"line (\d+)", context)
    hit = entry_at_line(entries, int(match.group(1))) if match else None
    if hit:
        where = f" (record {hit[1]} of {manifest.object_url(hit[0])})"
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
        self.inflight: deque[tuple[StagedFile, Future[Any]]] = deque()  # botocore's body
        self.body: Any = None
        self.entry: StagedFile | None = None
        self.inflater: Any = None
        self.in_member = False
        self.last_byte = b"\n"
        self.buffer = b""
        self.pos = 0
        self.error: LoadFailed | None = None

    def _where(self) -> str:
        """The URL of the staged file being read, for an error about it."""
        return self.manifest.object_url(self.entry) if self.entry else "the manifest"

    def _get(self, entry: StagedFile) -> Any:
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
                                    f"{first_line(exc)}")
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
                self.error = LoadFailed(f"{self._where()} is not valid gzip: {exc}")
                raise self.error from None
            except LoadFailed:
                raise
            except Exception as exc:
                self.error = LoadFailed(f"reading {self._where()}: {first_line(exc)}")
                raise self.error from None
            if out:
                self.last_byte = out[-1:]
                return out

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes (fewer at a chunk boundary); b"" only at the very end.
        ``copy_expert`` always passes a size."""
        if self.pos >= len(self.buffer):
            self.buffer, self.pos = self._chunk(), 0
            if not self.buffer:
                return b""
        out = self.buffer[self.pos:self.pos + size]
        self.pos += len(out)
        return out

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
