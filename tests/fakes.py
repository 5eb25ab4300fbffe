"""In-memory test doubles, one per service, shared by every test that needs one.

- ``FakeKinesis``: shards with records, GetShardIterator (all five types),
  GetRecords with iterators that expire by an injected clock, ListShards (paged),
  PutRecords routed by hash key (with the API's limits), queues of faults to raise,
  scripted GetRecords answers and PutRecords entry failures, PutRecords stalled
  (``put_gate``) or unreachable (``put_down``); every call is recorded
  as ``(operation, kwargs)`` with the API's own argument names.
- ``FakeS3``: one bucket in memory: put/get/list (paged), recorded puts, and a
  failure to raise on every call.
- ``FaultyStore`` (the control store: ``MemoryStore`` with fault hooks), ``FakeDispatcher``
  (the Gearman dispatcher) and ``Clock`` (a monotonic clock whose ``sleep`` advances it).

No network, no sleeping. Faults on *real* clients (botocore hooks, proxies) are in
``tests/faults.py`` and ``tests/chaos/proxy.py``.
"""
from __future__ import annotations

import hashlib
import io
import itertools
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from botocore.exceptions import ClientError, EndpointConnectionError

from shardline.records.control import Checkpoint
from shardline.controlstore.memory import MemoryStore
from shardline.errors import LeaseHeld

HASH_KEY_MAX = 2 ** 128 - 1
PUT_MAX_RECORDS = 500
PUT_MAX_BYTES = 5 * 1024 * 1024
RECORD_MAX_BYTES = 1024 * 1024


def client_error(code: str, op: str = "GetRecords", status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"injected {code}"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, op)


def seq(i: int) -> str:
    """56-digit sequence numbers, like Kinesis (string order = numeric order)."""
    return str(10 ** 55 + i * 1000)


# -- Kinesis -------------------------------------------------------------------------------
@dataclass
class FakeShard:
    records: list[dict] = field(default_factory=list)
    closed: bool = False
    parent: str | None = None
    adjacent_parent: str | None = None
    hash_range: tuple[int, int] = (0, HASH_KEY_MAX)


