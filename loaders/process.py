"""How a loader process runs, the warehouse's (``loaders/main.py``) and the lake's
(``loaders/lake/main.py``): forever, stepping until a stop, or ``--once``.

``--once``: one step (a load if the trigger says one is due), then exit; exit 0 also when
nothing was due, ``UNAVAILABLE`` (69) when the load failed (the files stay pending) or
another loader kept the table's lease after waiting one lease lifetime and a bit (a killed
loader's lease lapses in that time). Forever: ``run(stop)`` until SIGTERM/SIGINT, then exit
0; a second signal stops at once with exit 130 (``ForcedStop``).
"""
from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Protocol

from shardline.exitcodes import ExitCode
from shardline.lifecycle import ForcedStop, StopSignals
from shardline.loaders.loader import StepResult
from shardline.settings import Settings


class LoaderLoop(Protocol):
    def step(self) -> StepResult: ...

    def describe(self) -> str: ...

    def release(self) -> None: ...

    def close(self) -> None: ...


def serve(loader: LoaderLoop, settings: Settings, stop: StopSignals, *, once: bool,
          command: str, log: logging.Logger | logging.LoggerAdapter[logging.Logger],
          on_forced: str) -> int:
    """The process's exit code. ``command``: its name in messages (``lake-loader``);
    ``on_forced``: what a forced stop leaves behind, for the log line."""
    if once:
        return _once(loader, settings, stop, command, log)
    try:
        run(loader, stop, settings.loader.lease_ttl_s, command, log)
    except ForcedStop as exc:
        log.warning("%s; %s", exc, on_forced)
        raise
    return ExitCode.OK


def run(loader: LoaderLoop, stop: threading.Event | StopSignals, lease_ttl_s: float,
        command: str, log: logging.Logger | logging.LoggerAdapter[logging.Logger]) -> None:
    """Step until ``stop`` is set; a load in progress always finishes first. A backoff is
    waited in slices that renew the lease: one longer than the lease's TTL would hand the
    table to another loader to fail on."""
    log.info("%s started: %s", command, loader.describe())
    try:
        while not stop.is_set():
            result = loader.step()
            if result.wait_s > 0:
                stop.wait(min(result.wait_s, lease_ttl_s / 4))
    finally:
        loader.release()
        loader.close()
        log.info("%s stopped", command)


def _once(loader: LoaderLoop, settings: Settings, stop: StopSignals, command: str,
          log: logging.Logger | logging.LoggerAdapter[logging.Logger]) -> int:
    try:
        deadline = time.monotonic() + settings.loader.lease_ttl_s * 1.5 + 1
        result = loader.step()
        while result.state == "standby" and time.monotonic() < deadline:
            stop.wait(settings.loader.poll_s)
            result = loader.step()
    finally:
        loader.release()
        loader.close()
    if result.state == "standby":
        print(f"shardline {command}: another {command} holds the table's lease",
              file=sys.stderr)
        return ExitCode.UNAVAILABLE
    if result.state in ("failed", "backoff"):
        print(f"shardline {command}: load failed, files stay pending: {result.error}",
              file=sys.stderr)
        return ExitCode.UNAVAILABLE
    if result.load is None:
        log.info("nothing due (%s)", result.state)
    return ExitCode.OK
