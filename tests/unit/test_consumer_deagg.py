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


def test_epoch_seconds_arrival_is_the_same_milliseconds_as_a_datetime():
    """The consumer's client hands epoch seconds (raw_timestamps); other clients datetimes."""
    as_datetime = records_from(kpl(2))[0].arrival_ms
    as_seconds = records_from({**kpl(2), "ApproximateArrivalTimestamp": 1767225600.0})
    assert [r.arrival_ms for r in as_seconds] == [as_datetime] * 2 == [1767225600000] * 2
    (r,) = records_from({"SequenceNumber": SEQ, "PartitionKey": "p", "Data": b"x",
                         "ApproximateArrivalTimestamp": 1764138601.123})
    assert r.arrival_ms == 1764138601123  # not ...122 from truncating 601.12299999


def _framed(message) -> bytes:
    import hashlib

    from aws_kinesis_agg import MAGIC

    body = message.SerializeToString()
    return MAGIC + body + hashlib.md5(body).digest()


def test_magic_prefix_without_a_valid_digest_is_plain_data():
    raw = kpl(3)
    data = raw["Data"][:-1] + bytes([raw["Data"][-1] ^ 1])  # the digest no longer matches
    (r,) = records_from({**raw, "Data": data})
    assert (r.sub_sequence_number, r.flags, r.data) == (0, LAST_SUB, data)


def test_broken_aggregate_is_delivered_whole_not_dropped():
    from aws_kinesis_agg.messages_pb2 import AggregatedRecord

    message = AggregatedRecord()
    message.partition_key_table.append("a")
    message.records.add(partition_key_index=0, data=b"ok")
    message.records.add(partition_key_index=7, data=b"no such key")  # outside the table
    data = _framed(message)
    (r,) = records_from({"SequenceNumber": SEQ, "PartitionKey": "p", "Data": data,
                         "ApproximateArrivalTimestamp": 0})
    assert (r.sub_sequence_number, r.flags, r.data, r.partition_key) == (0, LAST_SUB, data, "p")


def test_imports_and_parses_in_a_fresh_interpreter():
    """The library's messages_pb2 needs its package dir on sys.path (the deaggregator
    module sets that up): importing deagg alone, as the consumer does, must work."""
    import subprocess
    import sys

    code = ("from shardline.consumers.deagg import records_from\n"
            "from aws_kinesis_agg.aggregator import RecordAggregator\n"
            "a = RecordAggregator(); a.add_user_record('k', b'v'); a.add_user_record('k', b'w')\n"
            "pk, _, data = a.clear_and_get().get_contents()\n"
            "recs = records_from({'SequenceNumber': '1', 'PartitionKey': pk, 'Data': data})\n"
            "assert [r.data for r in recs] == [b'v', b'w'], recs\n")
    # deagg is imported first: the aggregator import would otherwise fix sys.path for it
    subprocess.run([sys.executable, "-c", code], check=True)
