"""Consumer.step() with fakes and a fake clock: cadence, window, checkpoints, endings."""
from __future__ import annotations

import dataclasses

import pytest

from tests.fakes import Clock, FakeDispatcher, FakeKinesis, FaultyStore, client_error

from shardline.consumers.consumer import Consumer
from shardline.consumers.reader import ShardReader
from shardline.records.control import SHARD_END, Checkpoint
from shardline.controlstore.base import ShardStatus
from shardline.errors import BatchFailed, LeaseHeld, LeaseLost, ServiceUnavailable
from shardline.exitcodes import ExitCode
from shardline.kinesis import list_shards
from shardline.lifecycle import StopSignals
from shardline.settings import Settings

BASE = {"kinesis.stream": "s", "consumer.batch_max_records": "10",
        "consumer.get_records_limit": "30", "consumer.window_max_batches": "3",
        "consumer.checkpoint_interval_s": "5", "consumer.checkpoint_every_records": "1000",
        "consumer.lease_ttl_s": "30", "consumer.lease_renew_s": "10",
        "consumer.report_interval_s": "5", "consumer.idle_sleep_s": "1",
        "consumer.batch_max_age_s": "1", "consumer.parent_poll_s": "2"}


class Rig:
    def __init__(self, n: int = 0, shard: str = "sh", **overrides: str):
        self.settings = Settings().replace(**{**BASE, **overrides})
        self.clock = Clock()
        self.kinesis = FakeKinesis(self.clock)
        self.kinesis.add_shard(shard)
        self.seqs = [self.kinesis.put(shard, f"r{i}".encode()) for i in range(n)]
        self.control = FaultyStore(self.clock)
        self.dispatcher = FakeDispatcher()
        self.reader = ShardReader(self.kinesis, "s", shard, self.settings.consumer,
                                  clock=self.clock, sleep=self.clock.sleep)
        self.consumer = Consumer(self.settings, shard, reader=self.reader,
                                 dispatcher=self.dispatcher, control=self.control,
                                 shards=lambda: list_shards(self.kinesis, "s"),
                                 clock=self.clock, owner="host:1:abc")

    def run(self, steps: int, finish: bool = True) -> None:
        for _ in range(steps):
            if self.consumer.done:
                return
            pause = self.consumer.step()
            if finish:
                self.dispatcher.finish_all()
            self.clock.advance(max(pause, 0.01))

    def delivered(self) -> list[str]:
        return [r.sequence_number for _, b in self.dispatcher.submitted for r in b.records]

    # -- the store's state, as the assertions compare it ----------------------------------
    def checkpoint(self, shard: str = "sh") -> Checkpoint | None:
        """The stored checkpoint without the store's write time."""
        cp = self.control.get_checkpoint("s", shard)
        return None if cp is None else dataclasses.replace(cp, updated_at=None)

    def set_checkpoint(self, shard: str, cp: Checkpoint) -> None:
        """A checkpoint left by an earlier consumer (the shard is not leased)."""
        self.control.move_checkpoint("s", shard, cp, "test set-up")

    def lease_owner(self, shard: str = "sh") -> str | None:
        lease = self.control.get_lease("s", shard)
        assert lease is not None, f"no lease on {shard}"
        return lease.owner

    def status(self, shard: str = "sh") -> ShardStatus:
        return next(st for st in self.control.statuses("s") if st.shard_id == shard)


def test_reads_batches_and_checkpoints_on_interval():
    rig = Rig(40)
    rig.consumer.start()
    assert rig.consumer.state == "reading"
    rig.run(3)
    assert rig.delivered() == rig.seqs[:40]
    assert rig.control.checkpoints("s") == {}  # interval not reached yet
    rig.clock.advance(5)
    rig.run(1)
    cp = rig.checkpoint()
    assert cp == Checkpoint(rig.seqs[39], 0, True)
    assert rig.status().owner == "host:1:abc"