class FakeKinesis:
    """Enough of the Kinesis API for the consumer, the producer, ``replay`` and ListShards.

    ``ApproximateArrivalTimestamp`` is epoch seconds, as the consumer's client
    (``raw_timestamps=True``) returns it. ``answers``: GetRecords responses handed out,
    in order, before the store is read (pages the store cannot make, such as an empty
    page behind the tip). ``list_page_size``: shards per ListShards page (NextToken).
    ``entry_errors(call, index, entry) -> error code | None`` fails single PutRecords
    entries (``call`` counts PutRecords calls from 1). ``shards=n``: start with ``n``
    open shards (``split_evenly``), as a producer's stream.

    The producer's outages touch PutRecords only (ListShards keeps answering, so the
    producer keeps its shard map and lanes): clear ``put_gate`` and every PutRecords
    call waits until it is set again (Kinesis stalls); set ``put_down`` and every
    PutRecords call fails with a connection error (Kinesis unreachable). Both calls
    are recorded, like the calls that fail with ``put_faults``.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, iterator_life_s: float = 300,
                 *, list_page_size: int | None = None, shards: int = 0,
                 entry_errors: Callable[[int, int, dict], str | None] | None = None,
                 put_faults: list[BaseException] | None = None):
        self.clock, self.iterator_life_s = clock, iterator_life_s
        self.list_page_size = list_page_size
        self.shards: dict[str, FakeShard] = {}
        self.faults: list[BaseException] = []  # raised by the next get_records calls
        self.list_faults: list[BaseException] = []  # ... and by the next list_shards calls
        self.put_faults: list[BaseException] = list(put_faults or [])  # ... put_records calls
        self.entry_errors = entry_errors
        self.put_gate = threading.Event()
        self.put_gate.set()
        self.put_down = False
        self.put_calls = 0
        self._put_lock = threading.Lock()  # the producer puts from several threads
        self.answers: list[dict] = []  # returned by the next get_records calls
        self.calls: list[tuple[str, dict]] = []
        self._iters: dict[str, tuple[str, int, float]] = {}
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        if shards:
            self.split_evenly(shards)

    def add_shard(self, shard_id: str, **kw: Any) -> FakeShard:
        self.shards[shard_id] = FakeShard(**kw)
        return self.shards[shard_id]

    def split_evenly(self, n: int) -> list[str]:
        """``n`` open shards sharing the hash key space evenly, as CreateStream makes them."""
        step = (HASH_KEY_MAX + 1) // n
        ids = [f"shardId-{i:012d}" for i in range(n)]
        for i, sid in enumerate(ids):
            self.add_shard(sid, hash_range=(i * step, HASH_KEY_MAX if i == n - 1
                                            else (i + 1) * step - 1))
        return ids

    def put(self, shard_id: str, data: bytes, key: str = "k") -> str:
        s = seq(next(self._seq))
        self.shards[shard_id].records.append({
            "SequenceNumber": s, "PartitionKey": key, "Data": data,
            "ApproximateArrivalTimestamp": time.time()})
        return s

    def shard_for(self, partition_key: str, explicit_hash_key: str | None = None) -> str:
        """The open shard whose hash key range holds the key's MD5 (or the explicit key)."""
        h = int(explicit_hash_key) if explicit_hash_key is not None else \
            int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")
        for sid, s in self.shards.items():
            if not s.closed and s.hash_range[0] <= h <= s.hash_range[1]:
                return sid
        raise AssertionError(f"no open shard holds hash key {h}")

    def put_records(self, StreamName: str, Records: list[dict]) -> dict:
        self.put_gate.wait()  # outside the lock: a stalled call must not hold the others
        with self._put_lock:
            return self._put_records(StreamName, Records)

    def _put_records(self, StreamName: str, Records: list[dict]) -> dict:
        self.calls.append(("put_records", {"StreamName": StreamName, "Records": Records}))
        self.put_calls += 1
        if self.put_down:
            raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")
        if len(Records) > PUT_MAX_RECORDS or any(
                len(r["Data"]) + len(r["PartitionKey"]) > RECORD_MAX_BYTES for r in Records) \
                or sum(len(r["Data"]) + len(r["PartitionKey"]) for r in Records) > PUT_MAX_BYTES:
            raise client_error("ValidationException", "PutRecords")
        if self.put_faults:
            raise self.put_faults.pop(0)
        out, failed = [], 0
        for i, entry in enumerate(Records):
            code = self.entry_errors(self.put_calls, i, entry) if self.entry_errors else None
            if code:
                failed += 1
                out.append({"ErrorCode": code, "ErrorMessage": f"injected {code}"})
                continue
            shard_id = self.shard_for(entry["PartitionKey"], entry.get("ExplicitHashKey"))
            out.append({"ShardId": shard_id,
                        "SequenceNumber": self.put(shard_id, entry["Data"],
                                                   entry["PartitionKey"])})
        return {"FailedRecordCount": failed, "Records": out}

    def put_batches(self) -> list[list[dict]]:
        """The ``Records`` of every PutRecords call, in order (failed calls included)."""
        return [kw["Records"] for op, kw in list(self.calls) if op == "put_records"]

    def stored(self) -> list[tuple[str, bytes]]:
        """(partition key, data) of every record, shard by shard, in order."""
        return [(r["PartitionKey"], r["Data"]) for s in self.shards.values() for r in s.records]

    def _iterator(self, shard_id: str, index: int) -> str:
        token = f"it-{next(self._ids)}"
        self._iters[token] = (shard_id, index, self.clock())
        return token

    def get_shard_iterator(self, StreamName: str, ShardId: str, ShardIteratorType: str,
                           StartingSequenceNumber: str | None = None,
                           Timestamp: Any = None) -> dict:
        args = {"StreamName": StreamName, "ShardId": ShardId,
                "ShardIteratorType": ShardIteratorType,
                "StartingSequenceNumber": StartingSequenceNumber, "Timestamp": Timestamp}
        self.calls.append(("get_shard_iterator",
                           {k: v for k, v in args.items() if v is not None}))
        if ShardId not in self.shards:
            raise client_error("ResourceNotFoundException", "GetShardIterator")
        recs = self.shards[ShardId].records
        seqs = [r["SequenceNumber"] for r in recs]

        def key(s: str) -> tuple[int, str]:  # sequence numbers order by length, then text
            return (len(s), s)

        if ShardIteratorType == "TRIM_HORIZON":
            index = 0
        elif ShardIteratorType == "LATEST":
            index = len(recs)
        elif ShardIteratorType == "AT_SEQUENCE_NUMBER":
            index = next((i for i, s in enumerate(seqs) if key(s) >= key(StartingSequenceNumber)),
                         len(recs))
        elif ShardIteratorType == "AFTER_SEQUENCE_NUMBER":
            index = next((i for i, s in enumerate(seqs) if key(s) > key(StartingSequenceNumber)),
                         len(recs))
        else:  # AT_TIMESTAMP
            at = Timestamp.timestamp() if isinstance(Timestamp, datetime) else Timestamp
            index = next((i for i, r in enumerate(recs)
                          if r["ApproximateArrivalTimestamp"] >= at), len(recs))
        return {"ShardIterator": self._iterator(ShardId, index)}

    def get_records(self, ShardIterator: str, Limit: int = 10000) -> dict:
        self.calls.append(("get_records", {"ShardIterator": ShardIterator, "Limit": Limit}))
        if self.faults:
            raise self.faults.pop(0)
        if self.answers:
            return self.answers.pop(0)
        shard_id, index, issued = self._iters[ShardIterator]
        if self.clock() - issued > self.iterator_life_s:
            raise client_error("ExpiredIteratorException")
        shard = self.shards[shard_id]
        out = shard.records[index:index + Limit]
        nxt_index = index + len(out)
        done = shard.closed and nxt_index >= len(shard.records)
        return {"Records": out, "MillisBehindLatest": 0,
                "NextShardIterator": None if done else self._iterator(shard_id, nxt_index)}

    def list_shards(self, StreamName: str | None = None, NextToken: str | None = None) -> dict:
        args = {"StreamName": StreamName, "NextToken": NextToken}
        self.calls.append(("list_shards", {k: v for k, v in args.items() if v is not None}))
        if self.list_faults:
            raise self.list_faults.pop(0)
        if (StreamName is None) == (NextToken is None):  # as Kinesis: exactly one of them
            raise client_error("InvalidArgumentException", "ListShards")
        shards = []
        for sid, s in self.shards.items():
            d: dict[str, Any] = {"ShardId": sid,
                                 "HashKeyRange": {"StartingHashKey": str(s.hash_range[0]),
                                                  "EndingHashKey": str(s.hash_range[1])},
                                 "SequenceNumberRange": {"StartingSequenceNumber": seq(0)}}
            if s.closed:
                d["SequenceNumberRange"]["EndingSequenceNumber"] = seq(10 ** 9)
            if s.parent:
                d["ParentShardId"] = s.parent
            if s.adjacent_parent:
                d["AdjacentParentShardId"] = s.adjacent_parent
            shards.append(d)
        start = int(NextToken[1:]) if NextToken else 0
        end = len(shards) if self.list_page_size is None else start + self.list_page_size
        page: dict[str, Any] = {"Shards": shards[start:end]}
        if end < len(shards):
            page["NextToken"] = f"t{end}"
        return page


