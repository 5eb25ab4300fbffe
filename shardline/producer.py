"""``shardline create-stream`` and ``shardline produce``: a stream and sample traffic for it.

``put_events`` is the library call (CLI, tests, benchmarks): PutRecords in calls of
up to 500 records / 5 MiB, retrying only the entries a call reports as failed,
with capped exponential backoff, paced to a rate in records per second.
Sender threads ("lanes", two by default) each own a fixed group of shards, so
HTTP calls overlap with each other and with building the next batch while each
shard's records are still put by one thread, in order (a session's records reach
its shard in order, except that a retried entry lands after the entries of its
call that succeeded, as with any Kinesis producer).
"""
from __future__ import annotations

import argparse
import bisect
import collections
import datetime as dt
import hashlib
import heapq
import json
import queue
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from shardline import clients, events
from shardline.cli import command_parser, load_settings
from shardline.errors import ConfigError, FatalError, ServiceUnavailable, ThrottledError
from shardline.exitcodes import ExitCode
from shardline.logs import get_logger

MAX_BATCH_RECORDS = 500                 # PutRecords limit
MAX_BATCH_BYTES = 5 * 1024 * 1024       # PutRecords limit: data + partition keys
MAX_RECORD_BYTES = 1024 * 1024          # one record: data + partition key
AGG_MAX_BYTES = 1_000_000               # an aggregated record stays under 1 MiB with its key

# Per-entry / per-call errors worth another try; anything else is fatal.
RETRIABLE_CODES = {"ProvisionedThroughputExceededException", "InternalFailure",
                   "ServiceUnavailable", "ServiceUnavailableException", "Throttling",
                   "ThrottlingException", "LimitExceededException", "RequestTimeout",
                   "KMSThrottlingException", "RequestLimitExceeded", "SlowDown"}

log = get_logger("producer")


# ---------------------------------------------------------------------------
# put_events
# ---------------------------------------------------------------------------

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


def _error_code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if not code and status:
            return f"HTTP{status}"
        return code
    return None


def _is_connection_error(exc: BaseException) -> bool:
    try:
        from botocore.exceptions import ConnectionError as BotoConnectionError, HTTPClientError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, (BotoConnectionError, HTTPClientError))


class _Sender:
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
                code = _error_code(exc)
                if code == "ResourceNotFoundException":
                    raise ConfigError(f"stream {self.stream!r} does not exist; create it with "
                                      f"`shardline create-stream --stream {self.stream} "
                                      f"--shards N`") from None
                retriable = _is_connection_error(exc) or code in RETRIABLE_CODES or \
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


class _Lane:
    """One sender thread with its own queue, for a fixed group of shards."""

    def __init__(self, sender: _Sender, threaded: bool, name: str):
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


