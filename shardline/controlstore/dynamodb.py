"""The control store on DynamoDB, the convention of Kinesis consumers (the KCL keeps its
leases there too). moto's DynamoDB serves it locally, on the moto server of the devstack.

Every fenced decision is a DynamoDB condition: the lease's owner, token and expiry are the
``ConditionExpression`` of the renew, and a checkpoint is one ``TransactWriteItems`` (renew
the lease, add the history item, move the checkpoint) that lands whole or not at all. The
ledger insert is a put conditional on the key not existing. Pending and quarantined files
are found through sparse GSIs keyed by table and ordered by ``<staged µs>#<key>`` (GSIs are
eventually consistent: a file just recorded may show up in ``pending_files`` a moment later,
which only delays its load; the flips themselves are conditional on the item); a third GSI,
``staged``, orders every file by table and staged time for ``staged_totals``. History is
keyed by ``<stream>/<shard>`` and id, ids from an atomic counter item. Times are integer
microseconds since the epoch so conditions compare numbers (``dynamodb_schema.py``).
Tables: ``create_tables()`` (PAY_PER_REQUEST), called by ``shardline migrate --control``.
"""
from __future__ import annotations

import contextlib
import time
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator, Mapping

from shardline.errors import ServiceUnavailable, ShardlineError, ThrottledError
from shardline.kinesis import error_code, is_connection_error
from shardline.records.ledger import LEDGER_COLUMNS

from .base import (
    LOADED, PENDING, QUARANTINED, STATUS_FIELDS, Checkpoint, ControlStore, HistoryEntry, Host,
    Lease, PendingStats, Quarantined, ShardStatus, StagedFile, check_status_fields, lease_held,
    lease_lost, replay_entry_checkpoint, replay_refused,
)  # fmt: skip
from .base import INTERNAL_STREAM_PREFIX, StagedTotals, StatusValue  # status's views
from .base import LegacyCheckpoint, SchemaState
from .dynamodb_schema import (
    TABLES, at_us as _at, from_us as _dt, item as _item, names as _names, ser as _ser, table_specs,
    to_us as _us, vals as _vals,
)  # fmt: skip

_COUNTER = {"shard_key": {"S": "#counter"}, "id": {"N": "0"}}  # no stream, no entry_id: no GSI
_THROTTLED = {"ProvisionedThroughputExceededException", "ThrottlingException",
              "RequestLimitExceeded", "TransactionConflictException"}
_INDEX_BACKFILL_WAIT_S = 3600.0  # migrate waits this long for an added index to fill
# A ``StagedFile``'s fields as attributes: as they are, but times as integer µs under a
# name of their own (``staged_at`` -> ``staged_us``), so conditions and indexes compare numbers.
_FILE_TIMES = {c.name: c.name.removesuffix("_at") + "_us"
               for c in LEDGER_COLUMNS if c.sql == "TIMESTAMP"}
_FILE_FIELDS = tuple(c.name for c in LEDGER_COLUMNS if c.name not in _FILE_TIMES)


