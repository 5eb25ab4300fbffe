"""A producer process for the outage test: puts page views of one run at a rate, prints
``base <seq_base>`` once and ``durable <seq>`` whenever more events became durable
(stdout, flushed), then flushes, prints ``stats <json>`` and exits 0 (1 if the flush
timed out). Settings come from the environment (SHARDLINE_*).

    python -m tests.producer_child --run a --count 20000 --rate 300
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from shardline.producer.producer import Producer
from shardline.settings import load
from tests.producer_kit import page_views


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--flush-timeout", type=float, default=120)
    args = parser.parse_args()

    def on_sync(seq: int) -> None:
        sys.stdout.write(f"durable {seq}\n")
        sys.stdout.flush()

    producer = Producer.from_settings(load(), on_sync=on_sync)
    print(f"base {producer.seq_base}", flush=True)
    t0 = time.monotonic()
    for i, event in page_views(args.run, args.count):
        if not producer.put(event):
            print(f"dropped {i}", flush=True)
        delay = t0 + (i + 1) / args.rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    ok = producer.flush(args.flush_timeout)
    print("stats " + json.dumps(producer.stats()), flush=True)
    producer.close()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
