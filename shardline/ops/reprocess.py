"""``shardline reprocess``: make the warehouse hold what the *current* transform makes of a
range of source records, with the fleet running.

    shardline reprocess --stream S (--shard X | --all-shards)
        (--trim-horizon | --at-timestamp T | --at-sequence N | --from-archive [--since T]
         [--until T]) --reason TEXT [--yes] [--dry-run]

A run has a *generation* (``g<UTC time><4 hex>``). It reads the source records itself
(``reprocess_sources``: the shard in Kinesis up to its tip, or the raw archive) and
submits each batch to the stage workers as a reprocess job (``codec.encode_job``: the
generation travels with the batch). The workers stage it with the transform they run,
under keys of the generation (``layout``), pending even without good rows; the loader
loads such files with *replace* semantics over their exact position ranges (``plan``).
So a row the transform now makes replaces the stored one, a row it now rejects is
removed (and dead-lettered), the rest of the table is untouched, every event once.

Why the run reads instead of the consumers: the consumers need no new state, the same
code serves Kinesis and the archive (a deleted stream has no consumers), and it is
correct with the fleet running: after the deploy every batch a consumer stages is made
by the new transform, and the run reads to the tip it finds, past everything staged
before it started; where both stage the same records the rows are identical. The loader
keeps a file staged by an older transform ahead of the run's files (``load_group``).

``--dry-run`` runs the current transform (of table ``worker.target_table`` in the tables
file, or ``worker.transform``: use the
workers' settings) over the same records and compares with the stored rows of each range
(``reprocess_diff``), staging nothing. Each run is recorded (options, reason, counts) in
``{prefix}/reprocess/{stream}/{generation}.json``.
"""
from __future__ import annotations

import argparse
import json
import secrets
import sys
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, Iterator

from shardline import layout
from shardline.cli.kit import (UsageError, add_stream_option, command_parser, confirm,
                               load_settings, parse_cli_timestamp, parse_command_args,
                               usage_errors)
from shardline.codec import Batch
from shardline.consumers.reader import Position
from shardline.errors import BatchFailed
from shardline.exitcodes import ExitCode
from shardline.logs import ContextLogger, get_logger
from shardline.settings import Settings

if TYPE_CHECKING:
    from shardline.controlstore import ControlStore

UTC = timezone.utc
MAX_INFLIGHT_PER_THREAD = 2


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "reprocess", "Re-stage a range of source records with the current transform and "
                     "replace what the warehouse holds for it (the fleet keeps running).")
    add_stream_option(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--shard", help="one shard id")
    which.add_argument("--all-shards", action="store_true", help="every shard of the stream")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--trim-horizon", action="store_true",
                       help="from the oldest record the stream holds")
    where.add_argument("--at-timestamp", metavar="T",
                       help="from the first record that arrived at/after T (ISO-8601 or epoch)")
    where.add_argument("--at-sequence", metavar="N", help="from sequence number N (one shard)")
    where.add_argument("--from-archive", action="store_true",
                       help="read the raw archive in S3 instead of Kinesis (past retention, "
                            "or a deleted stream)")
    parser.add_argument("--since", metavar="T", help="--from-archive: records arrived at/after T")
    parser.add_argument("--until", metavar="T", help="--from-archive: records arrived before T")
    parser.add_argument("--reason", help="why (required; kept in the run's record)")
    parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--dry-run", action="store_true",
                        help="count the rows that would be added, changed and removed")
    return parser


def validate(args: argparse.Namespace) -> str:
    """-> the source: trim_horizon | timestamp | sequence | archive. Raises UsageError."""
    if not (args.shard or args.all_shards):
        raise UsageError("say which shards: --shard X or --all-shards")
    source = ("trim_horizon" if args.trim_horizon else "timestamp" if args.at_timestamp
              else "sequence" if args.at_sequence else "archive" if args.from_archive else None)
    if source is None:
        raise UsageError("say where from: --trim-horizon, --at-timestamp T, --at-sequence N "
                         "or --from-archive")
    if (args.since or args.until) and source != "archive":
        raise UsageError("--since/--until go with --from-archive")
    if source == "sequence" and not args.shard:
        raise UsageError("--at-sequence names a position of one shard: use --shard")
    if source == "sequence" and not (args.at_sequence.isdigit() and len(args.at_sequence) <= 128):
        raise UsageError(f"--at-sequence {args.at_sequence!r}: up to 128 decimal digits")
    for text in (args.at_timestamp, args.since, args.until):
        if text:
            parse_cli_timestamp(text)
    if not args.reason or not args.reason.strip():
        raise UsageError("--reason TEXT is required (it is kept in the run's record)")
    if len(args.reason) > 1024:
        raise UsageError("--reason is limited to 1024 characters")
    return source


