"""One turn of the per-shard loop, ``Consumer.step()``, with everything injected.

Order inside a step: renew the lease; collect job outcomes (advance the staged
watermark, or stop on a batch that kept failing); then either wait for the
parent shards, drain for a graceful stop or SHARD_END, or read. Reading stops
while the in-flight window is full (backpressure) but the lease and the iterator
are still kept fresh. A step never sleeps: it returns how long the caller may
wait, so tests drive it with a fake clock and fakes for reader/dispatcher/control.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from typing import Callable, Protocol

import tenacity

from shardline.consumers.batcher import Batcher
from shardline.consumers.cadence import CheckpointCadence, Every
from shardline.consumers.dispatcher import Outcome
from shardline.consumers.lease import LeaseKeeper, make_owner
from shardline.consumers.reader import Position, ReadResult, start_position
from shardline.consumers.window import Slot, Window
from shardline.codec import Batch, encoded_size
from shardline.records.control import SHARD_END, Checkpoint
from shardline.controlstore.base import ControlStore, lease_lost
from shardline.errors import (BatchFailed, LeaseHeld, RetriableError, ServiceUnavailable,
                              ShardlineError)
from shardline.exitcodes import ExitCode
from shardline.kinesis import ShardInfo
from shardline.logs import ContextLogger, get_logger
from shardline.metrics.pipeline import ConsumerMetrics
from shardline.settings import Settings

BUSY_S = 0.05  # pause while waiting on in-flight jobs
STOP_CHECKPOINT_GRACE_S = 5.0  # a graceful stop retries its last checkpoint this long
LEASE_WAIT_MARGIN_S = 0.2  # past the holder's expiry, for clock steps
SHARD_LIST_ATTEMPTS = 10  # ListShards tries at start (random exponential up to 5 s: ~20 s)


class ShardNotFound(ShardlineError):
    """The shard is not in the stream (typo, or it aged out)."""


class ShardSource(Protocol):
    """What the loop reads through: ``ShardReader`` (GetRecords with an iterator kept fresh,
    pacing and bounded retries). A Protocol rather than the class so that the loop's
    contract is written down and a test may drive it with a double of its own."""

    position: Position
    last_sequence: str | None
    closed: bool  # SHARD_END reached: no iterator any more

    def sleep(self, seconds: float) -> None: ...
    def start(self, position: Position) -> None: ...
    def wait_s(self, now: float) -> float: ...
    def read(self) -> ReadResult: ...
    def keep_fresh(self, now: float) -> None: ...
    def iterator_age_s(self, now: float) -> float: ...


class BatchSink(Protocol):
    """Where closed batches go and their outcomes come from: ``Dispatcher`` (Gearman jobs
    on threads) and ``tests.fakes.FakeDispatcher``. ``submit`` never blocks the loop."""

    def start(self) -> None: ...
    def submit(self, ticket: int, stream: str, batch: Batch) -> None: ...
    def poll(self) -> list[Outcome]: ...
    def wait(self, timeout: float) -> bool: ...
    def stop(self) -> None: ...


class Consumer:
    def __init__(self, settings: Settings, shard_id: str, *, reader: ShardSource,
                 dispatcher: BatchSink, control: ControlStore,
                 shards: Callable[[], list[ShardInfo]],
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, owner: str | None = None,
                 log: ContextLogger | None = None):
        cs = self.cs = settings.consumer
        self.stream, self.shard_id = settings.kinesis.stream, shard_id
        self.reader, self.dispatcher, self.control = reader, dispatcher, control
        self.shards = shards
        self.clock, self.wall = clock, wall
        self.log = log or get_logger("consumer", stream=self.stream, shard=shard_id)
        self.owner = owner or make_owner()
        self.lease = LeaseKeeper(control, self.stream, shard_id, self.owner, cs.lease_ttl_s,
                                 cs.lease_renew_s, self.log)
        self.batcher = Batcher(self.stream, shard_id, cs.batch_max_records, cs.batch_max_bytes,
                               cs.batch_max_age_s)
        self.window = Window(cs.window_max_batches, cs.window_max_bytes)
        self.cadence = CheckpointCadence(cs.checkpoint_interval_s, cs.checkpoint_every_records)
        self.report_every = Every(cs.report_interval_s)
        self.parent_every = Every(cs.parent_poll_s)
        self.pending: deque[tuple[Batch, int, float]] = deque()  # closed (when), not admitted
        self.parents: list[str] = []
        self.committed: Checkpoint | None = None
        self.staged_cp: Checkpoint | None = None
        self.state = "starting"
        self.exit_code: int | None = None
        self.stop_deadline: float | None = None
        self.millis_behind: int | None = None
        self.records_read = 0  # a plain int on the read path; metrics get it at each report
        self._rate_mark: tuple[float, int] | None = None
        self.metrics = ConsumerMetrics(self.stream, shard_id)

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> None:
        """Lease the shard, find where to start, and whether parents must finish first."""
        info = self._shard_info()  # before the lease: it may take a while
        if info is None:
            raise ShardNotFound(f"shard {self.shard_id} is not in stream {self.stream}")
        self._acquire_lease()
        now = self.clock()
        self.log.info("lease acquired: owner %s token %s", self.owner, self.lease.token)
        cp = self.control.get_checkpoint(self.stream, self.shard_id)
        self.committed = self.staged_cp = cp
        if cp is not None and cp.shard_end:
            self.log.info("checkpoint is SHARD_END: nothing to read")
            self._finish(ExitCode.OK, "shard_end")
            return
        self.reader.start(start_position(cp, self.cs, self.wall))
        self.log.info("starting at %s", self.reader.position)
        self.cadence.start(now)
        if cp is None:
            self.parents = list(info.parents)
        self.state = "waiting_parents" if self.parents else "reading"
        self._report(now)

    def _shard_info(self) -> ShardInfo | None:
        """This shard in ListShards. Throttling, 5xx and connection errors are retried
        (ListShards is shared by every consumer of the stream, and they start together
        after a deploy or an outage) rather than costing a process restart."""
        def warn(state: tenacity.RetryCallState) -> None:
            self.log.warning("ListShards retry %d after %s", state.attempt_number,
                             state.outcome.exception() if state.outcome else "?")

        retryer = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(RetriableError),
            wait=tenacity.wait_random_exponential(multiplier=0.2, max=5),
            stop=tenacity.stop_after_attempt(SHARD_LIST_ATTEMPTS), sleep=self.reader.sleep,
            before_sleep=warn, reraise=True)
        return next((s for s in retryer(self.shards) if s.shard_id == self.shard_id), None)

    def _acquire_lease(self) -> None:
        """Take the lease, waiting out an expiring one (a restarted consumer finds its dead
        predecessor's lease): up to one TTL plus one renew period, then ``LeaseHeld``."""
        budget = self.cs.lease_ttl_s + self.cs.lease_renew_s
        waited = 0.0
        while True:
            try:
                self.lease.acquire(self.clock())
                return
            except LeaseHeld as exc:
                wait = (exc.expires_in_s or 0.0) + LEASE_WAIT_MARGIN_S
                if exc.expires_in_s is None or waited + wait > budget:
                    raise
                self.log.info("shard held by another owner until its lease expires in %.1fs; "
                              "waiting", exc.expires_in_s)
                self.reader.sleep(wait)
                waited += wait

    def request_stop(self) -> None:
        """Graceful stop: no reads or submissions; finish in-flight jobs, checkpoint, release."""
        if self.stop_deadline is None and self.exit_code is None:
            self.stop_deadline = self.clock() + self.cs.shutdown_timeout_s
            self.state = "stopping"
            self.log.info("stopping: waiting up to %.0fs for %d in-flight batches",
                          self.cs.shutdown_timeout_s, self.window.inflight_batches)

    @property
    def done(self) -> bool:
        return self.exit_code is not None

    def _finish(self, code: int, state: str) -> None:
        self.state = state
        self._report(self.clock(), quiet=True)
        self.lease.release()
        self.dispatcher.stop()
        self.exit_code = int(code)

    # -- the loop ---------------------------------------------------------------
    def step(self) -> float:
        """One turn; returns how long the caller may sleep before the next."""
        if self.done:
            return 0.0
        now = self.clock()
        self.lease.maybe_renew(now)  # LeaseLost propagates: stop, never checkpoint
        self._collect(now)
        if self.report_every.due(now):
            self._report(now)
        if self.state == "failing":
            return BUSY_S
        if self.stop_deadline is not None:
            return self._drain_for_stop(now)
        if self.state == "waiting_parents":
            return self._wait_parents(now)
        self._submit(now, flush=self.reader.closed)
        self._maybe_checkpoint(now)
        if self.reader.closed:
            return self._drain_shard_end(now)
        if self.pending or self.window.full():
            self.state = "backpressure"
            self._keep_iterator(now)
            return BUSY_S
        self.state = "reading"
        wait = self.reader.wait_s(now)
        if wait > 0:
            return min(wait, self._batch_wait(now))
        try:
            result = self.reader.read()
        except RetriableError as exc:
            self.log.warning("read failed after retries, will try again: %s", exc)
            return 1.0
        now = self.clock()
        self.records_read += len(result.records)
        if result.millis_behind is not None:
            self.millis_behind = result.millis_behind
        self.batcher.add(result.records, now)
        self._submit(now, flush=result.closed)
        if result.raw_count == 0 and not result.closed:
            return min(self.cs.idle_sleep_s, self._batch_wait(now))
        return 0.0

    def _batch_wait(self, now: float) -> float:
        if not len(self.batcher):
            return self.cs.idle_sleep_s
        return max(0.0, self.cs.batch_max_age_s - self.batcher.age_s(now))

    def _keep_iterator(self, now: float) -> None:
        try:
            self.reader.keep_fresh(now)
        except RetriableError as exc:
            self.log.warning("iterator refresh failed, will retry: %s", exc)

    # -- batches ----------------------------------------------------------------
    def _submit(self, now: float, *, flush: bool = False) -> None:
        for batch in self.batcher.take(now, flush=flush):
            self.pending.append((batch, encoded_size(batch.records), now))
        while self.pending and self.window.can_admit(self.pending[0][1]):
            batch, nbytes, closed_at = self.pending.popleft()
            ticket = self.window.add(batch, nbytes, closed_at, now)
            self.dispatcher.submit(ticket, self.stream, batch)

    def _collect(self, now: float) -> None:
        for out in self.dispatcher.poll():
            if out.ok:
                self.window.staged(out.ticket, now)
            else:
                self.window.failed(out.ticket, out.error or "failed")
        cp, count = self.window.pop_staged_prefix()
        if self.log.isEnabledFor(logging.DEBUG):
            for slot in self.window.popped:
                # bench/bench_pipeline.py --timeline reads these: seconds from the batch's
                # close to its dispatch (the in-flight window), to staged, to checkpointable
                self.log.debug("timeline batch=%s records=%d dispatch_wait=%.4f stage=%.4f "
                               "prefix_wait=%.4f", slot.batch.batch_id, len(slot.batch.records),
                               slot.dispatched_at - slot.closed_at,
                               slot.staged_at - slot.dispatched_at, now - slot.staged_at)
        self.window.popped.clear()
        if cp is not None:
            self.staged_cp = cp
            self.cadence.staged(count)
        failed = self.window.first_failure()
        if failed is not None:
            if self.state != "failing":
                self.log.error("batch %s failed for good; stopping reads", failed.batch.batch_id)
            self.state = "failing"  # read nothing more; let earlier batches finish
            head = self.window.head()
            if head is failed:
                self._fail(failed)

    def _fail(self, slot: Slot) -> None:
        """A batch kept failing: checkpoint only what precedes it, then stop (exit 70)."""
        b = slot.batch
        msg = (f"batch {b.batch_id} ({len(b.records)} records) failed after "
               f"{self.cs.job_max_attempts} attempts: {slot.error}; checkpoint held at "
               f"{self._cp_text(self.staged_cp)}")
        self.log.error(msg)
        self.state = "failed"
        try:
            self._write_checkpoint(self.clock())
        finally:
            self._finish(ExitCode.BATCH_FAILED, "failed")
        raise BatchFailed(msg)

    # -- checkpoints ------------------------------------------------------------
    def _maybe_checkpoint(self, now: float) -> None:
        if self.cadence.due(now) and self.staged_cp != self.committed:
            try:
                self._write_checkpoint(now)
            except ServiceUnavailable as exc:
                self.log.warning("checkpoint failed, will retry: %s", exc)

    def _write_checkpoint(self, now: float, cp: Checkpoint | None = None,
                          source: str = "consumer") -> None:
        cp = cp or self.staged_cp
        if cp is None or cp == self.committed:
            return
        token = self.lease.token
        if token is None:  # released: what the store would answer to a write without it
            raise lease_lost(self.stream, self.shard_id, 0)
        self.control.checkpoint(self.stream, self.shard_id, self.owner, token,
                                self.cs.lease_ttl_s, cp, source=source)
        self.committed = cp
        self.lease.renewed(now)
        self.cadence.mark(now)

    @staticmethod
    def _cp_text(cp: Checkpoint | None) -> str:
        return "none" if cp is None else f"{cp.sequence_number}/{cp.sub_sequence_number}"

    # -- endings ----------------------------------------------------------------
    def _drain_for_stop(self, now: float) -> float:
        # Only in-flight jobs are waited for; read-but-unsent records are simply read
        # again after the restart (they are past the checkpoint), which keeps the stop short.
        if self.window.empty() or now >= (self.stop_deadline or now):
            if not self.window.empty():
                self.log.warning("shutdown timeout: %d batches still in flight, checkpoint "
                                 "stays before them", self.window.inflight_batches)
            try:
                self._write_checkpoint(now)
            except ServiceUnavailable as exc:
                if now < (self.stop_deadline or now) + STOP_CHECKPOINT_GRACE_S:
                    self.log.warning("final checkpoint failed, retrying: %s", exc)
                    return 0.5
                raise
            self.log.info("stopped; checkpoint %s", self._cp_text(self.committed))
            self._finish(ExitCode.OK, "stopped")
            return 0.0
        return BUSY_S

    def _drain_shard_end(self, now: float) -> float:
        self.state = "shard_end"
        self._submit(now, flush=True)
        if self.pending or not self.window.empty():
            return BUSY_S
        end = Checkpoint(SHARD_END, 0, True)
        try:
            self._write_checkpoint(now, end, source="shard_end")
        except ServiceUnavailable as exc:  # keep trying; the lease keeper bounds it
            self.log.warning("SHARD_END checkpoint failed, retrying: %s", exc)
            return 1.0
        self.log.info("shard closed and fully staged: checkpoint SHARD_END")
        self._finish(ExitCode.OK, "shard_end")
        return 0.0

    def _wait_parents(self, now: float) -> float:
        if not self.parent_every.due(now):
            return self.parent_every.remaining(now)
        self.parent_every.mark(now)
        try:
            live = {s.shard_id for s in self.shards()}
            waiting = []
            for parent in self.parents:
                if parent not in live:
                    continue  # aged out of the stream: nothing left to wait for
                cp = self.control.get_checkpoint(self.stream, parent)
                if cp is None or not cp.shard_end:
                    waiting.append(parent)
        except RetriableError as exc:
            self.log.warning("parent check failed, will retry: %s", exc)
            return self.cs.parent_poll_s
        if waiting:
            self.log.info("waiting for parent shards %s to reach SHARD_END", ",".join(waiting))
            return self.cs.parent_poll_s
        self.log.info("parents done; reading")
        self.parents, self.state = [], "reading"
        return 0.0

    # -- status -----------------------------------------------------------------
    def checkpoint_age_s(self, now: float) -> float:
        """Seconds since the last checkpoint write while staged records wait for one; 0
        when the checkpoint is current (an idle shard is not a late checkpoint)."""
        if self.staged_cp == self.committed or self.cadence.last is None:
            return 0.0
        return max(0.0, now - self.cadence.last)

    def _report(self, now: float, quiet: bool = False) -> None:
        self.report_every.mark(now)
        rate = 0.0
        if self._rate_mark is not None and now > self._rate_mark[0]:
            rate = (self.records_read - self._rate_mark[1]) / (now - self._rate_mark[0])
        self._rate_mark = (now, self.records_read)
        iterator_age_s = self.reader.iterator_age_s(now)
        self.metrics.push(records_read=self.records_read, millis_behind=self.millis_behind,
                          iterator_age_s=iterator_age_s,
                          inflight_batches=self.window.inflight_batches,
                          checkpoint_age_s=self.checkpoint_age_s(now))
        try:
            self.control.report_status(
                self.stream, self.shard_id, owner=self.owner,
                last_read_sequence=self.reader.last_sequence,
                checkpoint_sequence=self.committed.sequence_number if self.committed else None,
                millis_behind_latest=self.millis_behind,
                iterator_age_ms=int(iterator_age_s * 1000),
                inflight_batches=self.window.inflight_batches,
                inflight_bytes=self.window.inflight_bytes, records_per_s=round(rate, 1),
                state=self.state)
        except ServiceUnavailable as exc:
            if not quiet:
                self.log.warning("status report failed: %s", exc)
