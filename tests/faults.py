"""Fault injection for consumer tests.

- ``FakeKinesis``: an in-memory shard store with the GetShardIterator/GetRecords/ListShards
  calls the consumer uses, iterators that expire by an injected clock, and a queue of
  faults to raise. For unit tests (no network, no sleeping).
- ``KinesisFaults``: botocore event hooks on a real client (kinesalite) that answer
  GetRecords with ExpiredIteratorException, ProvisionedThroughputExceededException,
  HTTP 500 or a slow answer, as scheduled. kinesalite never throttles and its
  iterators live 300 s, so these faults must be made by hand.
"""
from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from botocore.exceptions import ClientError, EndpointConnectionError


def client_error(code: str, op: str = "GetRecords", status: int = 400) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"injected {code}"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, op)


def seq(i: int) -> str:
    """56-digit sequence numbers, like Kinesis (string order = numeric order)."""
    return str(10 ** 55 + i * 1000)


@dataclass
class FakeShard:
    records: list[dict] = field(default_factory=list)
    closed: bool = False
    parent: str | None = None
    adjacent_parent: str | None = None


class FakeKinesis:
    """Enough of the Kinesis API for the reader, with an injected clock."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, iterator_life_s: float = 300):
        self.clock, self.iterator_life_s = clock, iterator_life_s
        self.shards: dict[str, FakeShard] = {}
        self.faults: list[BaseException] = []  # raised by the next get_records calls
        self.list_faults: list[BaseException] = []  # ... and by the next list_shards calls
        self.calls: list[tuple[str, dict]] = []
        self._iters: dict[str, tuple[str, int, float]] = {}
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)

    def add_shard(self, shard_id: str, **kw: Any) -> FakeShard:
        self.shards[shard_id] = FakeShard(**kw)
        return self.shards[shard_id]

    def put(self, shard_id: str, data: bytes, key: str = "k") -> str:
        s = seq(next(self._seq))
        self.shards[shard_id].records.append({
            "SequenceNumber": s, "PartitionKey": key, "Data": data,
            "ApproximateArrivalTimestamp": datetime.now(timezone.utc)})
        return s

    def _iterator(self, shard_id: str, index: int) -> str:
        token = f"it-{next(self._ids)}"
        self._iters[token] = (shard_id, index, self.clock())
        return token

    def get_shard_iterator(self, StreamName: str, ShardId: str, ShardIteratorType: str,
                           StartingSequenceNumber: str | None = None,
                           Timestamp: Any = None) -> dict:
        self.calls.append(("get_shard_iterator", {"type": ShardIteratorType,
                                                  "seq": StartingSequenceNumber}))
        if ShardId not in self.shards:
            raise client_error("ResourceNotFoundException", "GetShardIterator")
        recs = self.shards[ShardId].records
        seqs = [r["SequenceNumber"] for r in recs]
        key = (lambda s: (len(s), s))
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
            index = next((i for i, r in enumerate(recs)
                          if r["ApproximateArrivalTimestamp"] >= Timestamp), len(recs))
        return {"ShardIterator": self._iterator(ShardId, index)}

    def get_records(self, ShardIterator: str, Limit: int = 10000) -> dict:
        self.calls.append(("get_records", {"iterator": ShardIterator}))
        if self.faults:
            raise self.faults.pop(0)
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
        if self.list_faults:
            raise self.list_faults.pop(0)
        shards = []
        for sid, s in self.shards.items():
            d: dict[str, Any] = {"ShardId": sid, "SequenceNumberRange":
                                 {"StartingSequenceNumber": seq(0)}}
            if s.closed:
                d["SequenceNumberRange"]["EndingSequenceNumber"] = seq(10 ** 9)
            if s.parent:
                d["ParentShardId"] = s.parent
            if s.adjacent_parent:
                d["AdjacentParentShardId"] = s.adjacent_parent
            shards.append(d)
        return {"Shards": shards}


class KinesisFaults:
    """Scheduled GetRecords faults on a real boto3 Kinesis client (botocore hooks).

    ``schedule`` maps the n-th GetRecords call (1-based) to a fault: "expired",
    "throttled", "500", "conn", or ("slow", seconds). Returning a response from a
    ``before-call`` handler short-circuits the HTTP request, like a real answer.
    """

    def __init__(self, client: Any, schedule: dict[int, Any]):
        self.schedule = dict(schedule)
        self.calls = 0
        self.injected: list[Any] = []
        self._lock = threading.Lock()
        client.meta.events.register("before-call.kinesis.GetRecords", self._before)

    def _before(self, **kwargs: Any) -> Any:
        with self._lock:
            self.calls += 1
            fault = self.schedule.pop(self.calls, None)
        if fault is None:
            return None
        self.injected.append(fault)
        if isinstance(fault, tuple) and fault[0] == "slow":
            time.sleep(fault[1])
            return None
        if fault == "conn":
            raise EndpointConnectionError(endpoint_url="http://injected")
        codes = {"expired": ("ExpiredIteratorException", 400),
                 "throttled": ("ProvisionedThroughputExceededException", 400),
                 "500": ("InternalFailure", 500)}
        code, status = codes[fault]
        return (_FakeHttp(status), {"Error": {"Code": code, "Message": f"injected {code}"},
                                    "ResponseMetadata": {"HTTPStatusCode": status}})


@dataclass
class _FakeHttp:
    status_code: int
    headers: dict = field(default_factory=dict)
    content: bytes = b""


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


class FakeControl:
    """In-memory stand-in for ``shardline.control.Control`` with injectable failures."""

    def __init__(self) -> None:
        self.leases: dict[str, tuple[str | None, int]] = {}
        self.checkpoints: dict[str, Any] = {}
        self.history: list[tuple[str, Any, str]] = []
        self.status: dict[str, dict] = {}
        self.renew_error: BaseException | None = None
        self.checkpoint_error: BaseException | None = None
        self.renewals = 0
        self.held_for: list[float] = []  # acquire raises LeaseHeld(expires_in_s) for each

    def acquire_lease(self, stream: str, shard_id: str, owner: str, ttl_s: float) -> int:
        from shardline.errors import LeaseHeld
        if self.held_for:
            raise LeaseHeld(f"shard {shard_id} is held by other", self.held_for.pop(0))
        cur, token = self.leases.get(shard_id, (None, 0))
        if cur is not None and cur != owner:
            raise LeaseHeld(f"shard {shard_id} of stream {stream} is held by {cur}")
        self.leases[shard_id] = (owner, token + 1)
        return token + 1

    def _check(self, shard_id: str, owner: str, token: int) -> None:
        from shardline.errors import LeaseLost
        if self.leases.get(shard_id) != (owner, token):
            raise LeaseLost(f"lease on {shard_id} lost")

    def renew_lease(self, stream: str, shard_id: str, owner: str, token: int,
                    ttl_s: float) -> None:
        if self.renew_error is not None:
            raise self.renew_error
        self._check(shard_id, owner, token)
        self.renewals += 1

    def release_lease(self, stream: str, shard_id: str, owner: str, token: int) -> None:
        if self.leases.get(shard_id) == (owner, token):
            self.leases[shard_id] = (None, token)

    def get_checkpoint(self, stream: str, shard_id: str) -> Any:
        return self.checkpoints.get(shard_id)

    def checkpoint(self, stream: str, shard_id: str, owner: str, token: int, ttl_s: float,
                   cp: Any, source: str = "consumer") -> None:
        if self.checkpoint_error is not None:
            raise self.checkpoint_error
        self._check(shard_id, owner, token)
        self.checkpoints[shard_id] = cp
        self.history.append((shard_id, cp, source))

    def report_status(self, stream: str, shard_id: str, **fields: Any) -> None:
        self.status[shard_id] = fields

    def close(self) -> None:
        pass


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
