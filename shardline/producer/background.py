"""The producer's background thread: buffer -> batches -> lanes, and the spool when Kinesis lags.

Two modes. **direct**: records taken from the buffer wait per lane (a lane owns a
group of shards) until a batch is full or ``linger_ms`` old, then go to that lane's
sender thread. **spool** (only with a spool directory): entered when the oldest
record not yet acknowledged is ``spool_after_ms`` old, or the buffer is half full;
every record held in memory (waiting, or in a call that has not come back: those
calls are abandoned) is written to the spool, new records follow them there, and
the lanes send from the spool's head, oldest first, acknowledging chunk by chunk.
When the head catches up with the tail the spool is emptied and direct mode resumes.

``durable_seq`` (published on the producer): every record with a sequence number up
to it has reached Kinesis, was fsynced to the spool, or was dropped by the policy.
The records above it are the crash window: in direct mode those accepted in the
last ``spool_after_ms`` (plus a cycle), in spool mode those written since the last
fsync (``sync_interval_ms``).
"""
from __future__ import annotations

import collections
import threading
import time
from operator import itemgetter
from typing import TYPE_CHECKING, TypedDict

from shardline.kinesis import KinesisClient, ShardMap, StreamNotFound, error_code, open_shards
from shardline.logs import get_logger
from shardline.producer.kpl import Entry, Record, pack
from shardline.producer.put import MAX_BATCH_BYTES, MAX_BATCH_RECORDS
from shardline.producer.put_records import Lane, PutBatch, PutStats, Sender
from shardline.producer.spool import Chunk, Spool

if TYPE_CHECKING:
    from shardline.producer.metrics import Exporter
    from shardline.producer.producer import Producer

log = get_logger("producer")

DEPTH = 2                                  # batches queued or in flight per lane
MAX_CHUNKS = 4                             # spool chunks read and not yet acknowledged
MAP_WAIT_S = 5.0                           # how long records wait for the first ListShards
AGG_BATCH_BYTES = 4_800_000                # user bytes per aggregated call (< 5 MiB after framing)
PLAIN_READY_BYTES = MAX_BATCH_BYTES - 64 * 1024


class PumpCounts(TypedDict):
    """What the background thread counts (``Producer.stats()`` adds them to its own)."""

    put: int
    sent: int
    records: int
    calls: int
    bytes: int
    retried: int
    retried_calls: int
    spooled: int
    torn: int
    mode: str
    spool_bytes: int
    shards: dict[str, int]
    elapsed_s: float


def _sizes(recs: list[Record]) -> int:
    return sum([len(r[3]) + len(r[2]) for r in recs])


_seq_of = itemgetter(0)