def new_generation(now: float) -> str:
    return f"g{datetime.fromtimestamp(now, UTC):%Y%m%dT%H%M%S}{secrets.token_hex(2)}"


def start_position(source: str, args: argparse.Namespace) -> Position:
    if source == "timestamp":
        return Position("AT_TIMESTAMP", timestamp=parse_cli_timestamp(args.at_timestamp))
    if source == "sequence":
        return Position("AT_SEQUENCE_NUMBER", args.at_sequence)
    return Position("TRIM_HORIZON")


def source_batches(settings: Settings, source: str, args: argparse.Namespace, stream: str,
                   s3: Any, log: ContextLogger) -> Iterator[Batch]:
    from shardline.ops import reprocess_sources as sources

    if source == "archive":
        yield from sources.archive_batches(
            s3, settings.s3.bucket, settings.s3.prefix, stream,
            shards={args.shard} if args.shard else None,
            since=parse_cli_timestamp(args.since) if args.since else None,
            until=parse_cli_timestamp(args.until) if args.until else None)
        return
    from shardline.kinesis import kinesis_client, list_shards

    kinesis = kinesis_client(settings, raw_timestamps=True)
    shards = [args.shard] if args.shard else [s.shard_id for s in list_shards(kinesis, stream)]
    for shard in shards:
        yield from sources.kinesis_batches(kinesis, stream, shard, start_position(source, args),
                                           settings.consumer, log=log.bind(shard=shard))


def submit(settings: Settings, stream: str, generation: str, batches: Iterable[Batch],
           log: ContextLogger) -> tuple[int, int, dict[str, list[str | None]]]:
    """Each batch as a reprocess job; returns (batches, records, shard -> [first, last])."""
    from shardline import clients
    from shardline.consumers.dispatcher import Dispatcher

    cs = settings.consumer
    dispatcher = Dispatcher(lambda: clients.gearman_client(settings),
                            settings.gearman.stage_function, threads=cs.dispatch_threads,
                            job_timeout_s=settings.gearman.job_timeout_s,
                            max_attempts=cs.job_max_attempts, retry_max_s=cs.job_retry_max_s,
                            log=log, generation=generation)
    dispatcher.start()
    inflight: dict[int, Batch] = {}
    limit = cs.dispatch_threads * MAX_INFLIGHT_PER_THREAD
    done = records = 0
    ranges: dict[str, list[str | None]] = {}

    def collect(block: bool) -> None:
        nonlocal done
        while inflight and (block or len(inflight) >= limit):
            dispatcher.wait(0.5)
            for out in dispatcher.poll():
                batch = inflight.pop(out.ticket)
                if not out.ok:  # exit 70; run it again (a new generation, the same rows)
                    raise BatchFailed(f"{generation}: the job for {batch.batch_id} kept "
                                      f"failing ({out.error}); nothing is lost: run the "
                                      f"command again")
                done += 1
            block = block and bool(inflight)
    try:
        for ticket, batch in enumerate(batches):
            inflight[ticket] = batch
            records += len(batch.records)
            span = ranges.setdefault(batch.shard_id, [batch.first.sequence_number, None])
            span[1] = batch.last.sequence_number
            dispatcher.submit(ticket, stream, batch)
            collect(block=False)
        collect(block=True)
    finally:
        dispatcher.stop()
    return done, records, ranges


SAMPLE = 25  # ledger entries checked at each end of a run


def sampled(batches: Iterable[Batch], keep: list[Batch]) -> Iterator[Batch]:
    """Pass the batches through, keeping the first and the last ``SAMPLE`` in ``keep``."""
    tail: list[Batch] = []
    for batch in batches:
        if len(keep) < SAMPLE:
            keep.append(batch)
        else:
            tail = (tail + [batch])[-SAMPLE:]
        yield batch
    keep += tail


def wrong_versions(store: ControlStore, settings: Settings, generation: str,
                   batches: Iterable[Batch],
                   version: str) -> dict[str, int]:
    """Versions other than ``version`` in the ledger entries of these batches of the run: a
    stage worker still ran another transform (the deploy was not finished)."""
    from shardline.tables import table_spec

    table = table_spec(settings.worker.target_table, settings).name
    found: dict[str, int] = {}
    for batch in batches:
        entry = store.get_file(layout.staged_key(settings.s3.prefix, table, batch, generation))
        got = entry.transform_version if entry is not None else "(no ledger entry)"
        if got != version:
            found[str(got)] = found.get(str(got), 0) + 1
    return found


