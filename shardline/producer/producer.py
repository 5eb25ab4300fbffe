"""``Producer``: what a web front end embeds to put events into Kinesis without waiting on it.

``put(event)`` JSON-encodes a dict (or takes bytes), appends it to an in-memory buffer
under a lock and returns: no I/O, no syscall, no metrics call. A background thread
(``shardline.producer.background.Pump``), started lazily by the first ``put`` of each
process, batches the buffer into PutRecords calls (≤ 500 records / 5 MiB, after
``linger_ms``), optionally KPL-aggregated per shard, sends them through the one
retry loop (``put_records.Sender``) on lane threads sharing one client, and, with a
spool directory, moves whatever Kinesis has not acknowledged within
``spool_after_ms`` to disk (``shardline.producer.spool``), to be sent oldest first
once Kinesis answers again, by this process or the next one to start.

Fork safety: ``os.register_at_fork(after_in_child=...)`` gives every live producer
in a forked child (gunicorn/uWSGI workers) fresh locks, an empty buffer, no thread
and no client; the child's first ``put`` starts its own thread and client. At
interpreter exit ``close()`` runs for every producer still open.
"""
from __future__ import annotations

import atexit
import bisect
import collections
import hashlib
import json
import os
import random
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Callable, Mapping, Required, TypedDict

import orjson

from shardline.kinesis import KinesisClient, ShardInfo
from shardline.logs import get_logger
from shardline.producer.config import ProducerConfig
from shardline.producer.kpl import Record
from shardline.producer.metrics import LATENCY_BUCKETS
from shardline.producer.put import MAX_RECORD_BYTES
from shardline.settings import Settings

if TYPE_CHECKING:
    from shardline.producer.background import Pump

log = get_logger("producer")

# orjson is ~15x faster than json here, but the bytes it returns hold ~4 KiB each when
# they are kept (measured: 200,000 page views of ~400 bytes held 785 MB, not 87):
# put() copies them into an exact-size object (~0.2 µs), so max_buffer_bytes bounds memory.
_ORJSON = orjson.dumps
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_BOUNDS_NS = [int(b * 1e9) for b in LATENCY_BUCKETS]
_LIVE: "weakref.WeakSet[Producer]" = weakref.WeakSet()
_ns = time.perf_counter_ns
_mono_ns = time.monotonic_ns


class ProducerStats(TypedDict, total=False):
    """``Producer.stats()``: this process's counts; the keys after ``seq_base`` are there once
    the background thread has started (the first ``put``)."""

    put: Required[int]
    dropped: Required[dict[str, int]]    # by reason
    buffered_bytes: Required[int]
    accepted_seq: Required[int]
    durable_seq: Required[int]
    acked_seq: Required[int]
    seq_base: Required[int]
    sent: int
    records: int
    calls: int
    bytes: int
    retried: int
    retried_calls: int
    spooled: int
    torn: int
    mode: str
    spool_bytes: int
    shards: dict[str, int]
    elapsed_s: float