def put_events(client: Any, stream: str, records: Iterable[tuple], rate: float = 0,
               progress: Callable[[PutStats], None] | None = None, *,
               senders: int = 2, shards: list[dict] | None = None,
               max_attempts: int = 12, backoff_base_s: float = 0.05,
               backoff_max_s: float = 5.0, threaded: bool = True,
               sleep: Callable[[float], None] = time.sleep) -> PutStats:
    """Put ``records`` into ``stream``; return what was sent.

    ``records`` yields ``(partition_key, data)`` or ``(partition_key, data, user_records)``
    (the count an aggregated record carries, for pacing and stats). ``rate`` is user
    records per second (0: as fast as possible). ``progress(stats)`` is called after
    every call.

    With ``senders`` > 1 the open shards (``shards``, else ListShards) are split into
    that many groups, each with its own sender thread: calls overlap, while each
    shard's records are still put by one thread, in order. ``threaded=False`` sends
    from the calling thread (one lane).

    Raises ``ConfigError`` (no such stream), ``ThrottledError`` / ``ServiceUnavailable``
    (still failing after ``max_attempts``), ``FatalError`` (refused for good, e.g. a
    record over 1 MiB).
    """
    stats = PutStats()
    lock = threading.Lock()
    starts: list[int] = []
    if threaded and senders > 1:
        if shards is None:
            try:
                shards = open_shards(client, stream)
            except ConfigError:
                raise
            except Exception as exc:  # noqa: BLE001 - e.g. no kinesis:ListShards permission
                log.warning("cannot list the shards of %s (%s): using one sender", stream,
                            _error_code(exc) or type(exc).__name__)
                shards = []
        if len(shards) > 1:
            starts = [int(sh["HashKeyRange"]["StartingHashKey"]) for sh in shards]
    n_lanes = min(senders, len(starts)) if starts else 1
    lanes = [_Lane(_Sender(client, stream, stats, max_attempts=max_attempts,
                           backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s,
                           progress=progress, sleep=sleep, lock=lock),
                   threaded, f"put-records-{i}") for i in range(n_lanes)]
    batch_max = MAX_BATCH_RECORDS if rate <= 0 else \
        max(1, min(MAX_BATCH_RECORDS, int(rate / 10 / n_lanes)))
    t0 = time.monotonic()
    queued = 0  # user records handed to the senders so far

    def dispatch(lane: _Lane) -> None:
        nonlocal queued
        if rate > 0:
            delay = t0 + queued / rate - time.monotonic()
            if delay > 0:
                sleep(delay)
        queued += sum(lane.users)
        lane.submit()

    md5 = hashlib.md5
    try:
        for item in records:
            key, data = item[0], item[1]
            n = item[2] if len(item) > 2 else 1
            kb = key.encode("utf-8")
            size = len(data) + len(kb)
            if size > MAX_RECORD_BYTES:
                raise FatalError(f"a record of {size} bytes is over the Kinesis limit of "
                                 f"{MAX_RECORD_BYTES} (data + partition key)")
            if n_lanes == 1:
                lane = lanes[0]
            else:
                h = int.from_bytes(md5(kb).digest(), "big")
                lane = lanes[max(0, bisect.bisect_right(starts, h) - 1) % n_lanes]
            if lane.entries and (len(lane.entries) >= batch_max
                                 or lane.nbytes + size > MAX_BATCH_BYTES
                                 or (rate > 0 and time.monotonic() - lane.first_t > 0.5)):
                dispatch(lane)
            if not lane.entries:
                lane.first_t = time.monotonic()
            lane.entries.append({"Data": data, "PartitionKey": key})
            lane.users.append(n)
            lane.nbytes += size
        for lane in lanes:
            if lane.entries:
                dispatch(lane)
    finally:
        for lane in lanes:
            lane.close()
        stats.elapsed_s = time.monotonic() - t0
    for lane in lanes:
        if lane.failure:
            raise lane.failure[0]
    return stats


# ---------------------------------------------------------------------------
# KPL aggregation
# ---------------------------------------------------------------------------

def open_shards(client: Any, stream: str) -> list[dict]:
    """The stream's open shards (no EndingSequenceNumber), in hash-key order."""
    shards: list[dict] = []
    kwargs: dict[str, Any] = {"StreamName": stream}
    while True:
        try:
            page = client.list_shards(**kwargs)
        except Exception as exc:  # noqa: BLE001
            if _error_code(exc) == "ResourceNotFoundException":
                raise ConfigError(f"stream {stream!r} does not exist; create it with "
                                  f"`shardline create-stream --stream {stream} --shards N`") \
                    from None
            if _is_connection_error(exc):
                raise ServiceUnavailable(f"Kinesis ListShards: {exc}") from None
            raise
        shards += page["Shards"]
        token = page.get("NextToken")
        if not token:
            break
        kwargs = {"NextToken": token}
    shards = [s for s in shards if "EndingSequenceNumber" not in s["SequenceNumberRange"]]
    return sorted(shards, key=lambda s: int(s["HashKeyRange"]["StartingHashKey"]))