def test_checkpoint_every_n_records():
    rig = Rig(30, **{"consumer.checkpoint_every_records": "20",
                     "consumer.checkpoint_interval_s": "600"})
    rig.consumer.start()
    rig.run(2)
    assert rig.checkpoint().sequence_number in rig.seqs[19:]


def test_checkpoint_only_the_contiguous_staged_prefix():
    rig = Rig(30, **{"consumer.checkpoint_interval_s": "0.1"})
    rig.consumer.start()
    rig.consumer.step()
    tickets = [t for t, _ in rig.dispatcher.submitted]
    assert len(tickets) == 3
    rig.dispatcher.finish(tickets[1])
    rig.dispatcher.finish(tickets[2])
    rig.clock.advance(1)
    rig.consumer.step()
    assert "sh" not in rig.control.checkpoints("s")  # batch 1 still in flight
    rig.dispatcher.finish(tickets[0])
    rig.clock.advance(1)
    rig.consumer.step()
    assert rig.checkpoint().sequence_number == rig.seqs[29]


def test_full_window_pauses_reading_but_keeps_lease_and_iterator():
    rig = Rig(100, **{"consumer.iterator_max_age_s": "60"})
    rig.consumer.start()
    rig.consumer.step()  # 25 records -> 3 batches fill the window (max 3)
    gets = sum(1 for c in rig.kinesis.calls if c[0] == "get_records")
    for _ in range(60):  # 10 minutes with nothing finishing
        rig.clock.advance(10)
        assert rig.consumer.step() > 0
    assert rig.consumer.state == "backpressure"
    assert sum(1 for c in rig.kinesis.calls if c[0] == "get_records") == gets
    assert rig.consumer.lease.renewals >= 55
    assert rig.reader.iterator_age_s(rig.clock()) < 60
    rig.run(40)  # jobs finish: reading resumes, nothing lost or repeated
    assert rig.delivered() == rig.seqs


def test_batch_age_closes_a_small_batch():
    rig = Rig(3)
    rig.consumer.start()
    assert rig.consumer.step() == 0.0  # records came: read again at once (pacer permitting)
    rig.clock.advance(0.2)
    pause = rig.consumer.step()  # empty read: sleep until the open batch is due, at most
    assert rig.dispatcher.submitted == [] and 0 < pause <= 0.8 + 1e-9
    rig.clock.advance(0.8)
    rig.consumer.step()
    assert len(rig.delivered()) == 3


def test_idle_sleep_on_empty_shard():
    rig = Rig(0)
    rig.consumer.start()
    assert rig.consumer.step() == 1.0


def test_resume_after_checkpoint_skips_delivered_records():
    rig = Rig(20)
    rig.set_checkpoint("sh", Checkpoint(rig.seqs[9], 0, True))
    rig.consumer.start()
    rig.run(5)
    assert rig.delivered() == rig.seqs[10:]


def test_failed_batch_holds_checkpoint_and_raises_batch_failed():
    rig = Rig(30, **{"consumer.checkpoint_interval_s": "0.1"})
    rig.consumer.start()
    rig.consumer.step()
    t1, t2, t3 = [t for t, _ in rig.dispatcher.submitted]
    rig.dispatcher.finish(t1)
    rig.dispatcher.finish(t2, ok=False, error="stage said no")
    rig.dispatcher.finish(t3)
    rig.clock.advance(1)
    with pytest.raises(BatchFailed) as info:
        rig.consumer.step()
    assert "stage said no" in str(info.value)
    assert rig.checkpoint().sequence_number == rig.seqs[9]  # before batch 2
    assert rig.consumer.exit_code == ExitCode.BATCH_FAILED
    assert rig.lease_owner() is None  # released so a restart can start at once


def test_failure_waits_for_earlier_batches_and_stops_reading():
    rig = Rig(60, **{"consumer.checkpoint_interval_s": "0.1"})
    rig.consumer.start()
    rig.consumer.step()
    t1, t2, _ = [t for t, _ in rig.dispatcher.submitted]
    rig.dispatcher.finish(t2, ok=False, error="x")
    gets = sum(1 for c in rig.kinesis.calls if c[0] == "get_records")
    rig.consumer.step()
    assert rig.consumer.state == "failing"
    assert sum(1 for c in rig.kinesis.calls if c[0] == "get_records") == gets
    rig.dispatcher.finish(t1)
    with pytest.raises(BatchFailed):
        rig.consumer.step()
    assert rig.checkpoint().sequence_number == rig.seqs[9]


