"""What each lake commit holds, and reading it back (exactly once across two stores).

A lake load writes, before its Iceberg commit, a small JSON object listing the staged
files it holds (``manifests/{table}/lake-....manifest`` under the S3 prefix), and commits
with snapshot summary properties naming the load and that object (``shardline.load-id``,
``shardline.manifest``). The ledger is told after the commit; a loader killed in between
is repaired by ``committed_loads`` + ``read_manifest``: the snapshots committed since the
oldest lake-pending file was staged name every file the table already holds. The summary
stays a few dozen bytes however many files a load holds (every metadata version of the
table carries every snapshot's summary).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Protocol

from pyiceberg.table import Table

from shardline.errors import LoadFailed
from shardline.lake.config import (CLOCK_SKEW_MS, FILES_PROPERTY, LOAD_ID_PROPERTY,
                                   MANIFEST_PROPERTY)
from shardline.lifecycle import first_line
from shardline.records.ledger import StagedFile



class ObjectStore(Protocol):
    """The S3 client calls used here (boto3's)."""

    def put_object(self, *, Bucket: str, Key: str, Body: bytes,
                   ContentType: str) -> object: ...

    def get_object(self, *, Bucket: str, Key: str) -> dict[str, "Readable"]: ...


class Readable(Protocol):
    def read(self) -> bytes: ...


@dataclass(frozen=True)
class Committed:
    """One lake load found in the table's snapshots (a reprocess load's delete and append
    are two snapshots of one commit: both ids)."""

    load_id: str
    manifest: str
    snapshot_ids: tuple[int, ...] = field(default=())


def summary(load_id: str, manifest: str, files: int) -> dict[str, str]:
    return {LOAD_ID_PROPERTY: load_id, MANIFEST_PROPERTY: manifest, FILES_PROPERTY: str(files)}


def write_manifest(s3: ObjectStore, bucket: str, key: str, load_id: str, table: str,
                   entries: Iterable[StagedFile]) -> None:
    body = json.dumps({"load_id": load_id, "table": table,
                       "files": [e.s3_key for e in entries]}).encode()
    try:
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
    except Exception as exc:  # botocore's errors: the load cannot go on
        raise LoadFailed(f"cannot write the lake manifest s3://{bucket}/{key}: "
                         f"{first_line(exc)}") from None


def read_manifest(s3: ObjectStore, bucket: str, key: str) -> list[str]:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    files = json.loads(body)["files"]
    return [str(f) for f in files]


def committed_loads(table: Table, since: datetime | None,
                    skip: frozenset[int] | set[int] = frozenset()) -> list[Committed]:
    """The lake loads among the table's snapshots from ``since`` (naive UTC; None: all),
    oldest first, leaving out the snapshot ids in ``skip`` (already reconciled)."""
    since_ms = None if since is None else \
        int((since - datetime(1970, 1, 1)).total_seconds() * 1000) - CLOCK_SKEW_MS
    found: dict[str, Committed] = {}
    for snap in sorted(table.snapshots(), key=lambda s: s.timestamp_ms):
        if snap.snapshot_id in skip or (since_ms is not None and snap.timestamp_ms < since_ms):
            continue
        props = snap.summary
        load_id = props[LOAD_ID_PROPERTY] if props is not None else None
        manifest = props[MANIFEST_PROPERTY] if props is not None else None
        if not load_id or not manifest:
            continue  # not a load's commit: compaction, expiry, someone else's write
        before = found.get(load_id)
        ids = (before.snapshot_ids if before else ()) + (snap.snapshot_id,)
        found[load_id] = Committed(str(load_id), str(manifest), ids)
    return list(found.values())


def load_snapshot_ids(table: Table, load_id: str) -> set[int]:
    return {s.snapshot_id for s in table.snapshots()
            if s.summary is not None and s.summary[LOAD_ID_PROPERTY] == load_id}
