"""``shardline produce``: put sample page views into a stream, with progress shown.

Events come from ``shardline.sample.events`` (some malformed, some put a second time,
byte for byte, like a retrying producer would) and go through the same
``shardline.producer.Producer`` a web front end embeds (``put`` per event, paced to
``--rate``, optionally KPL-aggregated and spooled), so sample traffic exercises it.
A progress bar goes to stderr and a summary (optionally JSON, and the good
event_ids) at the end; the first Ctrl-C finishes the records already made.
The stream itself comes from ``shardline create-stream`` (``shardline.ops.create_stream``).
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterable, Iterator, TypeVar

from shardline.cli.kit import command_parser, load_settings
from shardline.errors import ConfigError, ServiceUnavailable
from shardline.exitcodes import ExitCode
from shardline.kinesis import error_code, kinesis_client, open_shards
from shardline.logs import get_logger
from shardline.sample import events
from shardline.producer.producer import Producer

log = get_logger("producer")
T = TypeVar("T")


class _Progress:
    """A one-line ``\\r`` bar on stderr, redrawn at most 5 times a second."""

    def __init__(self, total: int, stream: Any = sys.stderr, delay_s: float = 0.5):
        self.total, self.stream = total, stream
        self.t0 = time.monotonic()
        self.delay_s = delay_s
        self.last = 0.0
        self.drawn = False

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if now - self.t0 < self.delay_s or now - self.last < 0.2:
            return
        self.last = now
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


def _until(stop: threading.Event, source: Iterable[T]) -> Iterator[T]:
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


def main(argv: list[str]) -> int:
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
    parser.add_argument("--click-fraction", type=_fraction, default=0.0,
                        help="share of the good events sent as click events ({\"type\": "
                             "\"click\", ...}: the clicks example's table, docs/tables.md)")
    parser.add_argument("--click-ids-file", metavar="FILE",
                        help="write the event_id of every click event, one per line")
    parser.add_argument("--seed", type=int, help="random seed: same seed (and --start-time) "
                                                 "gives the same events")
    parser.add_argument("--start-time", type=_timestamp,
                        help="occurred_at of the first event (default: now)")
    parser.add_argument("--kpl-aggregate", type=int, default=0, metavar="K",
                        help="pack K user records per Kinesis record (KPL format); 0/1 = off")
    parser.add_argument("--senders", type=int, default=2, metavar="N",
                        help="parallel PutRecords threads, each owning a group of shards "
                             "(default 2)")
    parser.add_argument("--spool-dir", metavar="DIR",
                        help="spool what Kinesis does not take in time to DIR (default: "
                             "setting producer.spool_dir; none = memory only)")
    parser.add_argument("--flush-timeout", type=_non_negative(float), default=120.0,
                        metavar="S", help="exit 69 if Kinesis has not taken everything S "
                                          "seconds after the last event (default 120)")
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
    client = kinesis_client(settings)

    spacing = 1.0 / args.rate if args.rate > 0 else 0.0001
    gen = events.generate(args.count or None, args.bad_fraction, args.seed,
                          start=args.start_time, spacing_s=spacing,
                          bad_kinds=bad_kinds or None,
                          keep_ids=bool(args.ids_file or args.click_ids_file),
                          click_fraction=args.click_fraction)
    extra: collections.Counter[str] = collections.Counter()
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
                    "grouped by shard", stream, error_code(exc) or type(exc).__name__)
        shards = []
    # A command line may wait for Kinesis (backpressure) where a web request must not.
    producer = Producer(settings=settings, client=client, shards=shards, metrics=False,
                        lanes=args.senders, aggregate=args.kpl_aggregate > 1,
                        aggregate_max_records=max(args.kpl_aggregate, 0),
                        spool_dir=args.spool_dir, on_full="block",
                        block_timeout_ms=args.flush_timeout * 1000,
                        linger_ms=100 if args.rate > 0 else 20)
    source = events.with_duplicates(_until(stop, gen), args.duplicate_fraction, args.seed, extra)
    old_handlers = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}

    show = not args.quiet and (args.progress or sys.stderr.isatty())
    bar = _Progress(args.count + int(args.count * args.duplicate_fraction)) if show else None
    t0 = time.monotonic()
    put = 0
    try:
        for _, key, data in source:
            if not producer.put(data, key):
                raise ServiceUnavailable(f"Kinesis stream {stream} took nothing for "
                                         f"{args.flush_timeout:.0f} s (producer: "
                                         f"{producer.stats()['dropped']})")
            put += 1
            if args.rate > 0 and put % 16 == 0:
                delay = t0 + put / args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            if bar is not None and put % 256 == 0:
                bar(producer.stats()["sent"])
        if not producer.flush(args.flush_timeout):
            raise ServiceUnavailable(f"Kinesis stream {stream} has not taken every record "
                                     f"{args.flush_timeout:.0f} s after the last one")
    finally:
        producer.close(0)
        if bar is not None:
            bar.close()
        for s, handler in old_handlers.items():
            signal.signal(s, handler)
    stats = producer.stats()
    elapsed = time.monotonic() - t0

    counts = gen.counts
    bad = {k: counts[k] for k in events.BAD_KINDS if counts[k]}
    summary = {
        "stream": stream,
        "generated": sum(counts.values()),
        "good": counts[events.GOOD],
        "clicks": counts[events.CLICK],
        "bad": sum(bad.values()),
        "bad_kinds": bad,
        "duplicates": extra["duplicates"],
        "user_records_put": stats["sent"],
        "kinesis_records_put": stats["records"],
        "kpl_aggregate": args.kpl_aggregate if args.kpl_aggregate > 1 else 0,
        "bytes": stats["bytes"],
        "calls": stats["calls"],
        "retried_entries": stats["retried"],
        "retried_calls": stats["retried_calls"],
        "spooled": stats["spooled"],
        "dropped": sum(stats["dropped"].values()),
        "elapsed_s": round(elapsed, 3),
        "rate": round(stats["sent"] / elapsed, 1) if elapsed > 0 else 0.0,
        "shards": stats["shards"],
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
    if args.click_ids_file:
        with open(args.click_ids_file, "w", encoding="utf-8") as fh:
            fh.writelines(f"{event_id}\n" for event_id in dict.fromkeys(gen.click_ids))
    if args.summary_json:
        with open(args.summary_json, "w", encoding="utf-8") as fh:
            json.dump(summary, fh, indent=2)
            fh.write("\n")
    _print_summary(summary, args.quiet)
    return ExitCode.OK


def _print_summary(s: dict[str, Any], quiet: bool) -> None:
    clicks = f"{s['clicks']:,} clicks, " if s.get("clicks") else ""
    head = (f"produced {s['generated']:,} events to {s['stream']}: {s['good']:,} good, {clicks}"
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