class Pump:
    """Runs on the producer's thread; lane threads report back through ``done``."""

    def __init__(self, producer: Producer):
        self.p = producer
        self.cfg = cfg = producer.config
        self.linger_ns = int(cfg.linger_ms * 1e6)
        self.spool_after_ns = int(cfg.spool_after_ms * 1e6)
        self.stats = PutStats()
        self.stats_lock = threading.Lock()
        self.stopping = False
        self.stop_event = threading.Event()
        self.done: collections.deque[PutBatch] = collections.deque()
        self.lanes: list[Lane] = []
        self.pending: list[collections.deque[Record]] = []
        self.pending_bytes: list[int] = []
        self.inflight: set[PutBatch] = set()
        self.leftover: list[Record] = []
        self.mode = "direct"
        self.spool: Spool | None = None
        self.chunks: collections.deque[Chunk] = collections.deque()  # read from the spool
        self.chunk_lanes: list[collections.deque[PutBatch]] = []
        self.taken_seq = producer.seq_base
        self.unsynced_from: int | None = None
        self.spooled = 0
        self.shard_map = ShardMap([])
        # The map events are routed by, and per partition key (sessions repeat) its shard
        # slot and lane under that map. Only the pump thread touches these: a new map
        # from ListShards (another thread) is taken up at the start of a cycle.
        self.routed_by = self.shard_map
        self.slots: dict[str, int] = {}
        self.lane_of_key: dict[str, int] = {}
        self.shard_map_at = 0.0
        self.shard_try_at = -1e9
        self.loading = False
        self.exporter: Exporter | None = None
        self.client: KinesisClient = None
        self.started = time.monotonic()

    # -- lifecycle --------------------------------------------------------------

    def run(self) -> None:
        try:
            self._setup()
            while True:
                self.p._wake.clear()
                self._cycle()
                if self.stopping:
                    self._finish()
                    return
                self.p._wake.wait(self._timeout())
        except BaseException:  # noqa: BLE001 - a dead sender must be loud
            log.exception("producer background thread for %s failed; events stay in memory "
                          "until the buffer is full", self.cfg.stream)
            raise

    def _setup(self) -> None:
        cfg = self.cfg
        self.client = self.p._make_client()
        self._refresh_shards()  # ListShards starts now, on a thread of its own
        if self.p.metrics:
            from shardline.producer.metrics import Exporter

            self.exporter = Exporter(cfg.stream)
        for i in range(cfg.lanes):
            sender = Sender(self.client, cfg.stream, self.stats, max_attempts=None,
                            backoff_base_s=cfg.backoff_base_ms / 1000,
                            backoff_max_s=cfg.backoff_max_ms / 1000, progress=None,
                            sleep=self.stop_event.wait, lock=self.stats_lock,
                            stopping=lambda: self.stopping)
            self.lanes.append(Lane(sender, True, f"shardline-producer-lane-{i}", DEPTH,
                                   on_done=self._on_done))
            self.pending.append(collections.deque())
            self.pending_bytes.append(0)
            self.chunk_lanes.append(collections.deque())
        if self.p.initial_shards:
            self.shard_map = ShardMap(self.p.initial_shards)
            self.shard_map_at = time.monotonic()
        if cfg.spool_dir:
            self.spool = Spool(cfg.spool_dir, segment_bytes=cfg.segment_bytes,
                               max_bytes=cfg.max_spool_bytes,
                               sync_interval_s=cfg.sync_interval_ms / 1000)
            self.spool.open()
            if not self.spool.empty():
                self.mode = "spool"

    def stop(self) -> None:
        self.stopping = True
        self.stop_event.set()

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's threads do not exist here; its files stay its own."""
        if self.spool is not None:
            self.spool.forget_after_fork()

    def _on_done(self, batch: PutBatch, exc: BaseException | None) -> None:
        if exc is not None:
            log.error("sending a batch failed: %s: %s", type(exc).__name__, exc)
        self.done.append(batch)
        self.p._wake.set()

    def _timeout(self) -> float:
        t = min(self.linger_ns / 2e9, 0.05)
        if self.unsynced_from is not None:
            t = min(t, max(self.cfg.sync_interval_ms / 1000, 0.001))
        return max(t, 0.001)

    # -- one cycle ----------------------------------------------------------------

    def _cycle(self) -> None:
        now = time.monotonic_ns()
        records, spill = self.p._take()
        if records:
            self.taken_seq = records[-1][0]
        self._handle_done()
        if self.routed_by is not self.shard_map:  # a new map: waiting events follow it
            self.routed_by = self.shard_map
            self.slots, self.lane_of_key = {}, {}
            waiting = sorted((r for q in self.pending for r in q), key=lambda r: r[0])
            for i, q in enumerate(self.pending):
                q.clear()
                self.pending_bytes[i] = 0
            records = waiting + records
        if self.mode == "direct":
            self._route(records)
            if self.spool is not None and (spill or self._lagging(now)):
                self._enter_spool()
            else:
                self._submit_ready(now)
        else:
            self._to_spool(records)
        if self.mode == "spool":
            self._drain()
        if self.spool is not None and self.spool.sync():
            self.unsynced_from = None
        self._refresh_shards()
        self._publish()

    def _lagging(self, now: int) -> bool:
        if self.p._held > self.cfg.max_buffer_bytes // 2:
            return True
        oldest = min([q[0][1] for q in self.pending if q] +
                     [b.min_t for b in self.inflight if b.tag is None and not b.abandoned],
                     default=now)
        return now - oldest > self.spool_after_ns

    def _slot(self, key: str) -> int:
        slot = self.slots.get(key)
        if slot is None:
            if len(self.slots) > 200_000:
                self.slots.clear()
            slot = self.slots[key] = self.routed_by.slot(key)
        return slot

    def _lane_of(self, key: str) -> int:
        lane = self.lane_of_key.get(key)
        if lane is None:
            n = len(self.lanes)
            lane = self._slot(key) % n if n > 1 and len(self.routed_by) > 1 else 0
            if len(self.lane_of_key) > 200_000:
                self.lane_of_key.clear()
            self.lane_of_key[key] = lane
        return lane

    def _route(self, records: list[Record]) -> None:
        if not records:
            return
        if len(self.lanes) == 1 or len(self.routed_by) <= 1:
            self.pending[0].extend(records)
            self.pending_bytes[0] += _sizes(records)
            return
        pending, nbytes, lanes, lane_of = self.pending, self.pending_bytes, \
            self.lane_of_key, self._lane_of
        for rec in records:  # every event: kept to dict look-ups and appends
            key = rec[2]
            i = lanes.get(key)
            if i is None:
                i = lane_of(key)
            pending[i].append(rec)
            nbytes[i] += len(rec[3]) + len(key)

    def _submit_ready(self, now: int) -> None:
        flushing = self.p._flush_to > self.p.acked_seq or self.stopping
        agg = self.cfg.aggregate and len(self.routed_by) > 0
        if (self.cfg.aggregate or len(self.lanes) > 1) and not len(self.routed_by) and \
                not self.stopping and time.monotonic() - self.started < MAP_WAIT_S:
            # The shard map is on its way: wait for it rather than send plain records, or
            # send a key's first records from one lane and its next ones from another.
            return
        for i, lane in enumerate(self.lanes):
            q = self.pending[i]
            while q and lane.busy < DEPTH:
                full = self.pending_bytes[i] >= (AGG_BATCH_BYTES if agg else PLAIN_READY_BYTES) \
                    or (not agg and len(q) >= MAX_BATCH_RECORDS)
                if not (full or flushing or now - q[0][1] >= self.linger_ns):
                    break
                batch = self._build(q)
                self.pending_bytes[i] -= batch.held
                self.inflight.add(batch)
                lane.offer(batch)

    def _build(self, q: collections.deque[Record], tag: object = None) -> PutBatch:
        """One PutRecords call's worth from the front of ``q`` (plain or KPL aggregates)."""
        take: list[Record] = []
        popleft = q.popleft
        append = take.append
        held = 0
        entries: list[Entry]
        if self.cfg.aggregate and len(self.routed_by) > 0:
            budget = AGG_BATCH_BYTES
            while q:
                rec = q[0]
                size = len(rec[3]) + len(rec[2])
                if take and size + 12 > budget:
                    break
                append(popleft())
                held += size
                budget -= size + 12
            entries, users, records, spans, nbytes = pack(
                take, self._slot, self.cfg.aggregate_max_records)
        else:
            records, budget = take, MAX_BATCH_BYTES
            while q and len(take) < MAX_BATCH_RECORDS:
                rec = q[0]
                size = len(rec[3]) + len(rec[2])
                if take and size > budget:
                    break
                append(popleft())
                held += size
                budget -= size
            nbytes = held
            entries = [{"Data": r[3], "PartitionKey": r[2]} for r in records]
            users = [1] * len(records)
            spans = [(i, i + 1) for i in range(len(records))]
        return PutBatch(entries, users, nbytes, records=records, spans=spans, tag=tag,
                        min_seq=min(map(_seq_of, take)), held=held)

    def _handle_done(self) -> None:
        refused = 0
        while self.done:
            batch = self.done.popleft()
            self.inflight.discard(batch)
            refused += sum(b - a for i, (a, b) in enumerate(batch.spans or ())
                           if i in batch.refused)
            if batch.refused:
                log.error("Kinesis refused %d entries for good (%s): dropped",
                          len(batch.refused), ",".join(sorted(set(batch.refused.values()))))
            if isinstance(batch.tag, Chunk):
                batch.tag.outstanding -= 1
                batch.tag.failed |= bool(batch.pending)
                continue
            if batch.abandoned:
                continue  # spooled (and released) when it was abandoned
            if batch.pending:  # only when stopping: close() decides where they go
                self.leftover += self._records_of(batch, batch.pending)
            self.p._release(batch.held)
        if refused:
            with self.p._lock:
                self.p.dropped["refused"] += refused
        while self.chunks and self.chunks[0].outstanding == 0:  # acked in the order read
            chunk = self.chunks[0]
            if chunk.failed:
                break  # only when stopping: it and what follows stay for the next start
            self.chunks.popleft()
            self.spool.ack(chunk)  # type: ignore[union-attr]

    @staticmethod
    def _records_of(batch: PutBatch, entries: list[int]) -> list[Record]:
        recs = batch.records or []
        out: list[Record] = []
        for i in entries:
            a, b = batch.spans[i]  # type: ignore[index]
            out += recs[a:b]
        return out

    # -- the spool ----------------------------------------------------------------

    def _enter_spool(self) -> None:
        """Kinesis lags: everything held in memory goes to disk, oldest first."""
        recs: list[Record] = []
        release = 0
        for batch in list(self.inflight):
            if batch.tag is None and not batch.abandoned:
                batch.abandoned = True
                recs += self._records_of(batch, list(batch.pending))
                release += batch.held
        for i, q in enumerate(self.pending):
            recs += q
            release += self.pending_bytes[i]
            q.clear()
            self.pending_bytes[i] = 0
        recs.sort(key=lambda r: r[0])
        self.mode = "spool"
        log.warning("Kinesis has not acknowledged records for %d ms (or the buffer is half "
                    "full): spooling to %s", self.cfg.spool_after_ms, self.spool.slot)  # type: ignore[union-attr]
        self._write(recs)
        self.p._release(release)

    def _to_spool(self, recs: list[Record]) -> None:
        if recs:
            self._write(recs)
            self.p._release(_sizes(recs))

    def _write(self, recs: list[Record]) -> None:
        spool = self.spool
        assert spool is not None
        if not recs:
            return
        nbytes = _sizes(recs)
        if not spool.has_room(nbytes):
            with self.p._lock:
                self.p.dropped["spool_full"] += len(recs)
            log.error("spool %s is full (%d bytes): %d events dropped", spool.slot,
                      spool.bytes, len(recs))
            return
        spool.append(recs)
        self.spooled += len(recs)
        if spool.unsynced:
            first = recs[0][0]
            self.unsynced_from = first if self.unsynced_from is None else \
                min(self.unsynced_from, first)

    def _drain(self) -> None:
        """Send the spool oldest first, a few chunks in flight (acked in order)."""
        spool = self.spool
        assert spool is not None
        n = len(self.lanes)
        while not self.stopping and len(self.chunks) < MAX_CHUNKS and \
                sum(map(len, self.chunk_lanes)) < n * DEPTH:
            chunk = spool.read_chunk(MAX_BATCH_RECORDS * n if not self.cfg.aggregate
                                     else 1_000_000, AGG_BATCH_BYTES * n)
            if chunk is None:
                if not self.chunks and spool.reset_if_drained():
                    self.mode = "direct"
                    log.info("spool drained: sending directly again")
                break
            per_lane: list[collections.deque[Record]] = [collections.deque() for _ in self.lanes]
            for rec in chunk.records:
                per_lane[self._lane_of(rec[2])].append(rec)
            for i, q in enumerate(per_lane):
                while q:
                    self.chunk_lanes[i].append(self._build(q, tag=chunk))
                    chunk.outstanding += 1
            self.chunks.append(chunk)
        for i, lane in enumerate(self.lanes):
            ready = self.chunk_lanes[i]
            while ready and lane.busy < DEPTH:
                lane.offer(ready.popleft())

    # -- shards, publishing, stopping ------------------------------------------------

    def _refresh_shards(self) -> None:
        if self.loading or (len(self.lanes) < 2 and not self.cfg.aggregate):
            return
        now = time.monotonic()
        due = now - self.shard_try_at > 5 if not len(self.shard_map) else \
            now - self.shard_map_at > self.cfg.shard_refresh_s
        if not due:
            return
        self.loading, self.shard_try_at = True, now
        threading.Thread(target=self._load_shards, daemon=True,
                         name="shardline-producer-shards").start()

    def _load_shards(self) -> None:
        try:
            shards = open_shards(self.client, self.cfg.stream)
            new = ShardMap(shards)
            if new.shard_ids != self.shard_map.shard_ids:
                self.shard_map = new  # a reshard: the pump routes by it from its next cycle
            self.shard_map_at = time.monotonic()
        except StreamNotFound as exc:
            log.error("%s", exc)
        except Exception as exc:  # noqa: BLE001 - retried in 5 s; plain records meanwhile
            log.warning("ListShards %s failed (%s); retrying", self.cfg.stream,
                        error_code(exc) or type(exc).__name__)
        finally:
            self.loading = False

    def _publish(self) -> None:
        mem = [q[0][0] for q in self.pending if q] + \
            [b.min_seq for b in self.inflight if b.tag is None and not b.abandoned] + \
            [r[0] for r in self.leftover[:1]]
        floor = min(mem, default=self.taken_seq + 1)
        durable = floor if self.unsynced_from is None else min(floor, self.unsynced_from)
        acked = floor
        if self.spool is not None and self.mode == "spool":
            acked = min(acked, self.chunks[0].first_seq if self.chunks else 0)
        p = self.p
        changed = False
        if durable - 1 > p.durable_seq:
            p.durable_seq = durable - 1
            changed = True
            if p.on_sync is not None:
                p.on_sync(p.durable_seq)
        if acked - 1 > p.acked_seq:
            p.acked_seq = acked - 1
            changed = True
        if changed:
            p._published()
        if self.exporter is not None:
            self.exporter.push(self.counts(), dict(p.dropped), list(p.lat_buckets),
                               p.lat_sum_ns, p._held, self.spool.bytes if self.spool else 0)

    def counts(self) -> PumpCounts:
        s = self.stats
        return {"put": self.p.n_put, "sent": s.user_records, "records": s.records,
                "calls": s.calls, "bytes": s.bytes, "retried": s.retried_entries,
                "retried_calls": s.retried_calls, "spooled": self.spooled,
                "torn": self.spool.torn if self.spool else 0, "mode": self.mode,
                "spool_bytes": self.spool.bytes if self.spool else 0,
                "shards": dict(sorted(s.shards.items())),
                "elapsed_s": time.monotonic() - self.started}

    def _finish(self) -> None:
        """Stopping: wait briefly for calls in flight, then spool (or count) what is left."""
        for lane in self.lanes:
            try:
                lane.queue.put_nowait(None)
            except Exception:  # noqa: BLE001 - full: the thread is a daemon, left to exit
                pass
        deadline = time.monotonic() + 5.0
        for lane in self.lanes:
            if lane.thread is not None:
                lane.thread.join(max(0.0, deadline - time.monotonic()))
        self._handle_done()
        records, _ = self.p._take()
        left = list(self.leftover)
        self.leftover = []
        for batch in self.inflight:
            if batch.tag is None and not batch.abandoned:
                left += self._records_of(batch, list(batch.pending))
        for q in self.pending:
            left += q
            q.clear()
        left += records
        left.sort(key=lambda r: r[0])
        if left and self.spool is not None:
            self._write(left)
            log.warning("closing: %d events not sent yet are in the spool %s; the next start "
                        "sends them", len(left), self.spool.slot)
        elif left:
            with self.p._lock:
                self.p.dropped["close"] += len(left)
            log.error("closing: %d events could not be sent in time and are lost (no spool "
                      "directory configured)", len(left))
        if self.spool is not None:
            self.spool.close()
            self.unsynced_from = None
        self.p._release(self.p._held)
        self._publish()
