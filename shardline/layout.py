"""Where things live in S3: the key of every staged batch, dead-letter object and manifest.

The key layout is part of the contract (docs/architecture-contract.md)::

    {prefix}/staged/{table}/{stream}/{shard_id}/{first}_{last}[.{generation}].csv.gz
    {prefix}/dead-letter/{stream}/{shard_id}/{first}_{last}[.{generation}].jsonl.gz
    {prefix}/manifests/{table}/{load_id}.manifest
    {prefix}/archive/{stream}/{YYYY-MM-DD}/{HH}/{shard_id}/{first}_{last}.slb.gz
    {prefix}/reprocess/{stream}/{generation}.json
    {prefix}/redrive/{stream}/{generation}.json

``prefix`` is ``s3.prefix`` (empty: keys start at the kind); ``first``/``last`` are
``{sequence_number}-{sub_sequence_number}`` of the batch's first and last record.
Batch keys are deterministic, so a retried batch overwrites its own objects instead of
adding new ones; ``batch_name`` is also the batch's id (``codec.Batch.batch_id``, from
which the Gearman unique id is made). Every writer and reader builds keys here.

A reprocess run (``shardline reprocess``) stages under its ``generation`` (``.g...`` before
the extension), so a re-read batch with the same boundaries gets a ledger entry of its own
instead of overwriting an object the ledger already calls loaded. The raw archive is keyed
by the UTC hour of the batch's first arrival time (so ``--since``/``--until`` list only the
hours they need) and the batch name (a retry overwrites it with the same bytes).
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Protocol


# What a key is made of: a batch's stream, shard and bounds. ``codec.Batch`` is one; the
# layout stays below the codec (which names its batches with ``batch_name``).
class Bound(Protocol):
    """A record at either end of a batch."""

    @property
    def sequence_number(self) -> str: ...

    @property
    def sub_sequence_number(self) -> int: ...

    @property
    def arrival_ms(self) -> int: ...


class BatchBounds(Protocol):
    """What a batch key needs of a batch."""

    @property
    def stream(self) -> str: ...

    @property
    def shard_id(self) -> str: ...

    @property
    def first(self) -> Bound: ...

    @property
    def last(self) -> Bound: ...


STAGED = "staged"
DEAD_LETTER = "dead-letter"
MANIFESTS = "manifests"
ARCHIVE = "archive"
REPROCESS = "reprocess"
ARCHIVE_SUFFIX = ".slb.gz"


def _join(prefix: str, *parts: str) -> str:
    head = prefix.strip("/")
    return "/".join(((head,) if head else ()) + parts)


def batch_name(batch: BatchBounds) -> str:
    """``{shard_id}/{first}_{last}``: same records, same name."""
    first, last = batch.first, batch.last
    return (f"{batch.shard_id}/{first.sequence_number}-{first.sub_sequence_number}"
            f"_{last.sequence_number}-{last.sub_sequence_number}")


def _tagged(batch: BatchBounds, generation: str | None) -> str:
    return batch_name(batch) + (f".{generation}" if generation else "")


def staged_key(prefix: str, table: str, batch: BatchBounds, generation: str | None = None) -> str:
    """The gzip'd CSV of a batch's good rows (of a reprocess run's ``generation``)."""
    return _join(prefix, STAGED, table, batch.stream, _tagged(batch, generation) + ".csv.gz")


def dead_letter_key(prefix: str, batch: BatchBounds, generation: str | None = None) -> str:
    """The gzip'd JSON lines of a batch's dead letters."""
    return _join(prefix, DEAD_LETTER, batch.stream, _tagged(batch, generation) + ".jsonl.gz")


def archive_key(prefix: str, batch: BatchBounds) -> str:
    """The gzip'd batch payload (``codec.encode``: data, positions, arrival times) of a
    batch's source records, under the UTC hour its first record arrived."""
    hour = datetime.fromtimestamp(batch.first.arrival_ms / 1000, timezone.utc)
    return _join(prefix, ARCHIVE, batch.stream, f"{hour:%Y-%m-%d}", f"{hour:%H}",
                 batch_name(batch) + ARCHIVE_SUFFIX)


def archive_prefix(prefix: str, stream: str, hour: datetime | None = None) -> str:
    """What a stream's archive keys start with (of one UTC hour when given)."""
    if hour is None:
        return _join(prefix, ARCHIVE, stream, "")
    hour = hour.astimezone(timezone.utc)
    return _join(prefix, ARCHIVE, stream, f"{hour:%Y-%m-%d}", f"{hour:%H}", "")


def redrive_record_key(prefix: str, stream: str, generation: str = "") -> str:
    """What a redrive run landed and what it still rejects (``generation`` empty: the
    prefix of every record of the stream)."""
    return _join(prefix, "redrive", stream, f"{generation}.json" if generation else "")


def reprocess_record_key(prefix: str, stream: str, generation: str) -> str:
    """What a reprocess run did and why (its options, reason, counts)."""
    return _join(prefix, REPROCESS, stream, f"{generation}.json")


def dead_letter_prefix(prefix: str) -> str:
    """What every dead-letter key starts with (to list them)."""
    return _join(prefix, DEAD_LETTER, "")


def manifest_key(prefix: str, table: str, load_id: str) -> str:
    """The COPY manifest of one load."""
    return _join(prefix, MANIFESTS, table, f"{load_id}.manifest")
