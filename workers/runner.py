"""The generic Gearman worker loop: register tasks, work, survive gearmand restarts, stop cleanly.

``WorkerRunner(tasks, make_worker)``; ``run()`` is ``while step(): pass``.
One ``step()`` builds a ``GearmanWorker`` if there is none (task names registered
as BYTES: pygearman mishandles str names), then calls ``work(poll_timeout)``,
which returns only when the ``after_poll`` hook says stop. A connection error
(``ServerUnavailable`` after a gearmand restart, socket errors) discards the
worker object and the step sleeps a capped, jittered backoff
(``worker.reconnect_max_s``); the next step reconnects and re-registers.

Signals (``shardline.lifecycle.StopSignals``): the first SIGTERM/SIGINT only sets a
flag. pygearman runs a job synchronously inside ``work()``, so the job in hand
finishes (and its result is sent) before ``after_poll`` sees the flag; ``work()``
then returns, the connection is closed (gearmand gives any job it had started to
assign us to another worker) and ``run()`` returns 0. ``after_poll`` runs at least every
``poll_timeout`` seconds, so an idle worker stops within ~1 s. A second signal
raises ``lifecycle.ForcedStop`` (a ``KeyboardInterrupt``: exit 130) at once.
"""
from __future__ import annotations

import random
import socket
import time
from typing import Any, Callable, Mapping

from shardline.lifecycle import ForcedStop, StopSignals
from shardline.logs import ContextLogger, get_logger

# task(payload, log) -> result bytes; raising makes the job WORK_FAIL. ``log`` is this
# job's logger (worker, task, job handle); a task may add to ``log.extra`` (e.g. the
# batch id) so the runner's own lines about the job show it too.
Task = Callable[[bytes, ContextLogger], bytes]

BACKOFF_START_S = 0.1


def _connection_errors() -> tuple[type[BaseException], ...]:
    from gearman.errors import GearmanError

    # GearmanError covers ServerUnavailable, ConnectionError, ProtocolError and the
    # invalid-state errors a half-dead connection can produce.
    return (GearmanError, OSError)