def test_lease_lost_stops_without_checkpoint():
    rig = Rig(30, **{"consumer.checkpoint_interval_s": "100"})
    rig.consumer.start()
    rig.run(2)
    # someone took it (ours lapsed unseen: freed, then taken)
    rig.control.release_lease("s", "sh", "host:1:abc", rig.consumer.lease.token or 0)
    rig.control.acquire_lease("s", "sh", "other:2:x", 30)
    rig.clock.advance(10)
    with pytest.raises(LeaseLost):
        rig.consumer.step()
    assert rig.control.checkpoints("s") == {}


def test_lease_renewal_failing_past_ttl_is_lease_lost():
    rig = Rig(0)
    rig.consumer.start()
    rig.control.renew_error = ServiceUnavailable("db down")
    rig.clock.advance(10)
    rig.consumer.step()  # one failure: keep going
    rig.clock.advance(10)
    with pytest.raises(LeaseLost):
        rig.consumer.step()


def test_second_consumer_refused_naming_owner():
    rig = Rig(0)
    rig.control.acquire_lease("s", "sh", "otherhost:7:zz", 3600)  # live, not expiring soon
    with pytest.raises(LeaseHeld, match="otherhost:7:zz"):
        rig.consumer.start()


def test_shard_end_checkpoint_exits_zero_at_once():
    rig = Rig(5)
    rig.set_checkpoint("sh", Checkpoint(SHARD_END, 0, True))
    rig.consumer.start()
    assert rig.consumer.exit_code == ExitCode.OK and rig.dispatcher.submitted == []


def test_closed_shard_drained_then_shard_end():
    rig = Rig(23)
    rig.kinesis.shards["sh"].closed = True
    rig.consumer.start()
    rig.run(10)
    assert rig.delivered() == rig.seqs
    assert rig.consumer.exit_code == ExitCode.OK
    assert rig.checkpoint() == Checkpoint(SHARD_END, 0, True)
    assert rig.control.history("s", "sh")[0].source == "shard_end"  # newest first
    assert rig.lease_owner() is None


def test_shard_end_waits_for_in_flight_batches():
    rig = Rig(12)
    rig.kinesis.shards["sh"].closed = True
    rig.consumer.start()
    rig.run(5, finish=False)
    assert not rig.consumer.done and rig.consumer.state == "shard_end"
    rig.run(3)
    assert rig.consumer.done and rig.checkpoint().shard_end


def test_child_waits_for_parents_shard_end():
    rig = Rig(0, shard="child")
    rig.kinesis.add_shard("parent", closed=True)
    rig.kinesis.add_shard("adjacent", closed=True)
    rig.kinesis.shards["child"].parent = "parent"
    rig.kinesis.shards["child"].adjacent_parent = "adjacent"
    rig.kinesis.put("child", b"c0")
    rig.consumer.start()
    assert rig.consumer.state == "waiting_parents"
    rig.run(5)
    assert rig.dispatcher.submitted == [] and rig.consumer.state == "waiting_parents"
    rig.set_checkpoint("parent", Checkpoint(SHARD_END, 0, True))
    rig.run(5)
    assert rig.consumer.state == "waiting_parents"
    del rig.kinesis.shards["adjacent"]  # aged out of the stream
    rig.run(10)
    assert len(rig.delivered()) == 1
    assert rig.consumer.lease.renewals >= 1


