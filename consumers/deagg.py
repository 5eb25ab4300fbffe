"""KPL de-aggregation: one Kinesis record may carry many user records.

We number the user records (sub-sequence 0..n-1), flag them AGGREGATED and mark the
last one LAST_SUB, so a checkpoint on a non-last sub-record resumes AT its sequence
number and skips what was already delivered. A plain record is sub 0 with LAST_SUB.

This is the hot path (every record read), so each value is converted once:
``ApproximateArrivalTimestamp`` arrives as epoch seconds (the consumer's client has
``raw_timestamps=True``) and becomes int milliseconds here; sub-record data comes
straight out of the protobuf as bytes.
"""
from __future__ import annotations

import hashlib
from datetime import datetime
from typing import TYPE_CHECKING, Iterable, Iterator

from aws_kinesis_agg import DIGEST_SIZE, MAGIC

from shardline.codec import AGGREGATED, LAST_SUB, Record
from shardline.kinesis import RawRecord

if TYPE_CHECKING:
    from aws_kinesis_agg.deaggregator import messages_pb2


def _arrival_ms(raw: RawRecord) -> int:
    ts = raw.get("ApproximateArrivalTimestamp")
    if isinstance(ts, (int, float)):
        return round(ts * 1000)  # Kinesis gives milliseconds: round, don't truncate 0.999...
    if isinstance(ts, datetime):  # a client without raw_timestamps
        return int(ts.timestamp() * 1000)
    return 0


def _aggregate(data: bytes) -> messages_pb2.AggregatedRecord | None:
    """The KPL message in ``data``, or None when it is not a valid KPL aggregate.

    We parse with aws_kinesis_agg's own protobuf message instead of calling its
    ``iter_deaggregate_records``: with ``data_format="Boto3"`` that one base64-encodes
    every sub-record's data (Lambda's format), which we would decode straight back,
    and builds a dict per sub-record. The checks are the library's, in its order, so
    the same records count as aggregates: the magic prefix, a body longer than the
    digest, the body's MD5 equal to the trailing digest (a record that merely starts
    with the magic bytes is plain data), and a body that parses.
    """
    if not data.startswith(MAGIC) or len(data) <= len(MAGIC) + DIGEST_SIZE:
        return None
    body, digest = data[len(MAGIC):-DIGEST_SIZE], data[-DIGEST_SIZE:]
    if hashlib.md5(body).digest() != digest:
        return None
    # Imported at the first aggregate: protobuf is about 2.5 MB of a consumer's memory, and a
    # stream that no KPL writes to never needs it.
    # Through the deaggregator module: its messages_pb2 does ``import config_pb2``, which
    # only resolves once that module has put the package's directory on sys.path.
    from aws_kinesis_agg.deaggregator import messages_pb2
    from google.protobuf.message import DecodeError

    message = messages_pb2.AggregatedRecord()
    try:
        message.ParseFromString(body)
    except DecodeError:
        return None
    return message


def records_from(raw: RawRecord) -> list[Record]:
    """The user records inside one boto3 GetRecords record, in order."""
    seq, arrival, data = raw["SequenceNumber"], _arrival_ms(raw), raw["Data"]
    message = _aggregate(data)
    if message is not None:
        keys, last = message.partition_key_table, len(message.records) - 1
        try:
            return [Record(seq, i, keys[sub.partition_key_index], sub.data, arrival,
                           AGGREGATED | (LAST_SUB if i == last else 0))
                    for i, sub in enumerate(message.records)]
        except IndexError:
            # A partition key index outside the table: the library prints an error and
            # drops the rest; we deliver the record whole, so the stage worker
            # dead-letters it with a reason instead of losing it.
            pass
    return [Record(seq, 0, raw["PartitionKey"], bytes(data), arrival, LAST_SUB)]


def user_records(raws: Iterable[RawRecord],
                 skip_through: tuple[str, int] | None = None) -> Iterator[Record]:
    """De-aggregate; drop sub-records at or before ``skip_through`` = (sequence, sub) of
    the same sequence number (the checkpoint of a partly delivered aggregate)."""
    for raw in raws:
        for rec in records_from(raw):
            if (skip_through is not None and rec.sequence_number == skip_through[0]
                    and rec.sub_sequence_number <= skip_through[1]):
                continue
            yield rec
