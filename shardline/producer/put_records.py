"""PutRecords with retries, for ``shardline.producer.put_events``.

A ``Sender`` puts one batch: it retries only the entries a call reports as
failed (and whole calls that fail with a retriable error), with capped
exponential backoff and jitter, and counts what landed in a shared ``PutStats``.
A ``Lane`` is one sender thread with a small queue, so HTTP calls overlap with
building the next batch while each lane's records are still put in order.
"""
from __future__ import annotations

import collections
import queue
import random
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from shardline.errors import ConfigError, FatalError, ServiceUnavailable, ThrottledError
from shardline.logs import get_logger

# Per-entry / per-call errors worth another try; anything else is fatal.
RETRIABLE_CODES = {"ProvisionedThroughputExceededException", "InternalFailure",
                   "ServiceUnavailable", "ServiceUnavailableException", "Throttling",
                   "ThrottlingException", "LimitExceededException", "RequestTimeout",
                   "KMSThrottlingException", "RequestLimitExceeded", "SlowDown"}

log = get_logger("producer")


@dataclass
class PutStats:
    """What ``put_events`` did. ``user_records`` counts KPL user records; without
    aggregation it equals ``records`` (Kinesis records)."""

    records: int = 0
    user_records: int = 0
    bytes: int = 0
    calls: int = 0
    retried_entries: int = 0
    retried_calls: int = 0
    elapsed_s: float = 0.0
    shards: collections.Counter = field(default_factory=collections.Counter)

    @property
    def rate(self) -> float:
        """User records per second."""
        return self.user_records / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"records": self.records, "user_records": self.user_records,
                "bytes": self.bytes, "calls": self.calls,
                "retried_entries": self.retried_entries, "retried_calls": self.retried_calls,
                "elapsed_s": round(self.elapsed_s, 3), "rate": round(self.rate, 1),
                "shards": dict(sorted(self.shards.items()))}


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ``ClientError`` (``HTTP<status>`` if it has none)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if not code and status:
            return f"HTTP{status}"
        return code
    return None


def is_connection_error(exc: BaseException) -> bool:
    """True for botocore connection / HTTP client errors (no response at all)."""
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError, HTTPClientError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, (BotoConnectionError, HTTPClientError))


class Sender:
    """Sends batches in order with retries; runs on one thread."""

    def __init__(self, client: Any, stream: str, stats: PutStats, *, max_attempts: int,
                 backoff_base_s: float, backoff_max_s: float,
                 progress: Callable[[PutStats], None] | None, sleep: Callable[[float], None],
                 lock: threading.Lock):
        self.client, self.stream, self.stats, self.lock = client, stream, stats, lock
        self.max_attempts, self.base, self.cap = max_attempts, backoff_base_s, backoff_max_s
        self.progress, self.sleep = progress, sleep
        self.rng = random.Random()

    def _backoff(self, attempt: int) -> None:
        # "Equal jitter": uniform in [step/2, step], step doubling up to the cap.
        step = min(self.cap, self.base * (2 ** attempt))
        self.sleep(step / 2 + self.rng.random() * step / 2)

    def send(self, entries: list[dict], users: list[int], nbytes: int) -> None:
        pending = list(range(len(entries)))
        attempt = 0
        while True:
            try:
                response = self.client.put_records(
                    StreamName=self.stream, Records=[entries[i] for i in pending])
            except Exception as exc:  # noqa: BLE001 - classified below
                code = error_code(exc)
                if code == "ResourceNotFoundException":
                    raise ConfigError(f"stream {self.stream!r} does not exist; create it with "
                                      f"`shardline create-stream --stream {self.stream} "
                                      f"--shards N`") from None
                retriable = is_connection_error(exc) or code in RETRIABLE_CODES or \
                    (code or "").startswith("HTTP5")
                if not retriable:
                    raise FatalError(f"PutRecords to {self.stream!r} failed: "
                                     f"{type(exc).__name__}: {exc}") from exc
                attempt += 1
                with self.lock:
                    self.stats.retried_calls += 1
                if attempt >= self.max_attempts:
                    cls = ThrottledError if code in RETRIABLE_CODES else ServiceUnavailable
                    raise cls(f"PutRecords to {self.stream!r} still failing after {attempt} "
                              f"tries: {type(exc).__name__}: {exc}") from exc
                log.warning("PutRecords failed (%s), retrying the whole call (try %d)",
                            code or type(exc).__name__, attempt + 1)
                self._backoff(attempt)
                continue
            failed: list[int] = []
            codes: collections.Counter = collections.Counter()
            ok_shards: collections.Counter = collections.Counter()
            ok_users = 0
            for i, result in zip(pending, response["Records"]):
                code = result.get("ErrorCode")
                if code:
                    failed.append(i)
                    codes[code] += 1
                else:
                    ok_users += users[i]
                    ok_shards[result["ShardId"]] += 1
            with self.lock:
                self.stats.calls += 1
                self.stats.records += len(pending) - len(failed)
                self.stats.user_records += ok_users
                self.stats.shards.update(ok_shards)
                if failed:
                    self.stats.retried_entries += len(failed)
            if not failed:
                break
            fatal = [c for c in codes if c not in RETRIABLE_CODES]
            if fatal:
                raise FatalError(f"PutRecords to {self.stream!r}: {len(failed)} entries "
                                 f"refused: {dict(codes)}")
            attempt += 1
            if attempt >= self.max_attempts:
                raise ThrottledError(f"PutRecords to {self.stream!r}: {len(failed)} entries "
                                     f"still failing after {attempt} tries: {dict(codes)}")
            log.debug("%d of %d entries failed (%s); retrying only those", len(failed),
                      len(pending), dict(codes))
            pending = failed
            self._backoff(attempt)
        with self.lock:
            self.stats.bytes += nbytes
            if self.progress is not None:
                self.progress(self.stats)


class Lane:
    """One sender thread with its own queue, for a fixed group of shards."""

    def __init__(self, sender: Sender, threaded: bool, name: str):
        self.sender = sender
        self.entries: list[dict] = []
        self.users: list[int] = []
        self.nbytes = 0
        self.first_t = 0.0
        self.failure: list[BaseException] = []
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.thread = threading.Thread(target=self._run, name=name, daemon=True) \
            if threaded else None
        if self.thread is not None:
            self.thread.start()

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.failure:
                continue  # drain after an error; the caller raises it
            try:
                self.sender.send(*item)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                self.failure.append(exc)

    def submit(self) -> None:
        item = (self.entries, self.users, self.nbytes)
        self.entries, self.users, self.nbytes = [], [], 0
        if self.thread is None:
            self.sender.send(*item)
            return
        while True:
            if self.failure:
                raise self.failure[0]
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join()

