"""``shardline replay``: move a shard's checkpoint (to re-read), or list the history.

The consumer resumes from its checkpoint: AFTER_SEQUENCE_NUMBER when
``closes_sequence`` is true, else AT_SEQUENCE_NUMBER skipping the sub-records
``<= sub_sequence_number``. So each option stores:

  --to-checkpoint ID   the position of checkpoint_history entry ID (same stream/shard)
  --at-sequence N      Checkpoint(N, -1, closes_sequence=False): AT N, skipping nothing
  --at-timestamp T     AT the first record that arrived at/after T (GetShardIterator
                       AT_TIMESTAMP + GetRecords); refused if there is none
  --trim-horizon       no checkpoint: the consumer starts at TRIM_HORIZON

Moves are recorded in checkpoint_history with ``--reason`` and refused while a
live consumer holds the shard's lease (``LeaseHeld``, exit 75): stop it first
(``supervisorctl stop ...``), replay, start it again. Re-reading is safe: the
loader's merge keeps each event once.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import datetime
from typing import TYPE_CHECKING, Callable, Sequence

from shardline.cli.kit import (UsageError, add_stream_option, command_parser, confirm,
                               load_settings, parse_cli_timestamp, parse_command_args,
                               usage_errors)
from shardline.records.control import SHARD_END, Checkpoint, HistoryEntry
from shardline.errors import ConfigError
from shardline.exitcodes import ExitCode
from shardline.ops.status_report import short_seq

if TYPE_CHECKING:
    from shardline.kinesis import KinesisClient
    from shardline.settings import Settings

TRIM_HORIZON = "TRIM_HORIZON"  # what move_checkpoint(cp=None) writes into the history
_SEQUENCE = re.compile(r"^[0-9]{1,128}$")
MAX_TIMESTAMP_CALLS = 200  # GetRecords calls while looking for the first record at/after T


# -- pure parts -------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "replay", "Move a shard's checkpoint so its consumer re-reads (the consumer must be "
                  "stopped), or --list the checkpoint history.")
    add_stream_option(parser)
    parser.add_argument("--shard", help="shard id, e.g. shardId-000000000001")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--to-checkpoint", type=int, metavar="ID",
                       help="the position of history entry ID (see --list)")
    where.add_argument("--at-sequence", metavar="N", help="re-read starting AT sequence N")
    where.add_argument("--at-timestamp", metavar="T",
                       help="re-read from the first record at/after T (ISO-8601, UTC unless "
                            "an offset is given; or epoch seconds)")
    where.add_argument("--trim-horizon", action="store_true",
                       help="clear the checkpoint: re-read all the shard still holds")
    where.add_argument("--list", action="store_true", help="show the checkpoint history")
    parser.add_argument("--reason", help="why (required for a move; kept in the history)")
    parser.add_argument("--yes", action="store_true",
                        help="do not ask for confirmation (only asked on a terminal)")
    parser.add_argument("--limit", type=int, default=50, help="--list: rows (default 50)")
    parser.add_argument("--full", action="store_true", help="--list: full sequence numbers")
    return parser


def validate(args: argparse.Namespace) -> str:
    """Check the option combination; returns the action: list | checkpoint | sequence |
    timestamp | trim_horizon. Raises ``UsageError``."""
    if args.list:
        if args.reason:
            raise UsageError("--reason is for moves, not --list")
        if args.limit < 1:
            raise UsageError("--limit must be at least 1")
        return "list"
    action = ("checkpoint" if args.to_checkpoint is not None else
              "sequence" if args.at_sequence is not None else
              "timestamp" if args.at_timestamp is not None else
              "trim_horizon" if args.trim_horizon else None)
    if action is None:
        raise UsageError("say where to move: one of --to-checkpoint ID, --at-sequence N, "
                         "--at-timestamp T, --trim-horizon (or --list)")
    if not args.shard:
        raise UsageError("--shard is required for a move")
    if not args.reason or not args.reason.strip():
        raise UsageError("--reason TEXT is required for a move (it is kept in the history)")
    if len(args.reason) > 1024:
        raise UsageError("--reason is limited to 1024 characters")
    if action == "sequence" and not _SEQUENCE.match(args.at_sequence):
        raise UsageError(f"--at-sequence {args.at_sequence!r}: a sequence number is up to 128 "
                         f"decimal digits")
    if action == "checkpoint" and args.to_checkpoint < 1:
        raise UsageError("--to-checkpoint takes a history id (see --list)")
    if action == "timestamp":
        parse_cli_timestamp(args.at_timestamp)
    return action


def at_sequence(sequence_number: str) -> Checkpoint:
    """The checkpoint that makes the consumer restart AT this record, skipping nothing."""
    return Checkpoint(sequence_number, -1, False)


def from_history(entry: HistoryEntry | None, stream: str, shard_id: str,
                 entry_id: int) -> Checkpoint | None:
    """The position history entry ``entry_id`` recorded (None = TRIM_HORIZON)."""
    if entry is None:
        raise UsageError(f"checkpoint history has no entry {entry_id}")
    if (entry.stream, entry.shard_id) != (stream, shard_id):
        raise UsageError(f"history entry {entry_id} belongs to {entry.stream}/{entry.shard_id}, "
                         f"not {stream}/{shard_id}")
    if entry.sequence_number == TRIM_HORIZON:
        return None
    return Checkpoint(entry.sequence_number, entry.sub_sequence_number, entry.closes_sequence)


def describe(cp: Checkpoint | None) -> str:
    if cp is None:
        return "no checkpoint (TRIM_HORIZON: everything the shard still holds)"
    if cp.shard_end:
        return "SHARD_END (the shard is done)"
    if cp.closes_sequence:
        return f"AFTER {cp.sequence_number}" + (
            f" (sub {cp.sub_sequence_number})" if cp.sub_sequence_number >= 0 else "")
    if cp.sub_sequence_number < 0:
        return f"AT {cp.sequence_number}"
    return f"AT {cp.sequence_number}, skipping sub-records <= {cp.sub_sequence_number}"


def history_table(entries: Sequence[HistoryEntry], full: bool = False) -> str:
    headers = ["ID", "TIME (UTC)", "SHARD", "SEQUENCE", "SUB", "MODE", "SOURCE", "TOKEN",
               "REASON"]
    rows = []
    for e in entries:
        seq = e.sequence_number if full or e.sequence_number in (SHARD_END, TRIM_HORIZON) \
            else short_seq(e.sequence_number)
        mode = ("-" if e.sequence_number in (SHARD_END, TRIM_HORIZON)
                else "after" if e.closes_sequence else "at")
        rows.append([str(e.id), f"{e.created_at:%Y-%m-%d %H:%M:%S}", e.shard_id, seq,
                     str(e.sub_sequence_number), mode, e.source,
                     "-" if e.lease_token is None else str(e.lease_token),
                     (e.reason or "").replace("\n", " ")])
    if not rows:
        return "(no checkpoint history)\n"
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*headers).rstrip()]
                     + [fmt.format(*r).rstrip() for r in rows]) + "\n"


# -- Kinesis ---------------------------------------------------------------------
def first_sequence_at(kinesis: KinesisClient, stream: str, shard_id: str, when: datetime, *,
                      max_calls: int = MAX_TIMESTAMP_CALLS,
                      sleep: Callable[[float], None] = time.sleep) -> str | None:
    """Sequence number of the first record that arrived at/after ``when``, or None."""
    it = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard_id,
                                    ShardIteratorType="AT_TIMESTAMP",
                                    Timestamp=when)["ShardIterator"]
    for _ in range(max_calls):
        if it is None:
            return None  # closed shard, read to its end
        resp = kinesis.get_records(ShardIterator=it, Limit=1)
        records = resp.get("Records", [])
        if records:
            first: str = records[0]["SequenceNumber"]
            return first
        if resp.get("MillisBehindLatest", 0) == 0 and resp.get("NextShardIterator"):
            return None  # at the tip of an open shard: nothing at/after T yet
        it = resp.get("NextShardIterator")
        sleep(0.2)  # stay under 5 GetRecords calls per second per shard
    raise ConfigError(f"no record found at/after {when.isoformat()} within {max_calls} "
                      f"GetRecords calls; the shard may have a long gap, try --at-sequence")


def _first_sequence_at(settings: Settings, stream: str, shard: str,
                       when: datetime) -> str | None:
    from botocore.exceptions import BotoCoreError, ClientError, ReadTimeoutError

    from shardline.errors import ServiceUnavailable
    from shardline.kinesis import kinesis_client

    kinesis = kinesis_client(settings, botocore_retries=1)
    try:
        return first_sequence_at(kinesis, stream, shard, when)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        if err.get("Code") in ("InvalidArgumentException", "ResourceNotFoundException"):
            raise UsageError(f"--at-timestamp on {stream}/{shard}: {err.get('Code')}: "
                             f"{err.get('Message')}") from None
        raise ServiceUnavailable(f"kinesis: {err.get('Code')}: {err.get('Message')}") from None
    except ReadTimeoutError:
        # kinesalite (the local emulator) never answers GetShardIterator AT_TIMESTAMP when no
        # record is at/after T; real Kinesis answers at once.
        raise ServiceUnavailable(f"kinesis did not answer GetShardIterator AT_TIMESTAMP for "
                                 f"{stream}/{shard} (on kinesalite this means no record is "
                                 f"at/after {when.isoformat()})") from None
    except BotoCoreError as exc:
        raise ServiceUnavailable(f"kinesis: {exc}") from None


# -- the command --------------------------------------------------------------------
@usage_errors("replay")
def main(argv: list[str]) -> int:
    parser = build_parser()
    args, code = parse_command_args(parser, argv)
    if args is None:
        return code
    action = validate(args)
    settings = load_settings(args, **{"kinesis.stream": args.stream})
    settings.require("kinesis.stream")
    stream = settings.kinesis.stream

    from shardline import preflight
    from shardline.controlstore import open_store

    preflight.require(settings, preflight.CONTROL)

    control = open_store(settings)
    try:
        if action == "list":
            sys.stdout.write(history_table(control.history(stream, args.shard, args.limit),
                                           args.full))
            return ExitCode.OK
        shard = args.shard
        if action == "checkpoint":
            target = from_history(control.history_entry(args.to_checkpoint), stream, shard,
                                  args.to_checkpoint)
        elif action == "sequence":
            target = at_sequence(args.at_sequence)
        elif action == "trim_horizon":
            target = None
        else:
            when = parse_cli_timestamp(args.at_timestamp)
            seq = _first_sequence_at(settings, stream, shard, when)
            if seq is None:
                raise UsageError(f"shard {shard} has no record at or after "
                                 f"{when.isoformat()}; nothing to re-read, checkpoint not moved")
            target = at_sequence(seq)

        current = control.get_checkpoint(stream, shard)
        print(f"stream {stream} shard {shard}\n  now:     {describe(current)}\n"
              f"  move to: {describe(target)}\n  reason:  {args.reason.strip()}")
        if not args.yes and not confirm("move the checkpoint?"):
            raise UsageError("not confirmed; nothing changed")
        entry_id = control.move_checkpoint(stream, shard, target,
                                           args.reason.strip())  # LeaseHeld -> 75
        print(f"moved (history id {entry_id}). Start the shard's consumer "
              f"again (supervisorctl start ...consumer-{shard}); the loader keeps each event "
              f"once, so re-read records are not duplicated.")
        if current is not None and current.shard_end:
            print("note: the shard was at SHARD_END, so `shardline supervisor-config` left it "
                  "out; generate the config again and `supervisorctl update` to add its "
                  "consumer back.")
        return ExitCode.OK
    finally:
        control.close()
