"""Combining small staged files into COPY parts of at least ``loader.combine_min_bytes``.

A stage worker writes one object per batch (tens of kB at a 1 s batch age), while Redshift
wants COPY to read files of 1 MB-1 GB compressed, a multiple of the slice count, so every
slice works and none spends its time opening tiny objects. Before a Redshift COPY the loader
therefore concatenates consecutive small objects (gzip members concatenate into a valid
multi-member gzip file) into parts under ``{prefix}/combined/{table}/{load_id}/NNNN.csv.gz``
and lists the parts in the manifest instead; files already large enough go in as they are.
The number of parts is at least the slice count when there is enough data. The staged
objects themselves are never changed, so a failed load retries from them.
"""
from __future__ import annotations

from typing import Any, Sequence

from shardline.errors import LoadFailed
from shardline.lifecycle import first_line
from shardline.records.ledger import StagedFile


def plan_parts(entries: Sequence[StagedFile], min_bytes: int,
               slices: int) -> list[list[StagedFile]]:
    """Groups of consecutive small files (in load order); a group of one is left as is."""
    small = [e for e in entries if e.row_count > 0 and e.byte_count < min_bytes]
    if min_bytes <= 0 or len(small) < 2:
        return []
    total = sum(e.byte_count for e in small)
    # at least min_bytes per part, and as many parts as slices when the data allows it
    target = max(min_bytes, total // max(1, slices))
    groups, cur, size = [], [], 0
    for e in small:
        cur.append(e)
        size += e.byte_count
        if size >= target:
            groups.append(cur)
            cur, size = [], 0
    if cur:
        if groups and size < min_bytes:
            groups[-1].extend(cur)  # a short tail joins the last part
        else:
            groups.append(cur)
    return [g for g in groups if len(g) > 1]


def write_parts(s3: Any, bucket: str, prefix: str, table: str, load_id: str,
                groups: Sequence[Sequence[StagedFile]]) -> list[tuple[str, int]]:
    """Concatenate each group's objects into one part; returns (key, size) per part."""
    parts = []
    base = f"{prefix.strip('/')}/combined/{table}/{load_id}".lstrip("/")
    for n, group in enumerate(groups):
        key = f"{base}/{n:04d}.csv.gz"
        try:
            body = b"".join(s3.get_object(Bucket=bucket, Key=e.s3_key)["Body"].read()
                            for e in group)
            s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="text/csv")
        except Exception as exc:  # botocore errors: the load cannot go on
            raise LoadFailed(f"cannot combine staged files into s3://{bucket}/{key}: "
                             f"{first_line(exc)}") from None
        parts.append((key, len(body)))
    return parts
