"""Where things live in S3: the key of every staged batch, dead-letter object and manifest.

The key layout is part of the contract (docs/architecture-contract.md)::

    {prefix}/staged/{table}/{stream}/{shard_id}/{first}_{last}.csv.gz
    {prefix}/dead-letter/{stream}/{shard_id}/{first}_{last}.jsonl.gz
    {prefix}/manifests/{table}/{load_id}.manifest

``prefix`` is ``s3.prefix`` (empty: keys start at the kind); ``first``/``last`` are
``{sequence_number}-{sub_sequence_number}`` of the batch's first and last record.
Batch keys are deterministic, so a retried batch overwrites its own objects instead of
adding new ones; ``batch_name`` is also the batch's id (``codec.Batch.batch_id``, from
which the Gearman unique id is made). Every writer and reader builds keys here.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # codec imports this module
    from shardline.codec import Batch

STAGED = "staged"
DEAD_LETTER = "dead-letter"
MANIFESTS = "manifests"


def _join(prefix: str, *parts: str) -> str:
    head = prefix.strip("/")
    return "/".join(((head,) if head else ()) + parts)


def batch_name(batch: "Batch") -> str:
    """``{shard_id}/{first}_{last}``: same records, same name."""
    f, l = batch.first, batch.last
    return (f"{batch.shard_id}/{f.sequence_number}-{f.sub_sequence_number}"
            f"_{l.sequence_number}-{l.sub_sequence_number}")


def staged_key(prefix: str, table: str, batch: "Batch") -> str:
    """The gzip'd CSV of a batch's good rows."""
    return _join(prefix, STAGED, table, batch.stream, batch_name(batch) + ".csv.gz")


def dead_letter_key(prefix: str, batch: "Batch") -> str:
    """The gzip'd JSON lines of a batch's dead letters."""
    return _join(prefix, DEAD_LETTER, batch.stream, batch_name(batch) + ".jsonl.gz")


def dead_letter_prefix(prefix: str) -> str:
    """What every dead-letter key starts with (to list them)."""
    return _join(prefix, DEAD_LETTER, "")


def manifest_key(prefix: str, table: str, load_id: str) -> str:
    """The COPY manifest of one load."""
    return _join(prefix, MANIFESTS, table, f"{load_id}.manifest")