# -- S3 --------------------------------------------------------------------------------------
class FakeS3:
    """One S3 bucket in memory (path-style, like moto server).

    ``objects``: key -> bytes. ``bucket``: the bucket's name; when None, the first
    call names it, and a call naming another bucket fails with NoSuchBucket (so a
    reader that looks in the wrong bucket is caught). ``puts``: every put, in order,
    as (bucket, key, body). ``fail``: raised by every call (S3 down).
    """

    def __init__(self, objects: dict[str, bytes] | None = None, *, bucket: str | None = None,
                 fail: BaseException | None = None, page_size: int = 1000):
        self.objects: dict[str, bytes] = dict(objects or {})
        self.bucket = bucket
        self.fail = fail
        self.page_size = page_size
        self.puts: list[tuple[str, str, bytes]] = []

    def _check(self, bucket: str, op: str) -> None:
        if self.fail is not None:
            raise self.fail
        if self.bucket is None:
            self.bucket = bucket
        if bucket != self.bucket:
            raise ClientError({"Error": {"Code": "NoSuchBucket", "Message": bucket},
                               "ResponseMetadata": {"HTTPStatusCode": 404}}, op)

    def put_object(self, Bucket: str, Key: str, Body: bytes, **_: Any) -> dict:
        self._check(Bucket, "PutObject")
        self.objects[Key] = Body
        self.puts.append((Bucket, Key, Body))
        return {}

    def get_object(self, Bucket: str, Key: str) -> dict:
        self._check(Bucket, "GetObject")
        if Key not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "no such key"},
                               "ResponseMetadata": {"HTTPStatusCode": 404}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[Key])}

    def list_objects_v2(self, Bucket: str, Prefix: str = "",
                        ContinuationToken: str | None = None) -> dict:
        self._check(Bucket, "ListObjectsV2")
        keys = sorted(k for k in self.objects if k.startswith(Prefix))
        start = int(ContinuationToken) if ContinuationToken else 0
        page = keys[start:start + self.page_size]
        out: dict[str, Any] = {"KeyCount": len(page)}
        if page:
            out["Contents"] = [{"Key": k, "Size": len(self.objects[k])} for k in page]
        if start + self.page_size < len(keys):
            out.update(IsTruncated=True, NextContinuationToken=str(start + self.page_size))
        return out

    def get_paginator(self, name: str) -> Any:
        assert name == "list_objects_v2", name
        s3 = self

        class Paginator:
            def paginate(self, Bucket: str, Prefix: str = "") -> Any:
                token = None
                while True:
                    kw = {"ContinuationToken": token} if token else {}
                    page = s3.list_objects_v2(Bucket=Bucket, Prefix=Prefix, **kw)
                    yield page
                    token = page.get("NextContinuationToken")
                    if not token:
                        return

        return Paginator()


