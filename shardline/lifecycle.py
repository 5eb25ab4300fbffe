"""How a shardline process lives and stops: one place for the consumer, the stage worker
and the loader.

- ``StopSignals``: the two-step stop. The first SIGTERM/SIGINT asks for a graceful stop
  (take no new work, finish what is in flight, checkpoint, release the lease, exit 0);
  a second one raises ``ForcedStop`` at once, wherever the main thread is, and the
  process exits 130 (``ExitCode.FORCED_STOP``) without a checkpoint. Under supervisord,
  ``install(follow_parent=True)`` also stops the process gracefully when supervisord
  itself dies (``PR_SET_PDEATHSIG``), instead of leaving it running as an orphan.
- ``transaction(owner, what)``: a cursor on a lazily opened database connection that is
  thrown away after a connection error, so the next call opens a fresh one (a warehouse
  restart costs one failed call, never a stuck process).
- ``first_line(exc)``: the one line of an error's text that goes into a message.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Callable, Iterator, Protocol

from shardline.errors import ServiceUnavailable

if TYPE_CHECKING:
    # psycopg2 has no types (types-psycopg2 is not a dependency): these are Any to mypy,
    # but they name what flows through ``transaction``.
    from psycopg2.extensions import connection, cursor

SLICE_S = 0.05  # how often a wait looks at the stop flag
# The signal the kernel sends when supervisord dies (``PR_SET_PDEATHSIG``): not SIGTERM,
# so that the stop it starts is graceful and a later SIGTERM (the agent's, an operator's)
# is still a first one, not the forcing second.
PARENT_GONE = signal.SIGHUP
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class ForcedStop(KeyboardInterrupt):
    """A second stop signal: leave now, even mid-job.

    A ``KeyboardInterrupt`` so that no ``except Exception`` on the way (a job's error
    handling, a crash handler that would release the lease) swallows it; ``shardline.cli``
    maps it to exit 130.
    """


def first_line(exc: BaseException) -> str:
    """The first line of an error's text (or its type name): what goes into a message.

    Driver errors (psycopg2 above all) carry several lines of detail and context;
    one line keeps log lines and exit messages readable.
    """
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class StopSignals:
    """Counts SIGTERM/SIGINT; the first asks for a graceful stop, a second forces one.

    ``handler`` is the signal handler and may also be called directly (tests, or a
    thread relaying a stop). It does no I/O beyond one guarded log line, so it is safe
    whatever the main thread was doing. A forced stop raises ``ForcedStop`` only in the
    main thread (where real signal handlers run); anywhere else it is recorded, and the
    main thread's loop (``forced``, ``sleep``, ``wait``) acts on it.
    """

    def __init__(self, *, on_stop: Callable[[str], None] | None = None,
                 log: logging.Logger | logging.LoggerAdapter[logging.Logger] | None = None,
                 notice: str = "stopping after the work in hand"):
        self.on_stop = on_stop
        self.log = log
        self.notice = notice
        self.count = 0
        self.reason: str | None = None  # "signal SIGTERM" once a stop was asked for
        self.orphaned = False  # supervisord died (``follow_parent``)

    @property
    def requested(self) -> bool:
        return self.count >= 1 or self.orphaned

    @property
    def asks(self) -> int:
        """How many stops were asked for, supervisord's death included: a loop that
        compares it with the last value it saw notices each new one."""
        return self.count + int(self.orphaned)

    @property
    def forced(self) -> bool:
        return self.count >= 2

    def install(self, signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT), *,
                follow_parent: bool = False) -> None:
        for signum in signums:
            signal.signal(signum, self.handler)
        if follow_parent:
            self.follow_parent()

    def follow_parent(self) -> bool:
        """Under supervisord (``SUPERVISOR_ENABLED`` in the environment it gives its
        programs), stop gracefully when supervisord dies. supervisord puts each program in
        a process group of its own, so a SIGKILLed supervisord leaves its programs running
        with nobody to stop or restart them; the kernel's parent-death signal is the one
        notice that cannot be missed. Linux only; False where it was not set up."""
        if not os.environ.get("SUPERVISOR_ENABLED") or not sys.platform.startswith("linux"):
            return False
        parent = os.getppid()
        signal.signal(PARENT_GONE, self._parent_gone)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(PARENT_GONE), 0, 0, 0) != 0:
            return False
        if os.getppid() != parent:  # died before the request was in place
            self._parent_gone(int(PARENT_GONE))
        return True

    def _parent_gone(self, signum: int, frame: FrameType | None = None) -> None:
        if self.requested:
            return
        self.orphaned = True
        self.reason = "supervisord is gone"
        if self.log is not None:
            with contextlib.suppress(Exception):
                self.log.info("supervisord is gone: %s", self.notice)
        if self.on_stop is not None:
            self.on_stop(self.reason)

    def handler(self, signum: int, frame: FrameType | None = None) -> None:
        name = _signal_name(signum)
        self.count += 1
        if self.count == 1:
            self.reason = f"signal {name}"
            if self.log is not None:
                # A handler may run while the main thread is inside a write to the same
                # stream; losing this one line beats crashing on a reentrant write.
                with contextlib.suppress(Exception):
                    self.log.info("%s: %s", name, self.notice)
            if self.on_stop is not None:
                self.on_stop(self.reason)
            return
        if threading.current_thread() is threading.main_thread():
            raise ForcedStop(f"second signal {name}: stopping now")

    def check(self) -> None:
        """Raise ``ForcedStop`` if a second signal was recorded (off the main thread)."""
        if self.forced:
            raise ForcedStop("second signal: stopping now")

    def sleep(self, seconds: float) -> None:
        """Sleep, cut short by a forced stop (not by a graceful one: a retry still waits)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.check()
            time.sleep(min(left, SLICE_S))
        self.check()

    def is_set(self) -> bool:
        """``threading.Event``-style: True once a stop was asked for."""
        return self.requested

    def wait(self, timeout: float) -> bool:
        """``threading.Event.wait``-style: sleep up to ``timeout``, returning early (True)
        once a stop was asked for. Polls instead of using an Event: setting an Event from
        a signal handler can deadlock on the Event's own lock."""
        end = time.monotonic() + timeout
        while not self.requested and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, SLICE_S))
        return self.requested


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


class ConnectionOwner(Protocol):
    """What ``transaction`` needs: a connection factory, the connection (or None), close()."""

    _conn: connection | None
    _connect: Callable[[], connection]

    def close(self) -> None: ...


@contextlib.contextmanager
def transaction(owner: ConnectionOwner, what: str) -> Iterator[cursor]:
    """A cursor in a transaction on ``owner``'s connection: commit on success, rollback on
    error. The connection is opened on first use (and after one was lost).

    A connection error (psycopg2 ``OperationalError``/``InterfaceError``, also when it
    surfaces from the rollback or the commit) closes the connection through
    ``owner.close()`` and becomes ``ServiceUnavailable("<what>: <first line>")``, which
    callers treat as retriable; the next call reconnects. Other errors are raised as
    they are, after the rollback.
    """
    import psycopg2

    try:
        if owner._conn is None or owner._conn.closed:
            owner._conn = owner._connect()
            owner._conn.autocommit = False
        conn = owner._conn
        with conn.cursor() as cur:
            try:
                yield cur
            except BaseException:
                conn.rollback()
                raise
        conn.commit()
    except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
        owner.close()
        raise ServiceUnavailable(f"{what}: {first_line(exc)}") from None
