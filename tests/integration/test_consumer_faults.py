"""Iterator expiry, throttling, HTTP 500s, connection errors and slow answers are absorbed.

kinesalite never throttles and its iterators live 300 s, so the faults are injected
with botocore event hooks on the consumer's own Kinesis client (in-process consumer).
"""
from __future__ import annotations

import signal
import threading

import pytest

from tests.faults import KinesisFaults
from tests.stub_stage import Rig

from shardline.consumers import main as consumer_main
from shardline.kinesis import kinesis_client
from shardline.lifecycle import StopSignals
from shardline.devstack.fleet import wait_for
from shardline import settings as settings_mod

pytestmark = pytest.mark.integration


@pytest.fixture
def rig(stack_env, pg_schema, pg_conn, stream_name, kinesis):
    r = Rig(stack_env, pg_schema, pg_conn, stream_name, kinesis,
            SHARDLINE_CONSUMER_GET_RECORDS_LIMIT="100", SHARDLINE_CONSUMER_ITERATOR_MAX_AGE_S="1",
            SHARDLINE_CONSUMER_BATCH_MAX_RECORDS="250", SHARDLINE_CONSUMER_WINDOW_MAX_BATCHES="1",
            SHARDLINE_CONSUMER_LEASE_TTL_S="20",
            SHARDLINE_CONSUMER_LEASE_RENEW_S="2", SHARDLINE_CONSUMER_MAX_CALLS_PER_S="5")
    yield r
    r.cleanup()


SCHEDULE = {2: "expired", 3: "throttled", 4: "500", 5: "conn", 6: ("slow", 1.5),
            8: "throttled", 9: "throttled", 10: "expired", 12: "500", 14: ("slow", 1.3),
            15: "expired", 17: "conn", 19: "throttled"}


def test_faults_absorbed_nothing_lost_or_repeated(rig):
    (shard,) = rig.create_stream(1)
    seqs = rig.put(1000)[shard]
    settings = settings_mod.load(env=rig.env)
    kinesis = kinesis_client(settings, raw_timestamps=True)  # the consumer's own client
    faults = KinesisFaults(kinesis, SCHEDULE)
    stop = StopSignals()
    consumer = consumer_main.build(settings, shard, stop, kinesis=kinesis)
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(rc=consumer_main.run(consumer, stop)),
                         daemon=True)
    with rig.stage(delay_s=1.2):  # slow stage: backpressure pauses longer than the max age
        t.start()
        wait_for(lambda: rig.distinct_counts().get(shard) == len(seqs),
                 90, "every record despite the faults", every=0.3)
        wait_for(lambda: (rig.checkpoint(shard) or ("",))[0] == seqs[-1],
                 30, "the checkpoint at the last record", every=0.3)
        stop.handler(signal.SIGTERM)  # as a SIGTERM would
        t.join(30)
    assert result.get("rc") == 0
    assert not faults.schedule, f"faults not reached: {faults.schedule}"
    got = [q for q, _ in sorted(rig.delivered(shard), key=lambda x: (len(x[0]), x[0]))]
    assert got == seqs  # nothing lost, nothing repeated, in order
    reader = consumer.reader
    assert reader.retries >= 10  # every error fault was retried
    assert reader.refreshes - reader.age_refreshes >= 4  # the start and the 3 expiries
    assert reader.age_refreshes >= 2  # never used older than 1 s, also while paused
    assert rig.lease_owner(shard) is None