class DynamoStore(ControlStore):
    TABLES = TABLES

    def __init__(self, client: object, table_prefix: str = "shardline_",
                 clock: Callable[[], float] = time.time):
        super().__init__(clock)
        # a botocore DynamoDB client (``dynamodb_client``): untyped, boto3-stubs is not a
        # dependency; its answers are JSON documents
        self.client: Any = client
        self.table_prefix = table_prefix
        self.t = {name: f"{table_prefix}{name}" for name in self.TABLES}

    # -- plumbing ---------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Transient AWS trouble -> ``ServiceUnavailable``/``ThrottledError``; the rest raises."""
        try:
            yield
        except ShardlineError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified below, re-raised if unknown
            code = error_code(exc)
            if is_connection_error(exc) or (code or "").startswith("HTTP5") or \
                    code in ("InternalServerError", "ServiceUnavailable"):
                raise ServiceUnavailable(f"control store (DynamoDB) {what}: "
                                         f"{code or type(exc).__name__}") from None
            if code in _THROTTLED:
                raise ThrottledError(f"control store (DynamoDB) {what}: {code}") from None
            raise

    def _query(self, **kw: Any) -> Iterator[dict[str, Any]]:
        while True:
            with self._errors(f"query {kw['TableName']}"):
                page = self.client.query(**kw)
            yield from (_item(i) for i in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return
            kw["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def _get(self, table: str, **key: Any) -> dict[str, Any] | None:
        with self._errors(f"get {table}"):
            found = self.client.get_item(TableName=self.t[table], ConsistentRead=True,
                                         Key={k: _ser(v) for k, v in key.items()})
        return _item(found["Item"]) if "Item" in found else None

    def create_tables(self) -> list[str]:
        from shardline.aws_access import aws_errors

        specs = table_specs(self.t)
        created = []
        # a role without the table actions (`shardline migrate` run as a component's role)
        # is one line naming the action, never a traceback
        with (aws_errors("dynamodb:{operation}", f"tables {self.table_prefix}*", "DynamoDB",
                         self.client.meta.endpoint_url, "control.dynamodb_endpoint_url"),
              self._errors("create tables")):
            existing = set(self.client.get_paginator("list_tables").paginate()
                           .build_full_result().get("TableNames", []))
            for spec in specs:
                if spec["TableName"] not in existing:
                    self.client.create_table(**spec)
                    created.append(spec["TableName"])
            for name in created:
                self.client.get_waiter("table_exists").wait(TableName=name)
            for spec in specs:
                if spec["TableName"] in existing:
                    created += self._add_indexes(spec)
        return created

    def _add_indexes(self, spec: dict[str, Any]) -> list[str]:
        """GSIs a newer version added to a table that exists already (UpdateTable creates
        one index per call); waits until each is ACTIVE (DynamoDB backfills it first).
        Returns ``table.index`` names."""
        name = spec["TableName"]
        have = {g["IndexName"] for g in self.client.describe_table(TableName=name)["Table"]
                .get("GlobalSecondaryIndexes", [])}
        added = []
        for gsi in spec.get("GlobalSecondaryIndexes", []):
            if gsi["IndexName"] in have:
                continue
            self.client.update_table(TableName=name,
                                     AttributeDefinitions=spec["AttributeDefinitions"],
                                     GlobalSecondaryIndexUpdates=[{"Create": gsi}])
            deadline = time.monotonic() + _INDEX_BACKFILL_WAIT_S
            while self._index_status(name, gsi["IndexName"]) != "ACTIVE":
                if time.monotonic() > deadline:
                    raise ServiceUnavailable(
                        f"control store (DynamoDB): index {gsi['IndexName']} of {name} is "
                        f"still being built; run `shardline migrate --control` again later")
                time.sleep(1)
            added.append(f"{name}.{gsi['IndexName']}")
        return added

    def schema_state(self) -> SchemaState:
        """DescribeTable on each table (the IAM action a runtime role is granted on its own
        tables, unlike ListTables): a missing table or index is missing; DynamoDB records
        no versions, so nothing is ever unknown."""
        from botocore.exceptions import ClientError

        from shardline.aws_access import aws_errors

        missing: list[str] = []
        absent = 0
        for spec in table_specs(self.t):
            name = spec["TableName"]
            with aws_errors("dynamodb:DescribeTable", f"table {name!r}", "DynamoDB",
                            self.client.meta.endpoint_url, "control.dynamodb_endpoint_url"):
                try:
                    table = self.client.describe_table(TableName=name)["Table"]
                except ClientError as exc:
                    if error_code(exc) != "ResourceNotFoundException":
                        raise
                    missing.append(f"table {name}")
                    absent += 1
                    continue
            have = {g["IndexName"] for g in table.get("GlobalSecondaryIndexes", [])}
            missing += [f"index {name}.{g['IndexName']}"
                        for g in spec.get("GlobalSecondaryIndexes", [])
                        if g["IndexName"] not in have]
        return SchemaState(fresh=absent == len(self.t), missing=tuple(missing))

    def describe(self) -> str:
        return f"DynamoDB tables {self.table_prefix}*, region {self.client.meta.region_name}"

    def _index_status(self, table: str, index: str) -> str | None:
        for g in self.client.describe_table(TableName=table)["Table"].get(
                "GlobalSecondaryIndexes", []):
            if g["IndexName"] == index:
                status: str | None = g.get("IndexStatus")
                return status
        return None

    # -- leases -----------------------------------------------------------------
    @staticmethod
    def _lease(item: dict[str, Any]) -> Lease:
        return Lease(item["stream"], item["shard_id"], item.get("owner"), int(item["token"]),
                     _dt(item.get("renewed_us")), _dt(item.get("expires_us")))

    def acquire_lease(self, stream: str, shard_id: str, owner: str, ttl_s: float) -> int:
        for _ in range(10):  # a lost race re-reads; ten in a row is contention, not a race
            now, expires = self.expiry(ttl_s)
            found = self._get("leases", stream=stream, shard_id=shard_id)
            lease = self._lease(found) if found else None
            if lease is not None and lease.live(now) and lease.owner != owner:
                raise lease_held(lease, now)
            token = (lease.token if lease else 0) + 1
            item = {"stream": stream, "shard_id": shard_id, "owner": owner, "token": token,
                    "acquired_us": _us(now), "renewed_us": _us(now), "expires_us": _us(expires)}
            if lease is None:
                cond, values = "attribute_not_exists(shard_id)", {}
            else:
                cond, values = "#token = :old", _vals(old=lease.token)
            try:
                with self._errors("acquire lease"):
                    self.client.put_item(TableName=self.t["leases"], Item=_ser(item)["M"],
                                         ConditionExpression=cond,
                                         **({"ExpressionAttributeNames": _names("token"),
                                             "ExpressionAttributeValues": values}
                                            if values else {}))
                return token
            except Exception as exc:  # noqa: BLE001
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
        raise ServiceUnavailable(f"control store (DynamoDB): lease on shard {shard_id} of "
                                 f"stream {stream} keeps changing under us; try again")

    def _renew_op(self, stream: str, shard_id: str, owner: str, token: int,
                  ttl_s: float) -> dict[str, Any]:
        now, expires = self.expiry(ttl_s)
        return {"TableName": self.t["leases"],
                "Key": {"stream": _ser(stream), "shard_id": _ser(shard_id)},
                "UpdateExpression": "SET renewed_us = :now, expires_us = :exp",
                "ConditionExpression": "#owner = :owner AND #token = :token AND expires_us > :now",
                "ExpressionAttributeNames": _names("owner", "token"),
                "ExpressionAttributeValues": _vals(now=_us(now), exp=_us(expires), owner=owner,
                                                   token=token)}

    def renew_lease(self, stream: str, shard_id: str, owner: str, token: int,
                    ttl_s: float) -> None:
        try:
            with self._errors("renew lease"):
                self.client.update_item(**self._renew_op(stream, shard_id, owner, token, ttl_s))
        except Exception as exc:  # noqa: BLE001
            if error_code(exc) == "ConditionalCheckFailedException":
                raise lease_lost(stream, shard_id, token) from None
            raise

    def release_lease(self, stream: str, shard_id: str, owner: str, token: int) -> None:
        try:
            with self._errors("release lease"):
                self.client.update_item(
                    TableName=self.t["leases"],
                    Key={"stream": _ser(stream), "shard_id": _ser(shard_id)},
                    UpdateExpression="REMOVE #owner SET expires_us = :now",
                    ConditionExpression="#owner = :owner AND #token = :token",
                    ExpressionAttributeNames=_names("owner", "token"),
                    ExpressionAttributeValues=_vals(now=_us(self.now()), owner=owner,
                                                    token=token))
        except Exception as exc:  # noqa: BLE001
            if error_code(exc) != "ConditionalCheckFailedException":
                raise

    def get_lease(self, stream: str, shard_id: str) -> Lease | None:
        found = self._get("leases", stream=stream, shard_id=shard_id)
        return self._lease(found) if found else None

    def leases(self, stream: str) -> list[Lease]:
        return [self._lease(i) for i in self._query(
            TableName=self.t["leases"], ConsistentRead=True,
            KeyConditionExpression="#stream = :s", ExpressionAttributeNames=_names("stream"),
            ExpressionAttributeValues=_vals(s=stream))]

    # -- checkpoints ------------------------------------------------------------
    @staticmethod
    def _checkpoint(i: dict[str, Any]) -> Checkpoint:
        return Checkpoint(i["sequence_number"], int(i["sub_sequence_number"]),
                          bool(i["closes_sequence"]), _dt(i["updated_us"]))

    def get_checkpoint(self, stream: str, shard_id: str) -> Checkpoint | None:
        found = self._get("checkpoints", stream=stream, shard_id=shard_id)
        return self._checkpoint(found) if found else None

    def checkpoints(self, stream: str) -> dict[str, Checkpoint]:
        return {i["shard_id"]: self._checkpoint(i) for i in self._query(
            TableName=self.t["checkpoints"], ConsistentRead=True,
            KeyConditionExpression="#stream = :s", ExpressionAttributeNames=_names("stream"),
            ExpressionAttributeValues=_vals(s=stream))}

    def _next_id(self) -> int:
        with self._errors("history counter"):
            out = self.client.update_item(
                TableName=self.t["history"], Key=_COUNTER, UpdateExpression="ADD next_id :one",
                ExpressionAttributeValues=_vals(one=1), ReturnValues="UPDATED_NEW")
        return int(out["Attributes"]["next_id"]["N"])

    def _write_ops(self, stream: str, shard_id: str, cp: Checkpoint | None, source: str,
                   reason: str | None, token: int | None) -> tuple[int, list[dict[str, Any]]]:
        entry_id, now, shown = self._next_id(), _us(self.now()), replay_entry_checkpoint(cp)
        entry = {"stream": stream, "id": entry_id, "entry_id": entry_id, "shard_id": shard_id,
                 "shard_key": f"{stream}/{shard_id}",
                 "sequence_number": shown.sequence_number,
                 "sub_sequence_number": shown.sub_sequence_number,
                 "closes_sequence": shown.closes_sequence, "source": source, "reason": reason,
                 "lease_token": token, "created_us": now}
        ops = [{"Put": {"TableName": self.t["history"], "Item": _ser(entry)["M"]}}]
        key = {"stream": _ser(stream), "shard_id": _ser(shard_id)}
        if cp is None:
            ops.append({"Delete": {"TableName": self.t["checkpoints"], "Key": key}})
        else:
            ops.append({"Update": {
                "TableName": self.t["checkpoints"], "Key": key,
                "UpdateExpression": "SET sequence_number = :seq, sub_sequence_number = :sub, "
                                    "closes_sequence = :closes, lease_token = :token, "
                                    "history_id = :id, updated_us = :now",
                "ConditionExpression": "attribute_not_exists(history_id) OR history_id < :id",
                "ExpressionAttributeValues": _vals(
                    seq=cp.sequence_number, sub=cp.sub_sequence_number,
                    closes=cp.closes_sequence, token=token or 0, id=entry_id, now=now)}})
        return entry_id, ops

    def _transact(self, ops: list[dict[str, Any]], what: str) -> bool:
        """True if it landed; False if a condition failed (nothing was written)."""
        try:
            with self._errors(what):
                self.client.transact_write_items(TransactItems=ops)
            return True
        except Exception as exc:  # noqa: BLE001
            if error_code(exc) != "TransactionCanceledException":
                raise
            reasons = [r.get("Code") for r in
                       getattr(exc, "response", {}).get("CancellationReasons", [])]
            if reasons and "ConditionalCheckFailed" not in reasons:
                raise ThrottledError(f"control store (DynamoDB) {what}: cancelled "
                                     f"({', '.join(str(r) for r in reasons)})") from None
            return False

    def checkpoint(self, stream: str, shard_id: str, owner: str, token: int, ttl_s: float,
                   cp: Checkpoint, source: str = "consumer") -> int:
        entry_id, ops = self._write_ops(stream, shard_id, cp, source, None, token)
        renew = {"Update": self._renew_op(stream, shard_id, owner, token, ttl_s)}
        if not self._transact([renew, *ops], "checkpoint"):
            raise lease_lost(stream, shard_id, token)
        return entry_id

    def move_checkpoint(self, stream: str, shard_id: str, cp: Checkpoint | None,
                        reason: str) -> int:
        lease = self.get_lease(stream, shard_id)
        if lease is not None and lease.live(self.now()):
            raise replay_refused(lease)
        entry_id, ops = self._write_ops(stream, shard_id, cp, "replay", reason, None)
        free = {"ConditionCheck": {
            "TableName": self.t["leases"],
            "Key": {"stream": _ser(stream), "shard_id": _ser(shard_id)},
            "ConditionExpression": "attribute_not_exists(shard_id) OR "
                                   "attribute_not_exists(#owner) OR expires_us <= :now",
            "ExpressionAttributeNames": _names("owner"),
            "ExpressionAttributeValues": _vals(now=_us(self.now()))}}
        if not self._transact([free, *ops], "replay"):
            lease = self.get_lease(stream, shard_id)
            if lease is not None and lease.live(self.now()):
                raise replay_refused(lease)
            raise ServiceUnavailable(f"control store (DynamoDB): replay of shard {shard_id} "
                                     f"raced another checkpoint write; try again")
        return entry_id

    @staticmethod
    def _entry(i: dict[str, Any]) -> HistoryEntry:
        return HistoryEntry(int(i["id"]), i["stream"], i["shard_id"], i["sequence_number"],
                            int(i["sub_sequence_number"]), bool(i["closes_sequence"]),
                            i["source"], i.get("reason"), i.get("lease_token"),
                            _at(i["created_us"]))

    def history(self, stream: str, shard_id: str | None = None,
                limit: int = 50) -> list[HistoryEntry]:
        kw: dict[str, Any] = {"TableName": self.t["history"], "ScanIndexForward": False,
                              "Limit": limit}
        if shard_id is None:
            kw.update(IndexName="by_stream", KeyConditionExpression="#stream = :s",
                      ExpressionAttributeNames=_names("stream"),
                      ExpressionAttributeValues=_vals(s=stream))
        else:
            kw.update(ConsistentRead=True, KeyConditionExpression="shard_key = :k",
                      ExpressionAttributeValues=_vals(k=f"{stream}/{shard_id}"))
        out = []
        for item in self._query(**kw):
            out.append(self._entry(item))
            if len(out) >= limit:
                break
        return out

    def history_entry(self, entry_id: int) -> HistoryEntry | None:
        found = list(self._query(TableName=self.t["history"], IndexName="by_id",
                                 KeyConditionExpression="entry_id = :i",
                                 ExpressionAttributeValues=_vals(i=entry_id)))
        return self._entry(found[0]) if found else None

    # -- status -----------------------------------------------------------------
    def report_status(self, stream: str, shard_id: str, **values: StatusValue) -> None:
        check_status_fields(values)
        values = {**values, "updated_us": _us(self.now())}
        with self._errors("report status"):
            self.client.update_item(
                TableName=self.t["status"], Key={"stream": _ser(stream),
                                                 "shard_id": _ser(shard_id)},
                UpdateExpression="SET " + ", ".join(f"#{k} = :{k}" for k in values),
                ExpressionAttributeNames=_names(*values),
                ExpressionAttributeValues=_vals(**values))

    def statuses(self, stream: str) -> list[ShardStatus]:
        return [ShardStatus(i["stream"], i["shard_id"], _at(i["updated_us"]),
                            **{k: i.get(k) for k in STATUS_FIELDS})
                for i in self._query(TableName=self.t["status"], ConsistentRead=True,
                                     KeyConditionExpression="#stream = :s",
                                     ExpressionAttributeNames=_names("stream"),
                                     ExpressionAttributeValues=_vals(s=stream))]

    # -- the staged-file ledger -------------------------------------------------
    @staticmethod
    def _file(i: dict[str, Any]) -> StagedFile:
        fields: dict[str, Any] = {k: i.get(k) for k in _FILE_FIELDS}
        fields.update((k, _dt(i.get(us))) for k, us in _FILE_TIMES.items())
        return StagedFile(**fields)

    def record_file(self, entry: StagedFile) -> bool:
        entry.check()
        item: dict[str, Any] = {k: getattr(entry, k) for k in _FILE_FIELDS}
        for k, us in _FILE_TIMES.items():
            when = getattr(entry, k)
            if when is not None:
                item[us] = _us(when)
        item["order_key"] = f"{item['staged_us']:020d}#{entry.s3_key}"
        if entry.state == PENDING:
            item["pending_table"] = entry.target_table
        if entry.lake_state == PENDING:  # the lake's sparse index, like the warehouse's
            item["lake_pending_table"] = entry.target_table
        try:
            with self._errors("record file"):
                self.client.put_item(TableName=self.t["files"],
                                     Item={k: _ser(v) for k, v in item.items() if v is not None},
                                     ConditionExpression="attribute_not_exists(s3_key)")
            return True
        except Exception as exc:  # noqa: BLE001
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise

    def get_file(self, s3_key: str) -> StagedFile | None:
        found = self._get("files", s3_key=s3_key)
        return self._file(found) if found else None

    def _by_index(self, index: str, target_table: str, limit: int | None = None,
                  **kw: Any) -> Iterator[dict[str, Any]]:
        key = f"{index}_table"  # pending, lake_pending, quarantined
        yield from self._query(TableName=self.t["files"], IndexName=index,
                               KeyConditionExpression=f"{key} = :t",
                               ExpressionAttributeValues=_vals(t=target_table),
                               **({"Limit": limit} if limit else {}), **kw)

    def pending_files(self, target_table: str, limit: int) -> list[StagedFile]:
        out = []
        for item in self._by_index("pending", target_table, limit):
            out.append(self._file(item))
            if len(out) >= limit:
                break
        return out

    def pending_stats(self, target_table: str) -> PendingStats:
        files, size, rows, oldest = 0, 0, 0, None
        for item in self._by_index("pending", target_table,
                                   ProjectionExpression="byte_count, staged_us, row_count"):
            files, size = files + 1, size + int(item["byte_count"])
            rows += int(item.get("row_count") or 0)
            oldest = oldest if oldest is not None else _dt(item["staged_us"])
        return PendingStats(files, size, oldest, rows)

    def lake_pending_files(self, target_table: str, limit: int) -> list[StagedFile]:
        out = []
        for item in self._by_index("lake_pending", target_table, limit):
            out.append(self._file(item))
            if len(out) >= limit:
                break
        return out

    def lake_pending_stats(self, target_table: str) -> PendingStats:
        files, size, rows, oldest = 0, 0, 0, None
        for item in self._by_index("lake_pending", target_table,
                                   ProjectionExpression="byte_count, staged_us, row_count"):
            files, size = files + 1, size + int(item["byte_count"])
            rows += int(item.get("row_count") or 0)
            oldest = oldest if oldest is not None else _dt(item["staged_us"])
        return PendingStats(files, size, oldest, rows)

    def mark_lake_loaded(self, target_table: str, s3_keys: Iterable[str], load_id: str) -> int:
        now, flipped = _us(self.now()), 0
        for key in sorted(set(s3_keys)):
            try:
                with self._errors("mark lake loaded"):
                    self.client.update_item(
                        TableName=self.t["files"], Key={"s3_key": _ser(key)},
                        UpdateExpression="SET lake_state = :loaded, lake_load_id = :load, "
                                         "lake_loaded_us = :now REMOVE lake_pending_table",
                        ConditionExpression="lake_state = :pending AND target_table = :t",
                        ExpressionAttributeValues=_vals(loaded=LOADED, load=load_id, now=now,
                                                        pending=PENDING, t=target_table))
                flipped += 1
            except Exception as exc:  # noqa: BLE001
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
        return flipped

    def _flip(self, s3_key: str, update: str, what: str, **values: Any) -> bool:
        try:
            with self._errors(what):
                self.client.update_item(
                    TableName=self.t["files"], Key={"s3_key": _ser(s3_key)},
                    UpdateExpression=update,
                    ConditionExpression="#state = :pending" + (
                        " AND target_table = :t" if "t" in values else ""),
                    ExpressionAttributeNames=_names("state"),
                    ExpressionAttributeValues=_vals(pending=PENDING, **values))
            return True
        except Exception as exc:  # noqa: BLE001
            if error_code(exc) == "ConditionalCheckFailedException":
                return False
            raise

    def mark_loaded(self, target_table: str, s3_keys: Iterable[str], load_id: str) -> int:
        now = _us(self.now())
        return sum(self._flip(key, "SET #state = :loaded, load_id = :load, loaded_us = :now "
                                   "REMOVE pending_table", "mark loaded",
                              loaded=LOADED, load=load_id, now=now, t=target_table)
                   for key in sorted(set(s3_keys)))

    def quarantine(self, s3_key: str, error: str) -> bool:
        return self._flip(s3_key, "SET #state = :q, quarantine_error = :error, "
                                  "quarantined_us = :now, quarantined_table = target_table "
                                  "REMOVE pending_table", "quarantine",
                          q=QUARANTINED, error=error, now=_us(self.now()))

    def quarantined(self, target_table: str) -> list[Quarantined]:
        return [Quarantined(self._file(i), i["quarantine_error"], _at(i["quarantined_us"]))
                for i in self._by_index("quarantined", target_table)]

    # -- the fleet --------------------------------------------------------------
    def heartbeat(self, host_id: str, ttl_s: float,
                  info: Mapping[str, str] | None = None) -> None:
        now, expires = self.expiry(ttl_s)
        item = {"host_id": host_id, "info": dict(info or {}), "renewed_us": _us(now),
                "expires_us": _us(expires)}
        with self._errors("heartbeat"):
            self.client.put_item(TableName=self.t["hosts"], Item=_ser(item)["M"])

    def _scan(self, table: str, **kw: Any) -> list[dict[str, Any]]:
        """Every item of a small table (hosts, leases, assignments: an item per host or
        shard), following pages."""
        kw = {"TableName": self.t[table], "ConsistentRead": True, **kw}
        items = []
        while True:
            with self._errors(f"scan {table}"):
                page = self.client.scan(**kw)
            items += [_item(i) for i in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return items
            kw["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    @staticmethod
    def _hosts(items: list[dict[str, Any]]) -> list[Host]:
        return [Host(h["host_id"], _at(h["renewed_us"]), _at(h["expires_us"]),
                     dict(h.get("info") or {}))
                for h in sorted(items, key=lambda h: h["host_id"])]

    def live_hosts(self) -> list[Host]:
        return self._hosts(self._scan("hosts", FilterExpression="expires_us > :now",
                                      ExpressionAttributeValues=_vals(now=_us(self.now()))))

    def remove_host(self, host_id: str) -> None:
        with self._errors("remove host"):
            self.client.delete_item(TableName=self.t["hosts"], Key={"host_id": _ser(host_id)})

    def assign(self, stream: str, shard_id: str, host_id: str | None) -> None:
        key = {"stream": _ser(stream), "shard_id": _ser(shard_id)}
        with self._errors("assign"):
            if host_id is None:
                self.client.delete_item(TableName=self.t["assignments"], Key=key)
            else:
                self.client.put_item(TableName=self.t["assignments"], Item={
                    **key, "host_id": _ser(host_id), "updated_us": _ser(_us(self.now()))})

    def assignment(self, stream: str, shard_id: str) -> str | None:
        found = self._get("assignments", stream=stream, shard_id=shard_id)
        return found["host_id"] if found else None

    def assignments(self, stream: str) -> dict[str, str]:
        return {i["shard_id"]: i["host_id"] for i in self._query(
            TableName=self.t["assignments"], ConsistentRead=True,
            KeyConditionExpression="#stream = :s", ExpressionAttributeNames=_names("stream"),
            ExpressionAttributeValues=_vals(s=stream))}

    # -- status's view of the fleet and the ledger --------------------------------
    def hosts(self) -> list[Host]:
        return self._hosts(self._scan("hosts"))

    def streams(self) -> list[str]:
        # A Scan, but of tables holding an item per shard: cheap whatever the traffic.
        names = {i["stream"] for table in ("leases", "assignments")
                 for i in self._scan(table, ProjectionExpression="#stream",
                                     ExpressionAttributeNames=_names("stream"))}
        return sorted(n for n in names if not n.startswith(INTERNAL_STREAM_PREFIX))

    def staged_totals(self, target_table: str, since: datetime) -> dict[str, StagedTotals]:
        out: dict[str, list[int]] = {}
        for i in self._query(TableName=self.t["files"], IndexName="staged",
                             KeyConditionExpression="target_table = :t AND order_key >= :since",
                             ExpressionAttributeValues=_vals(t=target_table,
                                                             since=f"{_us(since):020d}"),
                             ProjectionExpression="#stream, row_count, dead_letter_count",
                             ExpressionAttributeNames=_names("stream")):
            agg = out.setdefault(i["stream"], [0, 0, 0])
            agg[0] += 1
            agg[1] += int(i.get("row_count") or 0)
            agg[2] += int(i.get("dead_letter_count") or 0)
        return {s: StagedTotals(*agg) for s, agg in sorted(out.items())}
    def staged_files_since(self, target_table: str, since: datetime) -> list[StagedFile]:
        # the "staged" index projects every attribute, ordered by staged time
        return [self._file(i) for i in self._query(
            TableName=self.t["files"], IndexName="staged",
            KeyConditionExpression="target_table = :t AND order_key >= :since",
            ExpressionAttributeValues=_vals(t=target_table, since=f"{_us(since):020d}"))]

    # -- COPY failures -----------------------------------------------------------
    def count_copy_failure(self, s3_key: str, error: str) -> int:
        try:
            with self._errors("count copy failure"):
                out = self.client.update_item(
                    TableName=self.t["files"], Key={"s3_key": _ser(s3_key)},
                    UpdateExpression="ADD copy_failures :one SET last_copy_error = :error",
                    ConditionExpression="#state = :pending",
                    ExpressionAttributeNames=_names("state"),
                    ExpressionAttributeValues=_vals(one=1, error=error, pending=PENDING),
                    ReturnValues="UPDATED_NEW")
        except Exception as exc:  # noqa: BLE001
            if error_code(exc) == "ConditionalCheckFailedException":
                return 0  # not pending (or unknown): nothing written
            raise
        return int(out["Attributes"]["copy_failures"]["N"])

    def copy_failures(self, s3_key: str) -> tuple[int, str | None]:
        found = self._get("files", s3_key=s3_key)
        if not found:
            return 0, None
        return int(found.get("copy_failures", 0)), found.get("last_copy_error")

    # -- the upgrade from a warehouse that held the control tables -----------------
    def _put_new(self, table: str, item: dict[str, Any], key: str) -> int:
        """1 if the item was put, 0 if one with its key was there (left alone)."""
        try:
            with self._errors(f"import {table}"):
                self.client.put_item(TableName=self.t[table],
                                     Item={k: _ser(v) for k, v in item.items() if v is not None},
                                     ConditionExpression=f"attribute_not_exists({key})")
            return 1
        except Exception as exc:  # noqa: BLE001
            if error_code(exc) == "ConditionalCheckFailedException":
                return 0
            raise

    def import_shard_state(self, leases: Iterable[Lease], history: Iterable[HistoryEntry],
                           checkpoints: Iterable[LegacyCheckpoint]) -> dict[str, int]:
        done = {"leases": 0, "history": 0, "checkpoints": 0}
        for lease in leases:
            done["leases"] += self._put_new("leases", {
                "stream": lease.stream, "shard_id": lease.shard_id, "token": lease.token,
                "renewed_us": _us(lease.renewed_at) if lease.renewed_at else None,
                "expires_us": _us(lease.expires_at) if lease.expires_at else None},
                "shard_id")
        top = 0
        for e in history:
            top = max(top, e.id)
            done["history"] += self._put_new("history", {
                "stream": e.stream, "id": e.id, "entry_id": e.id, "shard_id": e.shard_id,
                "shard_key": f"{e.stream}/{e.shard_id}", "sequence_number": e.sequence_number,
                "sub_sequence_number": e.sub_sequence_number,
                "closes_sequence": e.closes_sequence, "source": e.source, "reason": e.reason,
                "lease_token": e.lease_token, "created_us": _us(e.created_at)}, "id")
        if top:  # the counter hands out ids above every imported one
            try:
                with self._errors("history counter"):
                    self.client.update_item(
                        TableName=self.t["history"], Key=_COUNTER,
                        UpdateExpression="SET next_id = :top",
                        ConditionExpression="attribute_not_exists(next_id) OR next_id < :top",
                        ExpressionAttributeValues=_vals(top=top))
            except Exception as exc:  # noqa: BLE001
                if error_code(exc) != "ConditionalCheckFailedException":
                    raise
        for c in checkpoints:
            cp = c.checkpoint
            done["checkpoints"] += self._put_new("checkpoints", {
                "stream": c.stream, "shard_id": c.shard_id,
                "sequence_number": cp.sequence_number,
                "sub_sequence_number": cp.sub_sequence_number,
                "closes_sequence": cp.closes_sequence, "lease_token": c.lease_token,
                "history_id": c.history_id,
                "updated_us": _us(cp.updated_at or self.now())}, "shard_id")
        return done