class WorkerRunner:
    def __init__(self, tasks: Mapping[str, Task] | Mapping[bytes, Task],
                 make_worker: Callable[[], Any], *,
                 poll_timeout: float = 1.0, reconnect_max_s: float = 5.0,
                 log: ContextLogger | None = None,
                 sleep: Callable[[float], None] | None = None,
                 client_id: str | None = None):
        if not tasks:
            raise ValueError("a worker needs at least one task")
        self.tasks = {(k.encode() if isinstance(k, str) else k): v for k, v in tasks.items()}
        self.make_worker = make_worker
        self.poll_timeout = poll_timeout
        self.reconnect_max_s = reconnect_max_s
        self.log = log or get_logger("worker")
        self.client_id = client_id
        self._sleep = sleep
        self.worker: Any = None
        self.stopping = False
        self._stop_reason = "stopped"
        self.stop_signals = StopSignals(on_stop=self.stop)
        self.failures = 0  # consecutive connection failures (drives the backoff)
        self._connected_once = False
        self.jobs_done = 0
        self.jobs_failed = 0

    # -- signals --------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        self.stop_signals.install(follow_parent=True)

    def stop(self, why: str = "stop requested") -> None:
        """Ask the loop to stop after the current job (safe from a signal handler)."""
        if not self.stopping:
            self.stopping = True
            self._stop_reason = why

    # -- the loop -------------------------------------------------------------
    def run(self) -> int:
        self.log.info("worker started: tasks %s",
                      ", ".join(t.decode(errors="replace") for t in self.tasks))
        try:
            while self.step():
                pass
        except ForcedStop as exc:
            self.log.warning("%s (a job in hand is abandoned; gearmand gives it to another "
                             "worker or the client retries it)", exc)
            raise
        finally:
            self._discard()
        self.log.info("worker stopped (%s): %d jobs done, %d failed",
                      self._stop_reason, self.jobs_done, self.jobs_failed)
        return 0

    def step(self) -> bool:
        """Connect if needed and work until told to stop or the connection dies.

        Returns False once the runner should exit.
        """
        if self.stopping:
            return False
        try:
            if self.worker is None:
                self.worker = self._new_worker()
            self.worker.work(poll_timeout=self.poll_timeout)
        except _connection_errors() as exc:
            self._discard()
            if self.stopping:
                return False
            self.failures += 1
            delay = self.backoff(self.failures)
            log = self.log.warning if self.failures <= 3 or self.failures % 20 == 0 \
                else self.log.debug
            log("gearmand connection lost (%s: %s); reconnecting in %.2f s (attempt %d)",
                type(exc).__name__, str(exc)[:200], delay, self.failures)
            self._pause(delay)
            return not self.stopping
        # work() returned normally: after_poll asked it to stop.
        return not self.stopping

    def backoff(self, failures: int) -> float:
        """Exponential from 0.1 s, capped at reconnect_max_s, with +-20% jitter."""
        base: float = min(self.reconnect_max_s, BACKOFF_START_S * (2 ** min(failures - 1, 30)))
        return min(self.reconnect_max_s, base * random.uniform(0.8, 1.2))

    def _pause(self, delay: float) -> None:
        if self._sleep is not None:
            self._sleep(delay)
            return
        # Short slices, so a stop request cuts the wait short (no locks: a signal
        # handler may run at any point here).
        deadline = time.monotonic() + delay
        while not self.stopping and (left := deadline - time.monotonic()) > 0:
            time.sleep(min(left, 0.1))

    def _new_worker(self) -> Any:
        worker = self.make_worker()
        if self.client_id:
            worker.set_client_id(self.client_id.encode())
        for name, task in self.tasks.items():
            worker.register_task(name, self._wrap(name, task))
        worker.after_poll = self._after_poll  # instance hook: pygearman calls self.after_poll
        return worker

    def _after_poll(self, any_activity: bool) -> bool:
        if (self.failures or not self._connected_once) and self.worker is not None and any(
                getattr(c, "connected", False)
                for c in getattr(self.worker, "connection_list", ())):
            if self.failures:
                self.log.info("connected to gearmand again after %d failed attempt(s)",
                              self.failures)
            else:
                self.log.info("connected to gearmand; waiting for jobs")
            self.failures = 0
            self._connected_once = True
        return not self.stopping

    def _wrap(self, name: bytes, task: Task) -> Callable[[Any, Any], bytes]:
        label = name.decode(errors="replace")

        def run_job(gearman_worker: Any, job: Any) -> bytes:
            handle = job.handle.decode(errors="replace") if isinstance(job.handle, bytes) \
                else job.handle
            log = self.log.bind(task=label, job=handle)
            try:
                result = task(job.data, log)
            except Exception as exc:  # a ForcedStop (KeyboardInterrupt) passes through
                self.jobs_failed += 1
                log.error("job failed (WORK_FAIL, the client retries): %s: %s",
                          type(exc).__name__, exc, exc_info=not _expected(exc))
                raise
            self.jobs_done += 1
            return result

        return run_job

    def _discard(self) -> None:
        worker, self.worker = self.worker, None
        if worker is not None:
            try:
                worker.shutdown()
            except Exception:  # a dead socket may complain on close
                pass


def _expected(exc: BaseException) -> bool:
    """Failures worth one line, not a traceback (dependencies down, retriable)."""
    from shardline.errors import ShardlineError

    if isinstance(exc, ShardlineError) and exc.retriable:
        return True
    try:
        from botocore.exceptions import BotoCoreError, ClientError

        return isinstance(exc, (BotoCoreError, ClientError))
    except ImportError:  # pragma: no cover
        return False


def default_worker_id() -> str:
    import os

    return f"{socket.gethostname()}:{os.getpid()}"