# -- the rest ----------------------------------------------------------------------------
class Clock:
    """A fake monotonic clock; ``sleep`` advances it."""

    def __init__(self, t: float = 1000.0):
        self.t = t
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s

    def advance(self, s: float) -> None:
        self.t += s


class FaultyStore(MemoryStore):
    """The contract-checked ``MemoryStore`` plus the faults the consumer's tests inject:
    ``renew_error`` / ``checkpoint_error`` raised by the next renewals / checkpoints, and
    ``held_for``: each acquisition raises ``LeaseHeld`` with the next ``expires_in_s`` (a
    holder that renews at the last moment). Nothing else differs from ``MemoryStore``."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self.renew_error: BaseException | None = None
        self.checkpoint_error: BaseException | None = None
        self.held_for: list[float] = []

    def acquire_lease(self, stream: str, shard_id: str, owner: str, ttl_s: float) -> int:
        if self.held_for:
            raise LeaseHeld(f"shard {shard_id} is held by other", self.held_for.pop(0))
        return super().acquire_lease(stream, shard_id, owner, ttl_s)

    def renew_lease(self, stream: str, shard_id: str, owner: str, token: int,
                    ttl_s: float) -> None:
        if self.renew_error is not None:
            raise self.renew_error
        super().renew_lease(stream, shard_id, owner, token, ttl_s)

    def checkpoint(self, stream: str, shard_id: str, owner: str, token: int, ttl_s: float,
                   cp: Checkpoint, source: str = "consumer") -> int:
        if self.checkpoint_error is not None:
            raise self.checkpoint_error
        return super().checkpoint(stream, shard_id, owner, token, ttl_s, cp, source)


class FakeDispatcher:
    """Records submissions; the test decides each outcome (``finish``)."""

    def __init__(self) -> None:
        self.submitted: list[tuple[int, Any]] = []
        self._outcomes: list[Any] = []
        self.stopped = False

    def submit(self, ticket: int, stream: str, batch: Any) -> None:
        self.submitted.append((ticket, batch))

    def finish(self, ticket: int, ok: bool = True, error: str | None = None) -> None:
        from shardline.consumers.dispatcher import Outcome
        self._outcomes.append(Outcome(ticket, ok, 1, error))

    def finish_all(self) -> None:
        done = {o.ticket for o in self._outcomes}
        for ticket, _ in self.submitted:
            if ticket not in done:
                self.finish(ticket)

    def poll(self) -> list[Any]:
        out, self._outcomes = self._outcomes, []
        return out

    def wait(self, timeout: float) -> bool:
        if not self._outcomes:
            time.sleep(min(timeout, 0.01))
        return bool(self._outcomes)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.stopped = True
