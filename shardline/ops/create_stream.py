"""``shardline create-stream``: create a Kinesis stream and wait until it is ACTIVE.

Harmless if the stream exists with the same shard count; exit ``CONFIG`` if it
exists with another, ``UNAVAILABLE`` if it is being deleted or stays CREATING.
Sample traffic for it comes from ``shardline produce`` (``shardline.sample.produce_cli``).
"""
from __future__ import annotations

import argparse
import sys
import time

from shardline.aws_access import aws_errors
from shardline.cli.kit import command_parser, load_settings
from shardline.errors import ConfigError, ServiceUnavailable
from shardline.exitcodes import ExitCode
from shardline.kinesis import error_code, is_connection_error, kinesis_client, open_shards
from shardline.lifecycle import first_line


def main(argv: list[str]) -> int:
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
    client = kinesis_client(settings, botocore_retries=3)
    try:
        with aws_errors("kinesis:CreateStream", f"stream {stream!r}", "Kinesis",
                        client.meta.endpoint_url, "kinesis.endpoint_url"):
            client.create_stream(StreamName=stream, ShardCount=args.shards)
        created = True
    except Exception as exc:  # noqa: BLE001 - the exists case below, the rest re-raised
        code = error_code(exc)
        if code == "LimitExceededException":  # the account's shard limit: nothing to retry
            raise ConfigError(f"stream {stream!r} with {args.shards} shards: "
                              f"{first_line(exc)}") from None
        if code != "ResourceInUseException":
            if is_connection_error(exc):
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
        print(shard.shard_id)
    return ExitCode.OK
