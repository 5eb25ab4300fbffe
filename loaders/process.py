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
import time
from typing import Protocol

from shardline.exitcodes import ExitCode
from shardline.lifecycle import ForcedStop, StopSignals
from shardline.loaders.loader import StepResult
from shardline.settings import Settings


class LoaderLoop(Protocol):
    def step(self) -> StepResult: ...

    def run(self, stop: StopSignals) -> None: ...

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
        loader.run(stop)
    except ForcedStop as exc:
        log.warning("%s; %s", exc, on_forced)
        raise
    return ExitCode.OK


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
