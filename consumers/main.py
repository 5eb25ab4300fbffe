"""``shardline consumer --stream S --shard SHARD_ID``: wire real clients and run the loop.

Stopping is ``shardline.lifecycle.StopSignals``: the first SIGTERM/SIGINT asks for a
graceful stop (finish in-flight jobs up to shutdown_timeout_s, checkpoint, release
the lease, exit 0); a second one ends the process at once with FORCED_STOP and no
checkpoint. Errors become exit codes in ``shardline.cli`` (LeaseHeld 75,
LeaseLost 76, BatchFailed 70).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import time
from typing import Sequence

from shardline.consumers.consumer import Consumer
from shardline.consumers.dispatcher import Dispatcher
from shardline.consumers.reader import ShardReader
from shardline import clients, preflight
from shardline.cli.kit import command_parser, load_settings
from shardline.controlstore import open_store
from shardline.errors import LeaseError, LeaseHeld
from shardline.exitcodes import ExitCode
from shardline.kinesis import KinesisClient, kinesis_client, list_shards
from shardline.lifecycle import ForcedStop, StopSignals
from shardline.logs import get_logger
from shardline.settings import Settings


def build(settings: Settings, shard_id: str, stop: StopSignals | None = None,
          kinesis: KinesisClient | None = None) -> Consumer:
    """A consumer over real clients (kinesis injectable for fault-injection tests)."""
    settings.require("kinesis.stream")
    stream = settings.kinesis.stream
    log = get_logger("consumer", stream=stream, shard=shard_id)
    cs = settings.consumer
    # Epoch-second timestamps: deagg turns ApproximateArrivalTimestamp into ms once.
    kinesis = kinesis or kinesis_client(settings, raw_timestamps=True)
    reader = ShardReader(kinesis, stream, shard_id, cs,
                         sleep=stop.sleep if stop is not None else time.sleep, log=log)
    dispatcher = Dispatcher(lambda: clients.gearman_client(settings),
                            settings.gearman.stage_function, threads=cs.dispatch_threads,
                            job_timeout_s=settings.gearman.job_timeout_s,
                            max_attempts=cs.job_max_attempts, retry_max_s=cs.job_retry_max_s,
                            log=log.bind(component="dispatch"))
    control = open_store(settings)  # leases, checkpoints, status: the control store
    return Consumer(settings, shard_id, reader=reader, dispatcher=dispatcher, control=control,
                    shards=lambda: list_shards(kinesis, stream), log=log)


def run(consumer: Consumer, stop: StopSignals) -> int:
    """Step until done; sleep between steps, waking early for job outcomes or a signal."""
    seen = 0  # a stop asked for while the consumer was being built counts too
    try:
        consumer.start()
        if consumer.done:
            return int(consumer.exit_code or 0)
        consumer.dispatcher.start()
        while not consumer.done:
            if stop.asks != seen:
                seen = stop.asks
                stop.check()
                consumer.request_stop()
            pause = consumer.step()
            end = time.monotonic() + pause
            while (left := end - time.monotonic()) > 0 and stop.asks == seen:
                if consumer.dispatcher.wait(min(left, 0.1)):
                    break
    except ForcedStop:
        consumer.log.warning("second signal: exiting now without a checkpoint")
        return ExitCode.FORCED_STOP
    except LeaseHeld:
        raise  # never ours: nothing to release
    except LeaseError:
        consumer.log.error("lease lost: stopped reading, no checkpoint written")
        raise
    except Exception:
        # Crash (BatchFailed has already released): free the shard for the restart.
        with contextlib.suppress(Exception):
            consumer.lease.release()
        raise
    return int(consumer.exit_code or 0)


M_ARENA_MAX = -8  # glibc's malloc.h


def one_malloc_arena() -> None:
    """Have glibc's malloc use one arena for every thread (before any thread starts).

    glibc gives each thread that mallocs an arena of its own, and what a thread frees stays
    in its arena: the dispatch threads' arenas held about 2.5 MB of every consumer. Most
    allocations come from pymalloc under the GIL, so the threads hardly contend for the one
    arena. An operator's MALLOC_ARENA_MAX wins; outside glibc this does nothing.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, 1)
    except (OSError, AttributeError):
        pass


def main(argv: Sequence[str]) -> int:
    one_malloc_arena()
    parser = command_parser("consumer", "Read one Kinesis shard, dispatch batches to the "
                                        "stage workers through Gearman, checkpoint.")
    parser.add_argument("--stream", help="Kinesis stream (default: kinesis.stream)")
    parser.add_argument("--shard", required=True, help="shard id, e.g. shardId-000000000000")
    args = parser.parse_args(list(argv))
    stop = StopSignals()
    stop.install(follow_parent=True)
    settings = load_settings(args, **{"kinesis.stream": args.stream})
    # One Kinesis client for the process, the start-up check's too: a botocore client is
    # megabytes of parsed models, and a dropped one's heap is not given back.
    kinesis = kinesis_client(settings, raw_timestamps=True)
    # A first-run mistake ends here, in one line, before a lease is taken or a record read.
    preflight.require(settings, preflight.CONTROL, preflight.STREAM, preflight.GEARMAN,
                      kinesis=kinesis)
    consumer = build(settings, args.shard, stop, kinesis)
    try:
        return run(consumer, stop)
    finally:
        consumer.control.close()
