"""KPL de-aggregation round trip (aws_kinesis_agg.aggregator builds the records)."""
from datetime import datetime, timezone

from aws_kinesis_agg.aggregator import RecordAggregator

from shardline.consumers.deagg import records_from, user_records
from shardline.codec import AGGREGATED, LAST_SUB, Batch, decode, encode

SEQ = "4" * 56


def kpl(n: int, start: int = 0) -> dict:
    agg = RecordAggregator()
    for i in range(start, start + n):
        agg.add_user_record(f"key-{i}", f"payload-{i}".encode() + bytes([i % 256]))
    pk, _, data = agg.clear_and_get().get_contents()
    return {"SequenceNumber": SEQ, "PartitionKey": pk, "Data": data,
            "ApproximateArrivalTimestamp": datetime(2026, 1, 1, tzinfo=timezone.utc)}


def test_round_trip_keeps_data_keys_order_and_flags():
    recs = records_from(kpl(50))
    assert [r.sub_sequence_number for r in recs] == list(range(50))
    assert [r.partition_key for r in recs] == [f"key-{i}" for i in range(50)]
    assert [r.data for r in recs] == [f"payload-{i}".encode() + bytes([i]) for i in range(50)]
    assert all(r.flags & AGGREGATED for r in recs)
    assert [bool(r.flags & LAST_SUB) for r in recs] == [False] * 49 + [True]
    assert not recs[10].closes_sequence and recs[-1].closes_sequence
    assert recs[0].arrival_ms == 1767225600000
    # and through the batch codec unchanged
    assert list(decode(encode(Batch("s", "sh", recs))).records) == recs


def test_plain_record_is_sub_zero_last_sub():
    (r,) = records_from({"SequenceNumber": SEQ, "PartitionKey": "p", "Data": b"\xf3\x89\x9a\xc2",
                         "ApproximateArrivalTimestamp": datetime.now(timezone.utc)})
    assert (r.sub_sequence_number, r.flags, r.data) == (0, LAST_SUB, b"\xf3\x89\x9a\xc2")


def test_skip_through_drops_only_delivered_sub_records_of_that_sequence():
    raws = [kpl(4), {"SequenceNumber": "5" * 56, "PartitionKey": "p", "Data": b"x",
                     "ApproximateArrivalTimestamp": datetime.now(timezone.utc)}]
    got = [(r.sequence_number, r.sub_sequence_number) for r in user_records(raws, (SEQ, 1))]
    assert got == [(SEQ, 2), (SEQ, 3), ("5" * 56, 0)]


def test_restart_neither_skips_nor_repeats_a_sub_record():
    """Checkpoint after every possible sub-record; resuming gives exactly the rest."""
    raw = kpl(7)
    everything = [(r.sequence_number, r.sub_sequence_number) for r in user_records([raw])]
    for cut in range(7):
        first = everything[:cut + 1]
        rest = [(r.sequence_number, r.sub_sequence_number)
                for r in user_records([raw], (SEQ, cut))]
        assert first + rest == everything
