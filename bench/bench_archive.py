"""Reprocess source throughput: the raw archive in S3 beside Kinesis, the same records.

    .venv/bin/python bench/bench_archive.py [--records 50000] [--shards 2] [--repeat 3]

One run fills a stream on kinesalite with ``--records`` page views (the producer's event
generator, ~330 bytes each) and writes the same records to the archive the way stage
workers do (batches of ``consumer.batch_max_records``, ``layout.archive_key``, gzip'd
``codec.encode``) in moto's S3. Then, in the same run, each source as ``shardline
reprocess`` reads it, to the last record, in this process:

- ``kinesis_2MBps``: ``reprocess_sources.kinesis_batches`` (the consumer's ShardReader with
  its default pacing: the AWS 2 MB/s per-shard read limit), shard after shard;
- ``kinesis_unpaced``: the same with the byte pacer lifted (kinesalite does not enforce
  the limit; real Kinesis would throttle), still at most 5 GetRecords calls/s per shard;
- ``archive``: ``reprocess_sources.archive_batches`` (list the hours, GET + gunzip + decode
  with 16 GETs ahead, each record once).

records/s = records yielded / wall time. The script starts its own stack
(``shardline.devstack.up``) in a temporary directory. Medians of ``--repeat``.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shardline import codec, devstack, layout, settings as settings_mod  # noqa: E402
from shardline.consumers.reader import Position  # noqa: E402
from shardline.kinesis import kinesis_client  # noqa: E402
from shardline.ops import reprocess_sources as sources  # noqa: E402
from shardline.sample import events  # noqa: E402


def fill(kinesis, s3, bucket: str, prefix: str, stream: str, n: int, shards: int,
         batch_records: int) -> int:
    """The stream and its archive (what stage workers would have written); bytes of data."""
    kinesis.create_stream(StreamName=stream, ShardCount=shards)
    while kinesis.describe_stream_summary(StreamName=stream)[
            "StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
        time.sleep(0.1)
    gen = list(events.generate(n, 0.0, seed=5))
    for i in range(0, n, 500):
        resp = kinesis.put_records(StreamName=stream, Records=[
            {"Data": data, "PartitionKey": key} for _k, key, data in gen[i:i + 500]])
        assert not resp.get("FailedRecordCount")
    client = kinesis_client(settings_mod.load(path=os.devnull, env=dict(os.environ)),
                            raw_timestamps=True)
    for shard in [s["ShardId"] for s in kinesis.list_shards(StreamName=stream)["Shards"]]:
        for batch in sources.kinesis_batches(client, stream, shard, Position("TRIM_HORIZON"),
                                             unpaced(batch_records)):
            s3.put_object(Bucket=bucket, Key=layout.archive_key(prefix, batch),
                          Body=gzip.compress(codec.encode(batch), compresslevel=2, mtime=0))
    return sum(len(d) for _k, _key, d in gen)


def unpaced(batch_records: int, paced: bool = False):
    s = settings_mod.Settings().replace(**{
        "consumer.batch_max_records": str(batch_records),
        **({} if paced else {"consumer.max_bytes_per_s": "1000000000"})})
    return s.consumer


def timed(batches) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = sum(len(b.records) for b in batches)
    return n / (time.perf_counter() - t0), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--batch-records", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    stack = devstack.up(tmp / "stack")
    try:
        os.environ.update(stack.env())
        kinesis, s3 = stack.client("kinesis"), stack.client("s3")
        stream, prefix = f"bench-{uuid.uuid4().hex[:6]}", f"bench/{uuid.uuid4().hex[:6]}"
        t0 = time.perf_counter()
        size = fill(kinesis, s3, stack.bucket, prefix, stream, args.records, args.shards,
                    args.batch_records)
        print(f"filled {args.records} records ({size / args.records:.0f} bytes each) on "
              f"{args.shards} shards and their archive in {time.perf_counter() - t0:.1f}s",
              flush=True)
        client = kinesis_client(settings_mod.load(path=os.devnull, env=dict(os.environ)),
                                raw_timestamps=True)
        shards = [s["ShardId"] for s in kinesis.list_shards(StreamName=stream)["Shards"]]

        def from_kinesis(paced: bool):
            cs = unpaced(args.batch_records, paced)
            for shard in shards:
                yield from sources.kinesis_batches(client, stream, shard,
                                                   Position("TRIM_HORIZON"), cs)

        rows: dict[str, list[float]] = {"kinesis_2MBps": [], "kinesis_unpaced": [],
                                        "archive": []}
        for rep in range(args.repeat):
            for name, make in (("kinesis_unpaced", lambda: from_kinesis(False)),
                               ("kinesis_2MBps", lambda: from_kinesis(True)),
                               ("archive", lambda: sources.archive_batches(
                                   s3, stack.bucket, prefix, stream))):
                rate, n = timed(make())
                assert n == args.records, (name, n)
                rows[name].append(rate)
            print(f"run {rep + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rows.items()),
                  flush=True)
        med = {k: statistics.median(v) for k, v in rows.items()}
        print(f"\nmedian of {args.repeat}                 records/s")
        print(f"  kinesis, 2 MB/s/shard pacing   {med['kinesis_2MBps']:>10,.0f}")
        print(f"  kinesis, pacer lifted          {med['kinesis_unpaced']:>10,.0f}")
        print(f"  archive (S3, 16 GETs ahead)    {med['archive']:>10,.0f}   "
              f"{med['archive'] / med['kinesis_unpaced']:.1f}x unpaced kinesis, "
              f"{med['archive'] / med['kinesis_2MBps']:.1f}x paced")
        out = ROOT / "bench" / "results"
        out.mkdir(exist_ok=True)
        (out / "bench_archive.json").write_text(json.dumps(
            {"args": vars(args), "runs": rows, "median": med}, indent=2))
    finally:
        devstack.down(tmp / "stack")


if __name__ == "__main__":
    main()