def test_graceful_stop_waits_for_in_flight_checkpoints_and_releases():
    rig = Rig(25, **{"consumer.checkpoint_interval_s": "600", "consumer.batch_max_age_s": "60"})
    rig.consumer.start()
    rig.consumer.step()  # 2 full batches in flight + 5 records in the open batch
    rig.consumer.request_stop()
    gets = sum(1 for c in rig.kinesis.calls if c[0] == "get_records")
    rig.consumer.step()
    assert len(rig.dispatcher.submitted) == 2  # nothing new is sent while stopping
    assert not rig.consumer.done and rig.consumer.state == "stopping"
    rig.dispatcher.finish_all()
    rig.consumer.step()
    assert rig.consumer.exit_code == ExitCode.OK
    assert sum(1 for c in rig.kinesis.calls if c[0] == "get_records") == gets
    assert rig.checkpoint().sequence_number == rig.seqs[19]
    assert rig.lease_owner() is None


def test_graceful_stop_timeout_checkpoints_only_staged_prefix():
    rig = Rig(30, **{"consumer.checkpoint_interval_s": "600", "consumer.shutdown_timeout_s": "3"})
    rig.consumer.start()
    rig.consumer.step()
    t1, t2, t3 = [t for t, _ in rig.dispatcher.submitted]
    rig.dispatcher.finish(t1)
    rig.dispatcher.finish(t3)
    rig.consumer.request_stop()
    rig.consumer.step()
    assert not rig.consumer.done
    rig.clock.advance(3)
    rig.consumer.step()
    assert rig.consumer.exit_code == ExitCode.OK
    assert rig.checkpoint().sequence_number == rig.seqs[9]


def test_checkpoint_db_outage_retried_later():
    rig = Rig(10, **{"consumer.checkpoint_interval_s": "1"})
    rig.consumer.start()
    rig.control.checkpoint_error = ServiceUnavailable("db blip")
    rig.run(4)
    assert "sh" not in rig.control.checkpoints("s")
    rig.control.checkpoint_error = None
    rig.run(3)
    assert rig.checkpoint().sequence_number == rig.seqs[9]


def test_expired_iterator_and_throttle_inside_step():
    rig = Rig(50)
    rig.consumer.start()
    rig.kinesis.faults += [client_error("ExpiredIteratorException"),
                           client_error("ProvisionedThroughputExceededException")]
    rig.run(3)
    rig.kinesis.faults += [client_error("ExpiredIteratorException")]
    rig.run(10)
    assert rig.delivered() == rig.seqs


def test_status_report_fields():
    rig = Rig(10, **{"consumer.report_interval_s": "1"})
    reported: dict[str, dict[str, object]] = {}  # the fields of each shard's last report
    store_report = rig.control.report_status

    def report_status(stream: str, shard_id: str, **values: object) -> None:
        reported[shard_id] = values
        store_report(stream, shard_id, **values)

    rig.control.report_status = report_status  # type: ignore[method-assign]
    rig.consumer.start()
    rig.run(5)
    st = reported["sh"]
    assert set(st) == {"owner", "last_read_sequence", "checkpoint_sequence",
                       "millis_behind_latest", "iterator_age_ms", "inflight_batches",
                       "inflight_bytes", "records_per_s", "state"}
    assert st["last_read_sequence"] == rig.seqs[-1]
    assert rig.status().last_read_sequence == rig.seqs[-1]


def test_shard_end_respects_the_window():
    rig = Rig(75)  # 3 reads of up to 30, 8 batches, window of 3
    rig.kinesis.shards["sh"].closed = True
    rig.consumer.start()
    seen_max = 0
    for _ in range(40):
        if rig.consumer.done:
            break
        pause = rig.consumer.step()
        seen_max = max(seen_max, rig.consumer.window.inflight_batches)
        rig.dispatcher.finish_all()
        rig.clock.advance(max(pause, 0.01))
    assert seen_max <= 3
    assert rig.delivered() == rig.seqs
    assert rig.checkpoint().shard_end


def test_run_first_signal_graceful_second_forced():
    import threading
    import time

    from shardline.consumers import main as consumer_main

    rig = Rig(30)
    stop = StopSignals()

    def send():
        time.sleep(0.3)
        stop.handler(15, None)  # SIGTERM: graceful, but jobs never finish...
        time.sleep(0.3)
        assert rig.consumer.state == "stopping" and not rig.consumer.done
        stop.handler(2, None)  # ...so a second signal ends it at once

    t = threading.Thread(target=send)
    t.start()
    rc = consumer_main.run(rig.consumer, stop)
    t.join()
    assert rc == ExitCode.FORCED_STOP
    assert "sh" not in rig.control.checkpoints("s")
    assert rig.lease_owner() == "host:1:abc"  # nothing more was done