@usage_errors("reprocess")
def main(argv: list[str]) -> int:
    parser = build_parser()
    args, code = parse_command_args(parser, argv)
    if args is None:
        return code
    source = validate(args)
    settings = load_settings(args, **{"kinesis.stream": args.stream})
    settings.require("kinesis.stream", "s3.bucket")
    stream = settings.kinesis.stream
    generation = new_generation(time.time())
    log = get_logger("reprocess", stream=stream, generation=generation)

    from shardline import clients, preflight

    preflight.require(settings, preflight.CONTROL, preflight.BUCKET, preflight.GEARMAN,
                      *((preflight.WAREHOUSE,) if args.dry_run else ()))
    s3 = clients.s3_client(settings)
    what = (f"stream {stream}, {'shard ' + args.shard if args.shard else 'all shards'}, from "
            f"{source.replace('_', ' ')}"
            + (f" (since {args.since or '-'}, until {args.until or '-'})"
               if source == "archive" else ""))
    if args.dry_run:
        return _dry_run(settings, source, args, stream, s3, log, what)
    print(f"reprocess {generation}: {what}\n  reason: {args.reason.strip()}")
    if not args.yes and not confirm("re-stage these records and replace their rows?"):
        raise UsageError("not confirmed; nothing changed")
    started = time.time()
    sample: list[Batch] = []
    batches, records, ranges = submit(settings, stream, generation, sampled(
        source_batches(settings, source, args, stream, s3, log), sample), log)
    record = {"generation": generation, "stream": stream, "source": source,
              "shard": args.shard, "since": args.since, "until": args.until,
              "at": args.at_timestamp or args.at_sequence, "reason": args.reason.strip(),
              "batches": batches, "records": records, "ranges": ranges,
              "started_at": datetime.fromtimestamp(started, UTC).isoformat(),
              "staged_at": datetime.now(UTC).isoformat()}
    s3.put_object(Bucket=settings.s3.bucket,
                  Key=layout.reprocess_record_key(settings.s3.prefix, stream, generation),
                  Body=json.dumps(record, indent=1).encode(), ContentType="application/json")
    log.info("staged %d batches (%d records) for reprocess", batches, records)
    print(f"staged {batches} batches ({records} records) as reprocess {generation} in "
          f"{time.time() - started:.1f}s; the loader replaces their ranges as it loads them: "
          f"watch `shardline status` (transform versions) until no file is pending")
    from shardline.controlstore import open_store
    from shardline.workers.transform import table_transform, transform_version

    version = transform_version(table_transform(settings, settings.worker.target_table))
    store = open_store(settings)
    try:
        others = wrong_versions(store, settings, generation, sample, version)
    finally:
        store.close()
    if others:
        print(f"shardline reprocess: of {len(sample)} batches checked, some were staged by "
              f"another transform than {version} (the tables file's, or worker.transform, here): "
              + ", ".join(f"{v}: {n}" for v, n in sorted(others.items()))
              + ". Finish deploying the stage workers, then run reprocess again.",
              file=sys.stderr)
        return ExitCode.BATCH_FAILED
    return ExitCode.OK


def _dry_run(settings: Settings, source: str, args: argparse.Namespace, stream: str, s3: Any,
             log: ContextLogger, what: str) -> int:
    from shardline import clients
    from shardline.ops.reprocess_diff import diff_batches
    from shardline.tables import table_spec
    from shardline.workers.rows import RowBuilder
    from shardline.workers.stage import refuse_null_marker
    from shardline.workers.transform import table_transform, transform_version

    transform = table_transform(settings, settings.worker.target_table)
    version = transform_version(transform)
    if settings.warehouse.dialect == "redshift":
        transform = refuse_null_marker(transform)
    builder = RowBuilder(table_spec(settings.worker.target_table, settings), transform)
    conn = clients.warehouse_connect(settings)
    try:
        with conn.cursor() as cur:
            diff = diff_batches(cur, builder, version,
                                source_batches(settings, source, args, stream, s3, log),
                                datetime.now(UTC))
        conn.rollback()
    finally:
        conn.close()
    print(f"dry run ({what}; transform {version}): {diff.summary()}")
    for line in diff.examples:
        print(f"  changed: {line}")
    print(json.dumps({"added": diff.added, "changed": diff.changed, "removed": diff.removed,
                      "unchanged": diff.unchanged, "retagged": diff.retagged,
                      "rejected": diff.rejected, "records": diff.records,
                      "transform_version": version}))
    return ExitCode.OK
