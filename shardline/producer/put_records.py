"""The one PutRecords retry loop, for ``put_events`` and the background ``Producer``.

A ``Sender`` puts one ``PutBatch``: it retries only the entries a call reports as
failed (and whole calls that fail with a retriable error), with capped
exponential backoff and jitter, and counts what landed in a shared ``PutStats``.
Two policies share it: ``put_events`` gives up after ``max_attempts`` and raises;
the ``Producer`` (``max_attempts=None``) keeps trying until the batch is landed,
abandoned (its records went to the spool) or the producer stops, and reports
entries Kinesis refused for good in ``PutBatch.refused`` instead of raising.
A ``Lane`` is one sender thread with a small queue, so HTTP calls overlap with
building the next batch while each lane's records are still put in order.
Error codes and classes come from ``shardline.kinesis``.
"""
from __future__ import annotations

import collections
import queue
import random
import threading
from dataclasses import dataclass, field
from typing import Callable

from shardline.errors import FatalError, ServiceUnavailable, ThrottledError
from shardline.kinesis import (RETRIABLE_CODES, KinesisClient, StreamNotFound, classify,
                               error_code)
from shardline.logs import get_logger
from shardline.producer.kpl import Entry, Record

log = get_logger("producer")


@dataclass
class PutStats:
    """What was sent. ``user_records`` counts KPL user records; without aggregation it
    equals ``records`` (Kinesis records)."""

    records: int = 0
    user_records: int = 0
    bytes: int = 0
    calls: int = 0
    retried_entries: int = 0
    retried_calls: int = 0
    elapsed_s: float = 0.0
    shards: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def rate(self) -> float:
        """User records per second."""
        return self.user_records / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {"records": self.records, "user_records": self.user_records,
                "bytes": self.bytes, "calls": self.calls,
                "retried_entries": self.retried_entries, "retried_calls": self.retried_calls,
                "elapsed_s": round(self.elapsed_s, 3), "rate": round(self.rate, 1),
                "shards": dict(sorted(self.shards.items()))}


@dataclass(eq=False)
class PutBatch:
    """One PutRecords call's worth of entries (≤ 500 records, ≤ 5 MiB).

    ``users[i]`` is the number of user records entry ``i`` carries (KPL aggregates);
    the producer also keeps the user records behind the entries (``records``, with
    ``spans[i]`` the slice of entry ``i``) so an abandoned batch can be spooled.
    """

    entries: list[Entry]
    users: list[int]
    nbytes: int
    records: list[Record] | None = None
    spans: list[tuple[int, int]] | None = None
    tag: object = None                   # the producer's bookkeeping (a spool chunk)
    pending: list[int] = field(default_factory=list)  # entries not landed (yet)
    refused: dict[int, str] = field(default_factory=dict)  # entry -> error code, for good
    abandoned: bool = False
    landed_users: int = 0
    min_seq: int = 0                     # the producer's oldest record in the batch
    held: int = 0                        # the producer's buffer bytes behind the batch

    def __post_init__(self) -> None:
        self.pending = list(range(len(self.entries)))

    @property
    def min_t(self) -> int:
        return self.records[0][1] if self.records else 0