class Producer:
    """Buffered, non-blocking Kinesis producer; see the module docstring and docs/producer.md.

    ``Producer("page-views", spool_dir="/var/spool/shardline")``, or
    ``Producer.from_settings(settings)``. ``client_factory()`` makes the Kinesis client
    (default: ``shardline.kinesis.kinesis_client(settings)``), once per process.
    """

    def __init__(self, stream: str | None = None, *, settings: Settings | None = None,
                 client: KinesisClient = None,
                 client_factory: Callable[[], KinesisClient] | None = None,
                 config: ProducerConfig | None = None, metrics: bool = True,
                 on_sync: Callable[[int], None] | None = None,
                 shards: list[ShardInfo] | None = None, **options: Any):
        if settings is None and client is None and client_factory is None:
            from shardline.settings import load

            settings = load()
        if config is None:
            if settings is not None:
                config = ProducerConfig.from_settings(settings, **options) if stream is None \
                    else ProducerConfig.from_settings(settings, stream=stream, **options)
            else:
                config = ProducerConfig(stream=stream or "", **options).validate()
        self.config = config
        _check_environment(config, settings, client or client_factory)
        self.stream = config.stream
        self.settings = settings
        self._client = client
        self._prepared = False  # self._client made by prepare(), not given by the caller
        self._client_pid = os.getpid()
        self._client_factory = client_factory
        self.metrics = metrics
        self.on_sync = on_sync  # called on the background thread with durable_seq
        self.initial_shards = shards  # ShardInfo list known already (else ListShards)
        self._max_buffer = config.max_buffer_bytes
        self._policy = config.policy
        self._block_s = config.block_timeout_ms / 1000
        self._closed = False
        self._init_state()
        _LIVE.add(self)

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> "Producer":
        return cls(settings=settings, **options)

    def prepare(self) -> "Producer":
        """Do the one-time start-up work now rather than behind the first requests.

        Imports the background thread's modules and makes the Kinesis client: a botocore
        client is 0.3-0.8 s of CPU, most of it holding the GIL, which the first page views
        of every worker would otherwise wait behind. Call it where the producer is made
        (at import of a ``--preload``ed app, in the gunicorn master): a forked worker takes
        the client over unused, since no connection has been opened through it.
        """
        import shardline.producer.background  # noqa: F401 - imported now, not in a request

        if self.metrics:
            import shardline.producer.metrics  # noqa: F401
        with self._lock:
            if self._client is None and self._thread is None:
                self._client = self._make_client()
                self._client_pid, self._prepared = os.getpid(), True
        return self

    def _init_state(self) -> None:
        """Everything a process owns alone; a forked child starts again from here."""
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._progress = threading.Condition(threading.Lock())
        self._buf: collections.deque[Record] = collections.deque()
        self._held = 0            # bytes in memory: buffer, lanes' pending, in flight
        self._waiting = 0         # put() calls waiting for room
        # Sequence numbers grow across restarts (spooled records keep theirs).
        self._seq_base = time.time_ns()
        self._seq = self._seq_base
        self.n_put = 0
        self.dropped: collections.Counter[str] = collections.Counter()
        self.lat_buckets = [0] * (len(_BOUNDS_NS) + 1)
        self.lat_sum_ns = 0
        self._spill_now = False
        self._flush_to = 0
        self._pump: Pump | None = None
        self._thread: threading.Thread | None = None
        # Published by the background thread (plain attribute reads are atomic).
        self.durable_seq = self._seq   # every record <= this is acked, fsynced or dropped
        self.acked_seq = self._seq     # every record <= this is acked by Kinesis or dropped

    # -- the hot path ---------------------------------------------------------

    def put(self, event: Mapping[str, object] | bytes, partition_key: str | None = None
            ) -> bool:
        """Queue one event; True if accepted, False if dropped (counted, by the policy).

        A dict is JSON-encoded (compact, UTF-8) and its ``session_id`` is the default
        partition key; bytes are sent as they are. Returns at once unless the buffer
        is full and the policy is ``block``/``spill`` (then it waits at most
        ``block_timeout_ms``). Raises TypeError for anything else or an unencodable dict.
        """
        t0 = _ns()
        if type(event) is dict:
            try:
                data = bytes(bytearray(_ORJSON(event)))  # no GC-tracked temporary
            except TypeError:
                data = _encode_slowly(event)
            key = partition_key or event.get("session_id")
        elif isinstance(event, (bytes, bytearray, memoryview)):
            data = bytes(event)
            key = partition_key
        else:
            raise TypeError(f"put() takes a dict or bytes, not {type(event).__name__}")
        if not key:
            key = "%032x" % random.getrandbits(128)
        elif type(key) is not str:
            key = str(key)
        if len(key) > 256:  # Kinesis: 1-256 characters
            key = hashlib.md5(key.encode("utf-8")).hexdigest()
        size = len(data) + len(key)
        if size > MAX_RECORD_BYTES:
            with self._lock:
                self.dropped["too_large"] += 1
            return False
        with self._lock:
            if self._closed:
                self.dropped["closed"] += 1
                return False
            if self._thread is None:
                self._start_locked()
            if self._held + size > self._max_buffer and not self._make_room(size):
                return False
            self._seq += 1
            self._buf.append((self._seq, _mono_ns(), key, data))
            self._held += size
            self.n_put += 1
            if len(self._buf) == 500:
                self._wake.set()
            dt = _ns() - t0
            self.lat_buckets[bisect.bisect_left(_BOUNDS_NS, dt)] += 1
            self.lat_sum_ns += dt
        return True

    def _make_room(self, size: int) -> bool:
        """The buffer is full (lock held): apply the policy; False = dropped and counted."""
        if self._policy == "drop":
            self.dropped["buffer_full"] += 1
            return False
        if self._policy == "spill":
            self._spill_now = True
            self._wake.set()
        deadline = time.monotonic() + self._block_s
        self._waiting += 1
        try:
            while self._held + size > self._max_buffer:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    self.dropped["block_timeout" if self._policy == "block"
                                 else "spool_behind"] += 1
                    return False
                self._room.wait(left)
        finally:
            self._waiting -= 1
        return True

    # -- background thread ----------------------------------------------------

    def _start_locked(self) -> None:
        from shardline.producer.background import Pump

        self._pump = Pump(self)
        self._thread = threading.Thread(target=self._pump.run, daemon=True,
                                        name=f"shardline-producer-{self.stream}")
        self._thread.start()

    def _make_client(self) -> KinesisClient:
        if self._client is not None and (self._client_pid == os.getpid() or self._prepared):
            return self._client  # this process's, or prepare()'s that nobody has used yet
        if self._client_factory is not None:
            return self._client_factory()
        if self._client is not None:
            return self._client  # a client given by the caller (tests): used as it is
        from shardline.kinesis import kinesis_client

        assert self.settings is not None  # __init__ loads them when there is no client
        return kinesis_client(self.settings)

    def _take(self) -> tuple[list[Record], bool]:
        """(records, spill requested) taken from the buffer; called by the pump."""
        with self._lock:
            if not self._buf:
                spill, self._spill_now = self._spill_now, False
                return [], spill
            records = list(self._buf)
            self._buf.clear()
            spill, self._spill_now = self._spill_now, False
            return records, spill

    def _release(self, nbytes: int) -> None:
        with self._lock:
            self._held -= nbytes
            if self._waiting:
                self._room.notify_all()

    def _published(self) -> None:
        with self._progress:
            self._progress.notify_all()

    # -- flush / close / fork ---------------------------------------------------

    @property
    def accepted_seq(self) -> int:
        """Sequence number of the last accepted event (the first of this process is
        ``seq_base + 1``)."""
        return self._seq

    @property
    def seq_base(self) -> int:
        return self._seq_base

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event accepted before the call reached Kinesis (or was dropped
        by the policy); False if ``timeout`` seconds passed first."""
        target = self._seq
        if self._thread is None or self.acked_seq >= target:
            return True
        self._flush_to = max(self._flush_to, target)
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._progress:
            while self.acked_seq < target:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                if self._thread is None or not self._thread.is_alive():
                    return self.acked_seq >= target
                self._progress.wait(0.5 if left is None else min(left, 0.5))
        return True

    def close(self, timeout: float | None = None) -> bool:
        """Send what is left (up to ``timeout``, default ``close_timeout_s``), then stop.

        What Kinesis did not take in time goes to the spool (sent by the next start) or,
        without one, is counted as dropped (reason ``close``) and logged. True if
        everything was sent."""
        if self._closed:
            return True
        timeout = self.config.close_timeout_s if timeout is None else timeout
        sent = self.flush(timeout)
        with self._lock:
            self._closed = True
            self._room.notify_all()
        if self._thread is not None and self._pump is not None:
            self._pump.stop()
            self._wake.set()
            self._thread.join(max(5.0, timeout))
        return sent

    def stats(self) -> ProducerStats:
        """Counts of this process: put, sent, retried, spooled, dropped (by reason), ..."""
        pump = self._pump
        out: ProducerStats = {"put": self.n_put, "dropped": dict(self.dropped),
                               "buffered_bytes": self._held,
                               "accepted_seq": self._seq, "durable_seq": self.durable_seq,
                               "acked_seq": self.acked_seq, "seq_base": self._seq_base}
        if pump is not None:
            out = {**out, **pump.counts()}
        return out

    def _after_fork_in_child(self) -> None:
        if self._pump is not None:
            self._pump.forget_after_fork()
            if self._prepared:  # the parent has sent through it: its connections are the parent's
                self._client, self._prepared = None, False
        self._init_state()


def _encode_slowly(event: Mapping[str, object]) -> bytes:
    """What orjson refuses but ``json`` encodes (keys that are not strings, integers
    beyond 64 bits), the way ``json`` does; TypeError naming the problem otherwise."""
    try:
        return _JSON(event).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise TypeError(f"put(): the event cannot be JSON-encoded: {exc}") from None


def _check_environment(config: ProducerConfig, settings: Settings | None,
                       client: object) -> None:
    """Fail at start, naming the key, for what would otherwise only kill the thread later."""
    from shardline.errors import ConfigError

    if config.spool_dir:
        try:
            os.makedirs(config.spool_dir, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"producer.spool_dir {config.spool_dir!r}: {exc.strerror}") \
                from None
        if not os.access(config.spool_dir, os.W_OK | os.X_OK):
            raise ConfigError(f"producer.spool_dir {config.spool_dir!r} is not writable")
    if client is None and settings is not None and not settings.aws.region:
        import botocore.session

        if not botocore.session.Session().get_config_variable("region"):
            raise ConfigError("aws.region is not set and the AWS chain has no region "
                              "(SHARDLINE_AWS_REGION or AWS_DEFAULT_REGION)")


def _after_fork_in_child() -> None:
    for producer in list(_LIVE):
        producer._after_fork_in_child()


def _close_all() -> None:
    for producer in list(_LIVE):
        try:
            producer.close()
        except Exception:  # noqa: BLE001 - exiting anyway; say what happened
            log.exception("closing the producer for %s at exit failed", producer.stream)


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all)
