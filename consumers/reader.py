"""GetRecords on one shard: iterator positions and age, pacing, bounded backoff.

The iterator is never used past ``iterator_max_age_s``: it is re-made AFTER the
last Kinesis record read (or at the start position when nothing was read yet),
which is also what happens on ExpiredIteratorException, so a refresh neither
loses nor repeats a record. Transient errors (throttling, 5xx, connection) are
retried with tenacity (exponential + jitter); a retry run is bounded in time so
the loop gets back to renew its lease; ``sleep`` is injected.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, TypeVar

import tenacity

from shardline.consumers.deagg import user_records
from shardline.consumers.pacer import Pacer
from shardline.codec import Record
from shardline.records.control import Checkpoint
from shardline.errors import IteratorExpired, RetriableError
from shardline.kinesis import KinesisClient, call
from shardline.logs import ContextLogger
from shardline.settings import ConsumerSettings

T = TypeVar("T")

BACKOFF_MAX_S = 5.0
MAX_ATTEMPTS = 30  # per read; the loop then renews its lease and tries again


@dataclass(frozen=True)
class Position:
    """Where to (re)open the iterator; ``skip_through`` drops delivered sub-records."""

    kind: str
    sequence: str | None = None
    timestamp: datetime | None = None
    skip_through: tuple[str, int] | None = None

    def iterator_args(self) -> dict[str, str | datetime]:
        args: dict[str, str | datetime] = {"ShardIteratorType": self.kind}
        if self.sequence is not None:
            args["StartingSequenceNumber"] = self.sequence
        if self.timestamp is not None:
            args["Timestamp"] = self.timestamp
        return args


def start_position(cp: Checkpoint | None, cs: ConsumerSettings,
                   wall: Callable[[], float] = time.time) -> Position:
    """After the checkpoint, or at ``initial_position`` when there is none.

    LATEST is pinned to the start time (AT_TIMESTAMP) so that a refresh before the
    first record is read does not skip what arrived in between.
    """
    if cp is not None:
        if cp.closes_sequence:
            return Position("AFTER_SEQUENCE_NUMBER", cp.sequence_number)
        return Position("AT_SEQUENCE_NUMBER", cp.sequence_number,
                        skip_through=(cp.sequence_number, cp.sub_sequence_number))
    if cs.initial_position == "AT_TIMESTAMP":
        ts = datetime.fromisoformat(cs.initial_timestamp.replace("Z", "+00:00"))
        if ts.tzinfo is None:
            ts = ts.replace(tzinfo=timezone.utc)
        return Position("AT_TIMESTAMP", timestamp=ts)
    if cs.initial_position == "LATEST":
        return Position("AT_TIMESTAMP", timestamp=datetime.fromtimestamp(wall(), timezone.utc))
    return Position("TRIM_HORIZON")


@dataclass
class ReadResult:
    records: list[Record] = field(default_factory=list)
    raw_count: int = 0
    nbytes: int = 0
    millis_behind: int | None = None
    closed: bool = False


class ShardReader:
    def __init__(self, kinesis: KinesisClient, stream: str, shard_id: str,
                 cs: ConsumerSettings, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 retry_for_s: float | None = None, log: ContextLogger | None = None):
        self.kinesis, self.stream, self.shard_id, self.cs = kinesis, stream, shard_id, cs
        self.clock, self.sleep, self.log = clock, sleep, log
        self.pacer = Pacer(cs.max_calls_per_s, cs.max_bytes_per_s)
        self.retry_for_s = cs.lease_renew_s if retry_for_s is None else retry_for_s
        self.position: Position = Position("TRIM_HORIZON")
        self.last_sequence: str | None = None
        self.closed = False
        self.iterator: str | None = None
        self.iterator_at: float | None = None
        self.refreshes = 0
        self.age_refreshes = 0  # refreshes because the iterator got old (not expiry/start)
        self.retries = 0

    # -- iterator ---------------------------------------------------------------
    def start(self, position: Position) -> None:
        self.position, self.iterator, self.iterator_at = position, None, None

    def resume_position(self) -> Position:
        if self.last_sequence is not None:
            return Position("AFTER_SEQUENCE_NUMBER", self.last_sequence)
        return self.position

    def iterator_age_s(self, now: float) -> float:
        return 0.0 if self.iterator_at is None else now - self.iterator_at

    def needs_refresh(self, now: float) -> bool:
        # Refresh a little early so the iterator is fresh when it is used.
        return self.iterator is None or self.iterator_age_s(now) >= self.cs.iterator_max_age_s * 0.9

    def refresh(self) -> None:
        """New iterator after the last record read (or at the start position)."""
        pos = self.resume_position()
        resp = call(self.kinesis.get_shard_iterator, StreamName=self.stream,
                    ShardId=self.shard_id, **pos.iterator_args())
        self.iterator, self.iterator_at = resp["ShardIterator"], self.clock()
        self.refreshes += 1

    def keep_fresh(self, now: float) -> None:
        """While paused (backpressure), keep the iterator from ageing out."""
        if not self.closed and self.iterator is not None and self.needs_refresh(now):
            self.age_refreshes += 1
            self._retrying(self.refresh)

    # -- reading ----------------------------------------------------------------
    def wait_s(self, now: float) -> float:
        return self.pacer.wait_s(now)

    def read(self) -> ReadResult:
        """One GetRecords (with bounded retries); updates position, iterator and closed."""
        return self._retrying(self._read_once)

    def _retrying(self, fn: Callable[[], T]) -> T:
        retryer = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(RetriableError),
            wait=tenacity.wait_random_exponential(multiplier=0.1, max=BACKOFF_MAX_S),
            stop=(tenacity.stop_after_delay(self.retry_for_s)
                  | tenacity.stop_after_attempt(MAX_ATTEMPTS)),
            sleep=self.sleep, before_sleep=self._before_sleep, reraise=True)
        return retryer(fn)

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        self.retries += 1
        if self.log is not None and state.outcome is not None:
            exc = state.outcome.exception()
            self.log.warning("GetRecords retry %d after %s: %s", state.attempt_number,
                             type(exc).__name__, exc)

    def _read_once(self) -> ReadResult:
        now = self.clock()
        wait = self.pacer.wait_s(now)
        if wait > 0:
            self.sleep(wait)
            now = self.clock()
        if self.needs_refresh(now):
            self.age_refreshes += self.iterator is not None
            self.refresh()
            now = self.clock()
        self.pacer.record(now, 0)
        try:
            resp = call(self.kinesis.get_records, ShardIterator=self.iterator,
                        Limit=self.cs.get_records_limit)
        except IteratorExpired:
            self.iterator = None  # the retry re-opens it after the last record read
            raise
        now = self.clock()
        raws = resp.get("Records", [])
        nbytes = sum(len(r["Data"]) + len(r["PartitionKey"]) for r in raws)
        self.pacer.record(now, nbytes)
        skip = self.position.skip_through if self.last_sequence is None else None
        records = list(user_records(raws, skip))
        if raws:
            self.last_sequence = raws[-1]["SequenceNumber"]
        nxt = resp.get("NextShardIterator")
        self.iterator, self.iterator_at = nxt, now
        if nxt is None:
            self.closed = True
        return ReadResult(records, len(raws), nbytes, resp.get("MillisBehindLatest"),
                          self.closed)