class Sender:
    """Sends batches with retries; one per lane thread."""

    def __init__(self, client: KinesisClient, stream: str, stats: PutStats, *,
                 max_attempts: int | None, backoff_base_s: float, backoff_max_s: float,
                 progress: Callable[[PutStats], None] | None, sleep: Callable[[float], object],
                 lock: threading.Lock, stopping: Callable[[], bool] = lambda: False):
        self.client, self.stream, self.stats, self.lock = client, stream, stats, lock
        self.max_attempts, self.base, self.cap = max_attempts, backoff_base_s, backoff_max_s
        self.progress, self.sleep, self.stopping = progress, sleep, stopping
        self.rng = random.Random()
        self.last_error = ""

    def _backoff(self, attempt: int) -> None:
        # "Equal jitter": uniform in [step/2, step], step doubling up to the cap.
        step = min(self.cap, self.base * (2 ** min(attempt, 30)))
        self.sleep(step / 2 + self.rng.random() * step / 2)

    def _give_up(self, batch: PutBatch) -> bool:
        return batch.abandoned or self.stopping()

    def send(self, batch: PutBatch) -> None:
        """Put the batch; ``batch.pending`` is what is left when it returns early."""
        entries, users = batch.entries, batch.users
        pending = batch.pending
        if batch.abandoned:
            return
        attempt = 0
        while pending:
            try:
                response = self.client.put_records(
                    StreamName=self.stream, Records=[entries[i] for i in pending])
            except Exception as exc:  # noqa: BLE001 - classified below
                self._call_failed(exc, batch, attempt)
                attempt += 1
                if self._give_up(batch):
                    return
                self._backoff(attempt)
                continue
            failed: list[int] = []
            codes: collections.Counter[str] = collections.Counter()
            ok_shards: collections.Counter[str] = collections.Counter()
            ok_users = 0
            for i, result in zip(pending, response["Records"], strict=False):
                code = result.get("ErrorCode")
                if not code:
                    ok_users += users[i]
                    ok_shards[result["ShardId"]] += 1
                elif code in RETRIABLE_CODES:
                    failed.append(i)
                    codes[code] += 1
                elif self.max_attempts is not None:
                    raise FatalError(f"PutRecords to {self.stream!r}: entries refused: {code}: "
                                     f"{result.get('ErrorMessage', '')}")
                else:
                    batch.refused[i] = code
            with self.lock:
                self.stats.calls += 1
                self.stats.records += len(pending) - len(failed) - \
                    sum(1 for i in pending if i in batch.refused)
                self.stats.user_records += ok_users
                self.stats.shards.update(ok_shards)
                self.stats.retried_entries += len(failed)
            batch.landed_users += ok_users
            batch.pending = pending = failed
            if not failed:
                break
            attempt += 1
            self.last_error = ",".join(sorted(codes))
            if self.max_attempts is not None and attempt >= self.max_attempts:
                raise ThrottledError(f"PutRecords to {self.stream!r}: {len(failed)} entries "
                                     f"still failing after {attempt} tries: {dict(codes)}")
            log.debug("%d entries failed (%s); retrying only those", len(failed), dict(codes))
            if self._give_up(batch):
                return
            self._backoff(attempt)
        with self.lock:
            self.stats.bytes += batch.nbytes
            if self.progress is not None:
                self.progress(self.stats)

    def _call_failed(self, exc: Exception, batch: PutBatch, attempt: int) -> None:
        """Raise what ``put_events`` must raise; count and log a retried call."""
        code = error_code(exc)
        mapped = classify(exc)
        self.last_error = code or type(exc).__name__
        if mapped is None:
            if code == "ResourceNotFoundException":
                problem: Exception = StreamNotFound(
                    f"stream {self.stream!r} does not exist; create it with `shardline "
                    f"create-stream --stream {self.stream} --shards N`")
            else:
                problem = FatalError(f"PutRecords to {self.stream!r} failed: "
                                     f"{type(exc).__name__}: {exc}")
            if self.max_attempts is not None:
                raise problem from None
            # The producer keeps the records (memory or spool) until an operator fixes it;
            # refusing a whole call for good is only right for a malformed request.
            if code == "ValidationException":
                batch.refused.update({i: code for i in batch.pending})
                batch.pending = []
            log.error("%s; keeping the records and retrying", problem)
        with self.lock:
            self.stats.retried_calls += 1
        if self.max_attempts is not None and attempt + 1 >= self.max_attempts:
            cls = ThrottledError if code in RETRIABLE_CODES else ServiceUnavailable
            raise cls(f"PutRecords to {self.stream!r} still failing after {attempt + 1} "
                      f"tries: {type(exc).__name__}: {exc}") from exc
        if mapped is not None:
            log.warning("PutRecords failed (%s), retrying the whole call (try %d)",
                        code or type(exc).__name__, attempt + 2)


class Lane:
    """One sender thread with its own queue, for a fixed group of shards.

    ``submit`` blocks while the queue is full (``put_events``: backpressure);
    ``offer`` never blocks (the producer keeps the batch and offers it again).
    ``on_done(batch, exc)`` runs on the lane thread after each batch.
    """

    def __init__(self, sender: Sender, threaded: bool, name: str, depth: int = 2,
                 on_done: Callable[[PutBatch, BaseException | None], None] | None = None):
        self.sender = sender
        self.failure: list[BaseException] = []
        self.on_done = on_done
        self.queue: queue.Queue[PutBatch | None] = queue.Queue(maxsize=depth)
        self.thread = threading.Thread(target=self._run, name=name, daemon=True) \
            if threaded else None
        if self.thread is not None:
            self.thread.start()

    def _run(self) -> None:
        while True:
            batch = self.queue.get()
            if batch is None:
                self.queue.task_done()
                return
            error: BaseException | None = None
            if not self.failure:  # after an error, drain; the caller raises it
                try:
                    self.sender.send(batch)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    error = exc
                    self.failure.append(exc)
            if self.on_done is not None:
                self.on_done(batch, error)
            self.queue.task_done()

    @property
    def busy(self) -> int:
        """Batches queued or being sent."""
        return self.queue.unfinished_tasks

    def offer(self, batch: PutBatch) -> bool:
        try:
            self.queue.put_nowait(batch)
            return True
        except queue.Full:
            return False

    def submit(self, batch: PutBatch) -> None:
        if self.thread is None:
            self.sender.send(batch)
            return
        while True:
            if self.failure:
                raise self.failure[0]
            try:
                self.queue.put(batch, timeout=0.2)
                return
            except queue.Full:
                continue

    def close(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join(timeout)
