"""Submit batches as Gearman foreground jobs from worker threads, off the read loop.

Each thread owns its own pygearman client (clients are not thread-safe) and
always passes ``poll_timeout``: without it pygearman returns before the job is
done. A job that fails, times out (lost) or hits a connection error is retried
with exponential backoff + jitter up to ``job_max_attempts``; after any such
error the client is thrown away and rebuilt, since a job left in flight
poisons it. The unique id is derived from the batch, so a retry is the same
job and the stage worker treats it idempotently.
"""
from __future__ import annotations

import hashlib
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol, TypedDict

import tenacity

from shardline.codec import Batch, encode_job
from shardline.logs import ContextLogger


@dataclass(frozen=True)
class Outcome:
    ticket: int
    ok: bool
    attempts: int
    error: str | None = None


def unique_id(stream: str, batch: Batch, generation: str | None = None) -> str:
    """Contract: sha1 of "{stream}/{batch_id}" (gearmand caps unique ids at 64 bytes); a
    reprocess run's job adds "/{generation}", so gearmand never merges it with a consumer's
    job for the same records."""
    tail = f"/{generation}" if generation else ""
    return hashlib.sha1(f"{stream}/{batch.batch_id}{tail}".encode()).hexdigest()


class GearmanSubmitter(Protocol):
    """The part of pygearman's ``GearmanClient`` used here (pygearman has no types)."""

    def submit_job(self, task: bytes, data: bytes, *, unique: str, poll_timeout: float,
                   max_retries: int) -> object: ...
    def shutdown(self) -> None: ...


class _Holder(TypedDict):
    """A thread's client, shared with ``_attempt`` so that a failed attempt can drop it."""

    client: GearmanSubmitter | None


class JobError(Exception):
    """One attempt did not complete (FAILED, lost, or connection error)."""


class Dispatcher:
    def __init__(self, client_factory: Callable[[], GearmanSubmitter], function: str, *,
                 threads: int, job_timeout_s: float, max_attempts: int, retry_max_s: float,
                 sleep: Callable[[float], None] = time.sleep, log: ContextLogger | None = None,
                 generation: str | None = None):
        self.client_factory = client_factory
        self.generation = generation  # set: the jobs of a reprocess run (codec.encode_job)
        self.function = function.encode()  # bytes task names: str ones break pygearman
        self.threads, self.job_timeout_s = threads, job_timeout_s
        self.max_attempts, self.retry_max_s = max_attempts, retry_max_s
        self.sleep, self.log = sleep, log
        # (ticket, stream, batch); None tells one thread to stop
        self._jobs: "queue.Queue[tuple[int, str, Batch] | None]" = queue.Queue()
        self._results: "queue.Queue[Outcome]" = queue.Queue()
        self._threads: list[threading.Thread] = []
        self.ready = threading.Event()  # set when an outcome is waiting

    def start(self) -> None:
        for i in range(self.threads):
            t = threading.Thread(target=self._run, name=f"dispatch-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def submit(self, ticket: int, stream: str, batch: Batch) -> None:
        self._jobs.put((ticket, stream, batch))

    def poll(self) -> list[Outcome]:
        self.ready.clear()
        out = []
        while True:
            try:
                out.append(self._results.get_nowait())
            except queue.Empty:
                return out

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` for an outcome (the loop's sleep)."""
        return self.ready.wait(timeout)

    def stop(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)

    # -- threads ----------------------------------------------------------------
    def _run(self) -> None:
        client: GearmanSubmitter | None = None
        while True:
            item = self._jobs.get()
            if item is None:
                return
            ticket, stream, batch = item
            payload = encode_job(batch, self.generation)
            unique = unique_id(stream, batch, self.generation)
            holder: _Holder = {"client": client}
            retryer = tenacity.Retrying(
                retry=tenacity.retry_if_exception_type(JobError),
                # 0.5, 1, 2, 4, 8, 10... s (+ up to 0.5 s jitter): the default 8 attempts
                # ride out ~30 s of gearmand, S3 or warehouse outage before giving up.
                wait=tenacity.wait_exponential(multiplier=min(0.5, self.retry_max_s),
                                               max=self.retry_max_s)
                + tenacity.wait_random(0, min(0.5, self.retry_max_s)),
                stop=tenacity.stop_after_attempt(self.max_attempts), sleep=self.sleep,
                before_sleep=self._before_sleep, reraise=True)
            try:
                retryer(self._attempt, holder, payload, unique)
                outcome = Outcome(ticket, True, retryer.statistics.get("attempt_number", 1))
            except JobError as exc:
                outcome = Outcome(ticket, False, self.max_attempts, error=str(exc))
            except Exception as exc:  # noqa: BLE001 - report, never kill the thread
                outcome = Outcome(ticket, False, 0, error=f"{type(exc).__name__}: {exc}")
            client = holder["client"]
            self._results.put(outcome)
            self.ready.set()

    def _attempt(self, holder: _Holder, payload: bytes, unique: str) -> None:
        """One submit; returns when the job completed (its result carries nothing)."""
        client = holder["client"]
        if client is None:
            client = holder["client"] = self.client_factory()
        try:
            req = client.submit_job(self.function, payload, unique=unique,
                                    poll_timeout=self.job_timeout_s, max_retries=0)
        except Exception as exc:  # noqa: BLE001 - any client error: rebuild the client
            self._discard(holder)
            raise JobError(f"gearman submit: {type(exc).__name__}: {exc}") from exc
        state = getattr(req, "state", None)
        if state == "COMPLETE":
            return
        self._discard(holder)
        if state == "FAILED":
            raise JobError(f"stage job {unique} failed (WORK_FAIL)")
        raise JobError(f"stage job {unique} lost: state {state}, not done within "
                       f"{self.job_timeout_s}s")

    def _before_sleep(self, state: tenacity.RetryCallState) -> None:
        if self.log is not None and state.outcome is not None:
            self.log.warning("batch job attempt %d/%d: %s; retrying", state.attempt_number,
                             self.max_attempts, state.outcome.exception())

    def _discard(self, holder: _Holder) -> None:
        client, holder["client"] = holder["client"], None
        if client is not None:
            try:
                client.shutdown()
            except Exception:  # noqa: BLE001
                pass
