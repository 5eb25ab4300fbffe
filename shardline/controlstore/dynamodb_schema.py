"""DynamoDB items and tables of the control store (``dynamodb.py``): conversions between
Python values and attribute values, and the CreateTable requests.

Times are integer microseconds since the epoch, so conditions compare numbers; floats go
in as exact decimals; every index projects everything (the items are small).
"""
from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Iterable, Mapping

EPOCH = datetime(1970, 1, 1)


def to_us(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(microseconds=1)


def at_us(us: int) -> datetime:
    """A time attribute every item of its table has."""
    return EPOCH + timedelta(microseconds=int(us))


def from_us(us: int | None) -> datetime | None:
    return None if us is None else at_us(us)


# A DynamoDB attribute value ({"S": "..."}, {"N": "1"}, {"M": {...}}): a JSON document.
AttributeValue = dict[str, Any]


def ser(value: object) -> AttributeValue:
    """A Python value as a DynamoDB attribute value (floats as exact decimals)."""
    from boto3.dynamodb.types import TypeSerializer

    if isinstance(value, float):
        value = Decimal(repr(value))
    elif isinstance(value, Mapping):
        return {"M": {k: ser(v) for k, v in value.items()}}
    out: AttributeValue = TypeSerializer().serialize(value)
    return out


def item(raw: Mapping[str, AttributeValue]) -> dict[str, Any]:
    from boto3.dynamodb.types import TypeDeserializer

    out: dict[str, Any] = {}
    for key, value in raw.items():
        plain = TypeDeserializer().deserialize(value)
        if isinstance(plain, Decimal):
            plain = int(plain) if plain == plain.to_integral_value() else float(plain)
        out[key] = plain
    return out


def vals(**values: object) -> dict[str, AttributeValue]:
    return {f":{k}": ser(v) for k, v in values.items()}


def names(*attributes: str) -> dict[str, str]:
    return {f"#{n}": n for n in attributes}


def dynamodb_table_spec(name: str, hash_key: tuple[str, str],
                        range_key: tuple[str, str] | None = None,
                        gsis: Iterable[tuple[str, tuple[str, str], tuple[str, str] | None]] = (),
                        ) -> dict[str, Any]:
    """A CreateTable request (PAY_PER_REQUEST, indexes project everything)."""
    attrs = {hash_key[0]: hash_key[1]}
    schema = [{"AttributeName": hash_key[0], "KeyType": "HASH"}]
    if range_key:
        attrs[range_key[0]] = range_key[1]
        schema.append({"AttributeName": range_key[0], "KeyType": "RANGE"})
    spec: dict[str, Any] = {"TableName": name, "KeySchema": schema,
                            "BillingMode": "PAY_PER_REQUEST"}

    def index(iname: str, h: tuple[str, str], r: tuple[str, str] | None) -> dict[str, Any]:
        attrs.update({h[0]: h[1], **({r[0]: r[1]} if r else {})})
        keys = [{"AttributeName": h[0], "KeyType": "HASH"}]
        keys += [{"AttributeName": r[0], "KeyType": "RANGE"}] if r else []
        return {"IndexName": iname, "KeySchema": keys, "Projection": {"ProjectionType": "ALL"}}

    if gsis:
        spec["GlobalSecondaryIndexes"] = [index(n, h, r) for n, h, r in gsis]
    spec["AttributeDefinitions"] = [{"AttributeName": k, "AttributeType": t}
                                    for k, t in attrs.items()]
    return spec


TABLES = ("leases", "checkpoints", "history", "status", "files", "hosts", "assignments")


def table_specs(t: dict[str, str]) -> list[dict[str, Any]]:
    """CreateTable requests of the store; ``t`` maps ``TABLES`` to full table names.

    History is keyed by ``<stream>/<shard>`` (one partition per shard, consistent reads for
    a shard's history, no LSI and so no 10 GB item-collection limit per key); the GSIs serve
    the stream-wide listing and the lookup by id, eventually consistent, for operators."""
    S, N = "S", "N"
    return [
        dynamodb_table_spec(t["leases"], ("stream", S), ("shard_id", S)),
        dynamodb_table_spec(t["checkpoints"], ("stream", S), ("shard_id", S)),
        dynamodb_table_spec(t["history"], ("shard_key", S), ("id", N),
                            gsis=[("by_stream", ("stream", S), ("id", N)),
                                  ("by_id", ("entry_id", N), None)]),
        dynamodb_table_spec(t["status"], ("stream", S), ("shard_id", S)),
        dynamodb_table_spec(t["files"], ("s3_key", S),
                            gsis=[("pending", ("pending_table", S), ("order_key", S)),
                                  ("quarantined", ("quarantined_table", S), ("order_key", S)),
                                  # the lake's pending files (lake.tables), sparse likewise
                                  ("lake_pending", ("lake_pending_table", S), ("order_key", S)),
                                  # every file by table and staging time: status's recent window
                                  ("staged", ("target_table", S), ("order_key", S))]),
        dynamodb_table_spec(t["hosts"], ("host_id", S)),
        dynamodb_table_spec(t["assignments"], ("stream", S), ("shard_id", S)),
    ]
