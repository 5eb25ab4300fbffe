"""replay: argument validation and the checkpoint each option stores."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from tests.fakes import FakeKinesis

from shardline.cli.kit import UsageError, parse_cli_timestamp
from shardline.ops import replay
from shardline.records.control import Checkpoint, HistoryEntry
from shardline.exitcodes import ExitCode

SEQ = "49656215286911442018427376489937437429617402736049487874"


def parse(*argv: str):
    return replay.build_parser().parse_args(list(argv))


def entry(id=7, stream="clicks", shard="shardId-000000000000", seq=SEQ, sub=3, closes=True,
          source="consumer", reason=None, token=2):
    return HistoryEntry(id, stream, shard, seq, sub, closes, source, reason, token,
                        datetime(2026, 11, 26, 6, 0, 0))


@pytest.mark.parametrize("argv,action", [
    (["--shard", "s", "--at-sequence", SEQ, "--reason", "bad deploy"], "sequence"),
    (["--shard", "s", "--to-checkpoint", "7", "--reason", "r"], "checkpoint"),
    (["--shard", "s", "--at-timestamp", "2026-11-26T06:00:00Z", "--reason", "r"], "timestamp"),
    (["--shard", "s", "--trim-horizon", "--reason", "r"], "trim_horizon"),
    (["--list"], "list"),
    (["--list", "--shard", "s"], "list"),
])
def test_valid_combinations(argv, action):
    assert replay.validate(parse(*argv)) == action


@pytest.mark.parametrize("argv,message", [
    (["--shard", "s", "--reason", "r"], "say where to move"),
    (["--at-sequence", SEQ, "--reason", "r"], "--shard is required"),
    (["--shard", "s", "--at-sequence", SEQ], "--reason TEXT is required"),
    (["--shard", "s", "--at-sequence", SEQ, "--reason", "   "], "--reason TEXT is required"),
    (["--shard", "s", "--at-sequence", "12ab", "--reason", "r"], "decimal digits"),
    (["--shard", "s", "--at-sequence", "1" * 129, "--reason", "r"], "decimal digits"),
    (["--shard", "s", "--to-checkpoint", "0", "--reason", "r"], "history id"),
    (["--shard", "s", "--at-timestamp", "yesterday", "--reason", "r"], "ISO-8601"),
    (["--list", "--reason", "r"], "not --list"),
])
def test_invalid_combinations(argv, message):
    with pytest.raises(UsageError, match=message):
        replay.validate(parse(*argv))


def test_two_targets_are_rejected_by_the_parser():
    assert replay.main(["--shard", "s", "--at-sequence", "1", "--trim-horizon",
                        "--reason", "r"]) == ExitCode.USAGE


def test_main_validates_before_touching_anything():
    # No settings/DSN needed to reject a bad command line.
    assert replay.main(["--stream", "x", "--shard", "s", "--at-sequence", "1"]) == ExitCode.USAGE


def test_at_sequence_means_at_n_skipping_nothing():
    cp = replay.at_sequence(SEQ)
    assert cp == Checkpoint(SEQ, -1, False)
    assert not cp.closes_sequence and cp.sub_sequence_number == -1


def test_to_checkpoint_copies_the_history_position():
    assert replay.from_history(entry(), "clicks", "shardId-000000000000", 7) == \
        Checkpoint(SEQ, 3, True)
    assert replay.from_history(entry(closes=False, sub=-1), "clicks", "shardId-000000000000",
                               7) == Checkpoint(SEQ, -1, False)


def test_to_checkpoint_of_a_trim_horizon_entry_clears():
    e = entry(seq="TRIM_HORIZON", sub=0, closes=False, source="replay", token=None)
    assert replay.from_history(e, "clicks", "shardId-000000000000", 7) is None


def test_to_checkpoint_must_match_stream_and_shard():
    with pytest.raises(UsageError, match="belongs to clicks/shardId-000000000000"):
        replay.from_history(entry(), "clicks", "shardId-000000000001", 7)
    with pytest.raises(UsageError, match="belongs to"):
        replay.from_history(entry(), "other", "shardId-000000000000", 7)
    with pytest.raises(UsageError, match="no entry 9"):
        replay.from_history(None, "clicks", "shardId-000000000000", 9)


def test_parse_cli_timestamp():
    utc = timezone.utc
    assert parse_cli_timestamp("2026-11-26T06:00:00Z") == datetime(2026, 11, 26, 6, tzinfo=utc)
    assert parse_cli_timestamp("2026-11-26T06:00:00") == datetime(2026, 11, 26, 6, tzinfo=utc)
    assert parse_cli_timestamp("2026-11-26T08:00:00+02:00") == \
        datetime(2026, 11, 26, 6, tzinfo=utc)
    assert parse_cli_timestamp("1700000000") == datetime.fromtimestamp(1700000000, utc)


def test_first_sequence_at_timestamp_skips_empty_pages():
    k = FakeKinesis()
    k.add_shard("s")
    k.answers = [{"Records": [], "NextShardIterator": "it-1", "MillisBehindLatest": 9000},
                 {"Records": [{"SequenceNumber": SEQ}], "NextShardIterator": "it-2",
                  "MillisBehindLatest": 0}]
    when = datetime(2026, 11, 26, 6, tzinfo=timezone.utc)
    assert replay.first_sequence_at(k, "clicks", "s", when, sleep=lambda s: None) == SEQ
    assert k.calls[0] == ("get_shard_iterator", {
        "StreamName": "clicks", "ShardId": "s", "ShardIteratorType": "AT_TIMESTAMP",
        "Timestamp": when})
    assert [kw["Limit"] for op, kw in k.calls if op == "get_records"] == [1, 1]


def test_first_sequence_at_timestamp_none_at_tip_or_closed_end():
    when = datetime(2026, 11, 26, 6, tzinfo=timezone.utc)
    at_tip = FakeKinesis()
    at_tip.add_shard("s")  # open, nothing at/after T: an empty page at the tip
    assert replay.first_sequence_at(at_tip, "c", "s", when, sleep=lambda s: None) is None
    closed = FakeKinesis()
    closed.add_shard("s", closed=True)  # read to its end: no next iterator
    assert replay.first_sequence_at(closed, "c", "s", when, sleep=lambda s: None) is None


def test_describe():
    assert replay.describe(None).startswith("no checkpoint (TRIM_HORIZON")
    assert replay.describe(Checkpoint(SEQ, -1, False)) == f"AT {SEQ}"
    assert replay.describe(Checkpoint(SEQ, 2, False)) == f"AT {SEQ}, skipping sub-records <= 2"
    assert replay.describe(Checkpoint(SEQ, 0, True)) == f"AFTER {SEQ} (sub 0)"
    assert replay.describe(Checkpoint("SHARD_END", 0, True)).startswith("SHARD_END")


def test_history_table():
    rows = [entry(id=9, source="replay", reason="bad deploy\nrollback", token=None,
                  closes=False, sub=-1),
            entry(id=8, seq="TRIM_HORIZON", sub=0, closes=False, source="replay", reason="x"),
            entry(id=7)]
    text = replay.history_table(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["ID", "TIME", "(UTC)", "SHARD", "SEQUENCE", "SUB", "MODE",
                                "SOURCE", "TOKEN", "REASON"]
    assert lines[1].split()[:9] == ["9", "2026-11-26", "06:00:00", "shardId-000000000000",
                                    ".." + SEQ[-10:], "-1", "at", "replay", "-"]
    assert lines[1].endswith("bad deploy rollback")
    assert "TRIM_HORIZON" in lines[2]
    assert SEQ not in text
    assert SEQ in replay.history_table(rows, full=True)
    assert replay.history_table([]) == "(no checkpoint history)\n"
