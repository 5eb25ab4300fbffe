"""``shardline redrive --stream S [--since T] [--reason R]``: dead letters through the current
transform again.

A dead letter keeps the raw record (``data_b64``, its shard, position, partition key and
arrival time: ``rows.dead_letter``), so it can be staged again. The run gathers the stream's
dead letters (``--since``: those that arrived at/after T), one per position (a record
rejected by several runs has several), drops the positions an earlier redrive already
landed (its record, below), and submits the rest per shard, in position order, as stage
jobs with a redrive generation ``r<hash>``: keys of their own, loaded like any new batch
(plain dedup: a record accepted now lands once, and one whose event is already stored,
say by a reprocess, adds nothing). What the transform rejects again gets a dead letter with its
new reason; a later redrive with the same transform version skips it (and a job retry
finds its ledger entry: the generation hashes the version and the positions), so dead
letters are not duplicated; a new version sends it again.

Each run is recorded in ``{prefix}/redrive/{stream}/{generation}.json``: the positions
it landed and the ones still rejected, with the reason given.
"""
from __future__ import annotations

import base64
import gzip
import hashlib
import json
import time
from datetime import datetime, timezone
from typing import Any, Iterator

from shardline import codec, layout
from shardline.cli.kit import (add_stream_option, command_parser, load_settings,
                               parse_cli_timestamp, parse_command_args, usage_errors)
from shardline.exitcodes import ExitCode
from shardline.logs import get_logger
from shardline.positions import position
from shardline.records.ledger import REDRIVE_PREFIX
from shardline.workers.rows import DeadLetter

UTC = timezone.utc
# A dead letter's record: (shard id, ``position(sequence, sub-sequence)``).
RecordAt = tuple[str, tuple[int, str, int]]


def _objects(s3: Any, bucket: str, prefix: str) -> Iterator[str]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from (o["Key"] for o in page.get("Contents", []))


def _arrival_ms(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
               .timestamp() * 1000)


def dead_letters(s3: Any, bucket: str, prefix: str,
                 stream: str) -> dict[RecordAt, DeadLetter]:
    """(shard, position) -> the newest dead letter of that record (the last key listed
    wins: the same raw record whatever the run)."""
    out: dict[RecordAt, DeadLetter] = {}
    base = layout.dead_letter_prefix(prefix) + f"{stream}/"
    for key in sorted(_objects(s3, bucket, base)):
        body = gzip.decompress(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        for line in body.decode("utf-8").splitlines():
            d = json.loads(line)
            out[(d["shard_id"], position(d["sequence_number"], d["sub_sequence_number"]))] = d
    return out


def redriven_before(s3: Any, bucket: str, prefix: str, stream: str,
                    version: str) -> set[RecordAt]:
    """(shard, position) of every record an earlier redrive landed, or rejected with this
    same transform version (sending it again would only repeat its dead letter)."""
    done: set[RecordAt] = set()
    for key in _objects(s3, bucket, layout.redrive_record_key(prefix, stream)):
        record = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        done |= {(shard, position(seq, sub)) for shard, seq, sub in record["landed"]}
        if record.get("transform_version") == version:
            done |= {(shard, position(seq, sub)) for shard, seq, sub in record["rejected"]}
    return done


def batches(stream: str, letters: dict[RecordAt, DeadLetter],
            max_records: int) -> list[codec.Batch]:
    """Per shard, in position order, batches of the dead letters' raw records."""
    out = []
    for shard in sorted({s for s, _ in letters}):
        recs = [codec.Record(d["sequence_number"], int(d["sub_sequence_number"]),
                             d["partition_key"], base64.b64decode(d["data_b64"]),
                             _arrival_ms(d["arrival_time"]))
                for (s, _), d in sorted(letters.items()) if s == shard]
        out += [codec.Batch(stream, shard, recs[i:i + max_records])
                for i in range(0, len(recs), max_records)]
    return out


def generation_of(version: str, letters: dict[RecordAt, DeadLetter]) -> str:
    digest = hashlib.sha1(version.encode())
    for shard, pos in sorted(letters):
        digest.update(f"{shard}/{pos[1]}/{pos[2]};".encode())
    return REDRIVE_PREFIX + digest.hexdigest()[:16]


@usage_errors("redrive")
def main(argv: list[str]) -> int:
    parser = command_parser("redrive", "Send dead-lettered records through the current "
                                       "transform again; what it accepts now lands once.")
    add_stream_option(parser)
    parser.add_argument("--since", metavar="T", help="only records that arrived at/after T")
    parser.add_argument("--reason", default="", help="why (kept in the run's record)")
    args, code = parse_command_args(parser, argv)
    if args is None:
        return code
    since = parse_cli_timestamp(args.since) if args.since else None
    settings = load_settings(args, **{"kinesis.stream": args.stream})
    settings.require("kinesis.stream", "s3.bucket")
    stream, bucket, prefix = settings.kinesis.stream, settings.s3.bucket, settings.s3.prefix

    from shardline import clients, preflight
    from shardline.ops.reprocess import submit
    from shardline.workers.transform import table_transform, transform_version

    preflight.require(settings, preflight.CONTROL, preflight.BUCKET, preflight.GEARMAN)
    s3 = clients.s3_client(settings)
    version = transform_version(table_transform(settings, settings.worker.target_table))
    letters = dead_letters(s3, bucket, prefix, stream)
    done = redriven_before(s3, bucket, prefix, stream, version)
    todo = {k: d for k, d in letters.items() if k not in done
            and (since is None or _arrival_ms(d["arrival_time"]) >= since.timestamp() * 1000)}
    if not todo:
        print(f"redrive: no dead letters to send again ({len(letters)} in all, {len(done)} "
              f"landed by earlier redrives or rejected by this transform {version} already)")
        print(json.dumps({"sent": 0, "accepted": 0, "rejected": 0, "generation": None}))
        return ExitCode.OK
    generation = generation_of(version, todo)
    log = get_logger("redrive", stream=stream, generation=generation)
    started = time.time()
    work = batches(stream, todo, settings.consumer.batch_max_records)
    submit(settings, stream, generation, work, log)
    rejected: set[RecordAt] = set()
    for batch in work:
        key = layout.dead_letter_key(prefix, batch, generation)
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            continue
        for line in gzip.decompress(body).decode("utf-8").splitlines():
            d = json.loads(line)
            rejected.add((d["shard_id"], position(d["sequence_number"], d["sub_sequence_number"])))
    landed = sorted(k for k in todo if k not in rejected)
    record = {"generation": generation, "stream": stream, "transform_version": version,
              "reason": args.reason, "since": args.since,
              "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
              "landed": [[s, p[1], p[2]] for s, p in landed],
              "rejected": [[s, p[1], p[2]] for s, p in sorted(rejected)]}
    s3.put_object(Bucket=bucket, Key=layout.redrive_record_key(prefix, stream, generation),
                  Body=json.dumps(record).encode(), ContentType="application/json")
    print(f"redrive {generation}: {len(todo)} dead letters sent through transform {version}: "
          f"{len(landed)} accepted (they load as new events), {len(rejected)} rejected again "
          f"(dead letters with the new reason)")
    print(json.dumps({"sent": len(todo), "accepted": len(landed), "rejected": len(rejected),
                      "generation": generation}))
    return ExitCode.OK