def aggregate(records: Iterable[tuple[str, bytes]], per_record: int,
              shards: list[dict]) -> Iterator[tuple[str, bytes, int]]:
    """Pack up to ``per_record`` user records per Kinesis record (KPL aggregated format).

    Like the KPL, user records are grouped by the shard their partition key maps to,
    and each aggregated record is put with its first user record's key, so it lands
    on that shard and one session's records stay in order. Yields
    ``(partition_key, data, user_records)``.
    """
    from aws_kinesis_agg.aggregator import RecordAggregator

    starts = [int(s["HashKeyRange"]["StartingHashKey"]) for s in shards] or [0]
    buffers: dict[int, Any] = {}

    def emit(agg_record: Any) -> tuple[str, bytes, int]:
        key, _, data = agg_record.get_contents()
        return key, data, agg_record.get_num_user_records()

    for key, data in records:
        h = int.from_bytes(hashlib.md5(key.encode("utf-8")).digest(), "big")
        slot = max(0, bisect.bisect_right(starts, h) - 1)
        agg = buffers.get(slot)
        if agg is None:
            agg = buffers[slot] = RecordAggregator(max_size=AGG_MAX_BYTES)
        full = agg.add_user_record(key, data)
        if full is not None:
            yield emit(full)
        if agg.get_num_user_records() >= per_record:
            yield emit(agg.clear_and_get())
    for slot in sorted(buffers):
        rest = buffers[slot].clear_and_get()
        if rest is not None:
            yield emit(rest)


# ---------------------------------------------------------------------------
# produce
# ---------------------------------------------------------------------------

class _Progress:
    """A one-line ``\\r`` bar on stderr, redrawn at most 5 times a second."""

    def __init__(self, total: int, stream: Any = sys.stderr, delay_s: float = 0.5):
        self.total, self.stream = total, stream
        self.t0 = time.monotonic()
        self.delay_s = delay_s
        self.last = 0.0
        self.drawn = False

    def __call__(self, stats: PutStats) -> None:
        now = time.monotonic()
        if now - self.t0 < self.delay_s or now - self.last < 0.2:
            return
        self.last = now
        done = stats.user_records
        rate = done / (now - self.t0)
        if self.total:
            frac = min(1.0, done / self.total)
            bar = "#" * int(frac * 30)
            line = f"[{bar:<30}] {frac:4.0%} {done:,}/{self.total:,}  {rate:,.0f}/s"
        else:
            line = f"{done:,} records  {rate:,.0f}/s"
        self.stream.write("\r" + line + " " * 4)
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _with_duplicates(source: Iterable[tuple[str, str, bytes]], fraction: float,
                     seed: int | None, counts: collections.Counter
                     ) -> Iterator[tuple[str, str, bytes]]:
    """Re-emit some good records, byte for byte, 1-2,000 records later (a producer retry)."""
    if fraction <= 0:
        yield from source
        return
    rng = random.Random(f"duplicates-{seed}")
    later: list[tuple[int, int, str, bytes]] = []
    i = 0
    for kind, key, data in source:
        while later and later[0][0] <= i:
            _, _, dkey, ddata = heapq.heappop(later)
            counts["duplicates"] += 1
            yield "duplicate", dkey, ddata
        yield kind, key, data
        if kind == events.GOOD and rng.random() < fraction:
            heapq.heappush(later, (i + rng.randint(1, 2000), i, key, data))
        i += 1
    while later:
        _, _, dkey, ddata = heapq.heappop(later)
        counts["duplicates"] += 1
        yield "duplicate", dkey, ddata


def _until(stop: threading.Event, source: Iterable) -> Iterator:
    for item in source:
        yield item
        if stop.is_set():
            return


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError("must be between 0 and 1")
    return value


