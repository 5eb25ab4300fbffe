"""KPL de-aggregation: one Kinesis record may carry many user records.

``aws_kinesis_agg`` unpacks the KPL protobuf; we number the user records
(sub-sequence 0..n-1), flag them AGGREGATED and mark the last one LAST_SUB, so a
checkpoint on a non-last sub-record resumes AT its sequence number and skips
what was already delivered. A plain record is sub 0 with LAST_SUB.
"""
from __future__ import annotations

import base64
from datetime import datetime
from typing import Any, Iterable, Iterator

from aws_kinesis_agg import MAGIC
from aws_kinesis_agg.deaggregator import iter_deaggregate_records

from shardline.codec import AGGREGATED, LAST_SUB, Record


def _arrival_ms(raw: dict[str, Any]) -> int:
    ts = raw.get("ApproximateArrivalTimestamp")
    if isinstance(ts, datetime):
        return int(ts.timestamp() * 1000)
    if isinstance(ts, (int, float)):
        return int(ts * 1000)
    return 0


def records_from(raw: dict[str, Any]) -> list[Record]:
    """The user records inside one boto3 GetRecords record, in order."""
    seq, arrival, data = raw["SequenceNumber"], _arrival_ms(raw), raw["Data"]
    if not data.startswith(MAGIC):  # fast path: not a KPL aggregate (the library agrees)
        return [Record(seq, 0, raw["PartitionKey"], bytes(data), arrival, LAST_SUB)]
    subs = list(iter_deaggregate_records([raw], data_format="Boto3"))
    if len(subs) == 1 and not subs[0]["kinesis"].get("aggregated"):
        return [Record(seq, 0, raw["PartitionKey"], bytes(raw["Data"]), arrival, LAST_SUB)]
    out = []
    for i, sub in enumerate(subs):
        k = sub["kinesis"]
        flags = AGGREGATED | (LAST_SUB if i == len(subs) - 1 else 0)
        out.append(Record(seq, int(k["subSequenceNumber"]), k["partitionKey"],
                          base64.b64decode(k["data"]), arrival, flags))
    return out


def user_records(raws: Iterable[dict[str, Any]],
                 skip_through: tuple[str, int] | None = None) -> Iterator[Record]:
    """De-aggregate; drop sub-records at or before ``skip_through`` = (sequence, sub) of
    the same sequence number (the checkpoint of a partly delivered aggregate)."""
    for raw in raws:
        for rec in records_from(raw):
            if (skip_through is not None and rec.sequence_number == skip_through[0]
                    and rec.sub_sequence_number <= skip_through[1]):
                continue
            yield rec