def test_run_first_signal_exits_zero_after_in_flight_jobs():
    import threading
    import time

    from shardline.consumers import main as consumer_main

    rig = Rig(30, **{"consumer.checkpoint_interval_s": "600"})
    stop = StopSignals()

    def send():
        time.sleep(0.3)
        stop.handler(15, None)
        time.sleep(0.3)
        rig.dispatcher.finish_all()

    t = threading.Thread(target=send)
    t.start()
    rc = consumer_main.run(rig.consumer, stop)
    t.join()
    assert rc == ExitCode.OK
    assert rig.checkpoint().sequence_number == rig.seqs[29]
    assert rig.lease_owner() is None


def test_list_shards_throttling_at_start_is_retried_before_the_lease():
    rig = Rig(5)
    rig.kinesis.list_faults = [client_error("LimitExceededException", "ListShards"),
                               client_error("InternalFailure", "ListShards", 500),
                               client_error("ProvisionedThroughputExceededException", "ListShards")]
    rig.consumer.start()
    assert rig.kinesis.list_faults == [] and len(rig.clock.slept) == 3
    assert rig.consumer.state == "reading" and rig.lease_owner() == "host:1:abc"
    rig.run(6)  # read, pace, empty read, then the batch closes by age
    assert rig.delivered() == rig.seqs


def test_list_shards_failing_for_good_at_start_takes_no_lease():
    from shardline.consumers.consumer import SHARD_LIST_ATTEMPTS

    rig = Rig(5)
    rig.kinesis.list_faults = [client_error("InternalFailure", "ListShards", 500)] * 50
    with pytest.raises(ServiceUnavailable):
        rig.consumer.start()
    assert len(rig.kinesis.list_faults) == 50 - SHARD_LIST_ATTEMPTS
    assert rig.control.get_lease("s", "sh") is None


def test_an_expiring_lease_is_waited_out_instead_of_exiting():
    rig = Rig(5)
    rig.control.held_for = [4.0, 1.5]  # the dead predecessor's lease, then a last moment
    rig.consumer.start()
    assert rig.control.held_for == [] and rig.lease_owner() == "host:1:abc"
    assert rig.clock.slept[:2] == pytest.approx([4.2, 1.7])


def test_a_live_holder_still_makes_the_consumer_exit_lease_held():
    rig = Rig(5)  # ttl 30 + renew 10: one full wait fits, a second does not
    rig.control.held_for = [29.0, 29.0, 29.0]
    with pytest.raises(LeaseHeld):
        rig.consumer.start()
    assert rig.clock.slept == pytest.approx([29.2]) and len(rig.control.held_for) == 1


def test_debug_timeline_says_where_each_batch_waited(caplog):
    import logging
    import re

    caplog.set_level(logging.DEBUG, logger="shardline")
    rig = Rig(40, **{"consumer.get_records_limit": "40"})
    rig.consumer.start()
    rig.consumer.step()  # 4 batches closed: 3 dispatched, the 4th waits for the window
    rig.clock.advance(2)
    rig.dispatcher.finish_all()
    rig.consumer.step()  # the 3 staged (2 s each); the 4th dispatched now
    rig.clock.advance(1)
    rig.dispatcher.finish_all()
    rig.consumer.step()
    lines = [m.group(1, 2, 3) for r in caplog.records
             if (m := re.search(r"timeline batch=\S+ records=10 dispatch_wait=(\S+) "
                                r"stage=(\S+) prefix_wait=(\S+)", r.getMessage()))]
    assert [tuple(float(x) for x in line) for line in lines] == \
        [(0.0, 2.0, 0.0)] * 3 + [(2.0, 1.0, 0.0)]