def _non_negative(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError("must be >= 0")
        return value
    return parse


def _timestamp(text: str) -> dt.datetime:
    try:
        value = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected ISO-8601, e.g. 2026-11-26T06:30:00+00:00") \
            from None
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def produce_main(argv: list[str]) -> int:
    parser = command_parser("produce", "Put sample page-view events (some malformed, some "
                                       "duplicated) into a Kinesis stream.")
    parser.add_argument("--stream", help="stream name (default: setting kinesis.stream)")
    parser.add_argument("--rate", type=_non_negative(float), default=0.0,
                        help="events per second; 0 = as fast as possible (default)")
    parser.add_argument("--count", type=_non_negative(int), default=1000,
                        help="events to generate (default 1000); 0 = until Ctrl-C")
    parser.add_argument("--bad-fraction", type=_fraction, default=0.0,
                        help="share of malformed records, 0-1 (default 0)")
    parser.add_argument("--bad-kinds", default="",
                        help=f"comma list of malformed kinds to use (default all: "
                             f"{','.join(events.BAD_KINDS)})")
    parser.add_argument("--duplicate-fraction", type=_fraction, default=0.0,
                        help="share of good events put a second time, same bytes (default 0)")
    parser.add_argument("--seed", type=int, help="random seed: same seed (and --start-time) "
                                                 "gives the same events")
    parser.add_argument("--start-time", type=_timestamp,
                        help="occurred_at of the first event (default: now)")
    parser.add_argument("--kpl-aggregate", type=int, default=0, metavar="K",
                        help="pack K user records per Kinesis record (KPL format); 0/1 = off")
    parser.add_argument("--senders", type=int, default=2, metavar="N",
                        help="parallel PutRecords threads, each owning a group of shards "
                             "(default 2)")
    parser.add_argument("--summary-json", metavar="FILE", help="write the counts as JSON")
    parser.add_argument("--ids-file", metavar="FILE",
                        help="write the good event_ids, one per line, in put order")
    parser.add_argument("--progress", action="store_true",
                        help="show the progress bar even when stderr is not a terminal")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bar, and a one-line summary")
    args = parser.parse_args(argv)
    bad_kinds = [k.strip() for k in args.bad_kinds.split(",") if k.strip()]
    unknown = set(bad_kinds) - set(events.BAD_KINDS)
    if unknown:
        parser.error(f"--bad-kinds: unknown {', '.join(sorted(unknown))}; "
                     f"known: {', '.join(events.BAD_KINDS)}")
    if args.senders < 1:
        parser.error("--senders must be at least 1")
    if args.kpl_aggregate < 0:
        parser.error("--kpl-aggregate must be >= 0")
    settings = load_settings(args, **{"kinesis.stream": args.stream})
    settings.require("kinesis.stream")
    stream = settings.kinesis.stream
    client = clients.kinesis_client(settings)

    spacing = 1.0 / args.rate if args.rate > 0 else 0.0001
    gen = events.generate(args.count or None, args.bad_fraction, args.seed,
                          start=args.start_time, spacing_s=spacing,
                          bad_kinds=bad_kinds or None, keep_ids=bool(args.ids_file))
    extra: collections.Counter = collections.Counter()
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print(f"\nshardline produce: {signal.Signals(signum).name}: finishing the records "
              f"already made (again to abort)", file=sys.stderr)

    try:
        shards = open_shards(client, stream)  # also: does the stream exist?
    except (ConfigError, ServiceUnavailable):
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. no kinesis:ListShards permission
        log.warning("cannot list the shards of %s (%s): one sender, KPL aggregates not "
                    "grouped by shard", stream, _error_code(exc) or type(exc).__name__)
        shards = []
    source = _with_duplicates(_until(stop, gen), args.duplicate_fraction, args.seed, extra)
    plain: Iterable[tuple] = ((key, data) for _, key, data in source)
    if args.kpl_aggregate > 1:
        plain = aggregate(plain, args.kpl_aggregate, shards)
    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    show = not args.quiet and (args.progress or sys.stderr.isatty())
    bar = _Progress(args.count + int(args.count * args.duplicate_fraction)) if show else None
    try:
        stats = put_events(client, stream, plain, rate=args.rate, progress=bar, shards=shards,
                           senders=args.senders)
    finally:
        if bar is not None:
            bar.close()
        for s, handler in old_handlers.items():
            signal.signal(s, handler)

    counts = gen.counts
    bad = {k: counts[k] for k in events.BAD_KINDS if counts[k]}
    summary = {
        "stream": stream,
        "generated": sum(counts.values()),
        "good": counts[events.GOOD],
        "bad": sum(bad.values()),
        "bad_kinds": bad,
        "duplicates": extra["duplicates"],
        "user_records_put": stats.user_records,
        "kinesis_records_put": stats.records,
        "kpl_aggregate": args.kpl_aggregate if args.kpl_aggregate > 1 else 0,
        "bytes": stats.bytes,
        "calls": stats.calls,
        "retried_entries": stats.retried_entries,
        "retried_calls": stats.retried_calls,
        "elapsed_s": round(stats.elapsed_s, 3),
        "rate": round(stats.rate, 1),
        "shards": dict(sorted(stats.shards.items())),
        "seed": args.seed,
        "start_time": gen.start.isoformat(),
        "interrupted": stop.is_set(),
        "ids_file": args.ids_file,
    }
    if args.ids_file:
        seen: set[str] = set()
        with open(args.ids_file, "w", encoding="utf-8") as fh:
            for event_id in gen.good_ids:
                if event_id not in seen:
                    seen.add(event_id)
                    fh.write(event_id + "\n")
    if args.summary_json:
        with open(args.summary_json, "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=2)
            fh.write("\n")
    _print_summary(summary, args.quiet)
    return ExitCode.OK


def _print_summary(s: dict, quiet: bool) -> None:
    head = (f"produced {s['generated']:,} events to {s['stream']}: {s['good']:,} good, "
            f"{s['bad']:,} bad, {s['duplicates']:,} duplicates; {s['user_records_put']:,} "
            f"records in {s['elapsed_s']:.2f} s ({s['rate']:,.0f}/s)")
    print(head)
    if quiet:
        return
    if s["bad_kinds"]:
        print("  bad: " + ", ".join(f"{k} {v:,}" for k, v in s["bad_kinds"].items()))
    agg = f" (KPL, {s['kpl_aggregate']} per record)" if s["kpl_aggregate"] else ""
    print(f"  kinesis: {s['kinesis_records_put']:,} records{agg}, {s['bytes'] / 1e6:,.1f} MB, "
          f"{s['calls']:,} PutRecords calls, {s['retried_entries']:,} entries retried, "
          f"{s['retried_calls']:,} calls retried")
    print("  shards: " + ", ".join(f"{k} {v:,}" for k, v in s["shards"].items()))
    if s["interrupted"]:
        print("  (stopped early by a signal)")


# ---------------------------------------------------------------------------
# create-stream
# ---------------------------------------------------------------------------

def create_stream_main(argv: list[str]) -> int:
    parser = command_parser("create-stream", "Create a Kinesis stream and wait until it is "
                                             "ACTIVE; harmless if it exists with the same "
                                             "shard count.")
    parser.add_argument("--stream", help="stream name (default: setting kinesis.stream)")
    parser.add_argument("--shards", type=int, default=1, help="shard count (default 1)")
    parser.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                        help="wait until ACTIVE and print the shard ids (default: on)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds to wait for ACTIVE (default 120)")
    args = parser.parse_args(argv)
    if args.shards < 1:
        parser.error("--shards must be at least 1")
    settings = load_settings(args, **{"kinesis.stream": args.stream})
    settings.require("kinesis.stream")
    stream = settings.kinesis.stream
    client = clients.kinesis_client(settings, botocore_retries=3)
    try:
        client.create_stream(StreamName=stream, ShardCount=args.shards)
        created = True
    except Exception as exc:  # noqa: BLE001
        if _error_code(exc) != "ResourceInUseException":
            if _is_connection_error(exc):
                raise ServiceUnavailable(f"Kinesis: {exc}") from None
            raise
        created = False
    if not args.wait:
        print(f"stream {stream}: {'creating' if created else 'already exists'} "
              f"({args.shards} shards requested)")
        return ExitCode.OK
    deadline = time.monotonic() + args.timeout
    delay = 0.05
    while True:
        summary = client.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]
        status = summary["StreamStatus"]
        if status == "ACTIVE":
            break
        if status == "DELETING":
            print(f"shardline create-stream: stream {stream} is being deleted; try again "
                  f"when it is gone", file=sys.stderr)
            return ExitCode.UNAVAILABLE
        if time.monotonic() > deadline:
            print(f"shardline create-stream: stream {stream} still {status} after "
                  f"{args.timeout:.0f} s", file=sys.stderr)
            return ExitCode.UNAVAILABLE
        time.sleep(delay)
        delay = min(delay * 2, 2.0)
    shards = open_shards(client, stream)
    if not created and len(shards) != args.shards:
        print(f"shardline create-stream: stream {stream} already exists with {len(shards)} "
              f"open shards, not {args.shards} (reshard it, or use another name)",
              file=sys.stderr)
        return ExitCode.CONFIG
    verb = "created" if created else "already exists"
    print(f"stream {stream} {verb}: {len(shards)} shards, ACTIVE")
    for shard in shards:
        print(shard["ShardId"])
    return ExitCode.OK
