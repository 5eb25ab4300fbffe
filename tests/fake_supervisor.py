"""A fake supervisord for unit tests of the agent: its process-group bookkeeping only.

``reload()`` reads the include file for real (configparser), so tests also check what the
agent wrote; ``add`` / ``remove`` / ``start`` / ``stop`` follow supervisord's rules
(``removeProcessGroup`` refuses a running group, ``autostart`` decides what ``add`` starts,
a stop only asks: the process is STOPPING until ``finish_stops()``, like a consumer draining).
``on_start`` / ``on_stop`` let a test play the consumer (take and release the lease).
"""
from __future__ import annotations

import configparser
import itertools
import xmlrpc.client
from pathlib import Path
from typing import Callable

from shardline.fleet.supervisor import BAD_NAME, RUNNING_STATES, Proc, Unreachable

_pids = itertools.count(1000)


class FakeSupervisor:
    def __init__(self, include: Path, main_groups: tuple[str, ...] = ("agent", "loader"),
                 on_start: Callable[[str], None] | None = None,
                 on_stop: Callable[[str], None] | None = None):
        self.include = include
        self.main = {name: {"command": name} for name in main_groups}
        self.configured: dict[str, dict] = dict(self.main)
        self.active: dict[str, dict] = {n: {"config": c, "state": "RUNNING", "started": True,
                                            "pid": next(_pids)} for n, c in self.main.items()}
        self.on_start, self.on_stop = on_start, on_stop
        self.calls: list[tuple[str, str]] = []
        self.mood = "RUNNING"
        self.down = False

    def _check(self, call: str, name: str = "") -> None:
        if self.down:
            raise Unreachable(f"supervisord: {call}: connection refused")
        self.calls.append((call, name))

    def _read(self) -> dict[str, dict]:
        parser = configparser.RawConfigParser()
        if self.include.exists():
            parser.read_string(self.include.read_text())
        programs = {s.split(":", 1)[1]: dict(parser[s]) for s in parser.sections()
                    if s.startswith("program:")}
        return {**self.main, **programs}

    # -- the interface of shardline.fleet.supervisor.Supervisor ------------------
    def state(self) -> str:
        self._check("getState")
        return self.mood

    def processes(self) -> dict[str, Proc]:
        self._check("getAllProcessInfo")
        return {n: Proc(n, n, g["state"], g["started"], g["pid"] if g["state"] in
                        RUNNING_STATES else 0) for n, g in sorted(self.active.items())}

    def reload(self) -> tuple[list[str], list[str], list[str]]:
        self._check("reloadConfig")
        self.configured = self._read()
        added = [n for n in self.configured if n not in self.active]
        changed = [n for n in self.configured
                   if n in self.active and self.active[n]["config"] != self.configured[n]]
        removed = [n for n in self.active if n not in self.configured]
        return sorted(added), sorted(changed), sorted(removed)

    def add(self, name: str) -> None:
        self._check("addProcessGroup", name)
        if name in self.active:
            return
        if name not in self.configured:
            raise xmlrpc.client.Fault(BAD_NAME, f"BAD_NAME: {name}")
        config = self.configured[name]
        self.active[name] = {"config": config, "state": "STOPPED", "started": False, "pid": 0}
        if config.get("autostart", "true") == "true":
            self._run(name)

    def remove(self, name: str) -> bool:
        self._check("removeProcessGroup", name)
        group = self.active.get(name)
        if group is None:
            return True
        if group["state"] in RUNNING_STATES:
            return False
        del self.active[name]
        return True

    def start(self, name: str) -> None:
        self._check("startProcessGroup", name)
        if name in self.active and self.active[name]["state"] not in RUNNING_STATES:
            self._run(name)

    def stop(self, name: str) -> None:
        self._check("stopProcessGroup", name)
        group = self.active.get(name)
        if group is not None and group["state"] in RUNNING_STATES:
            group["state"] = "STOPPING"

    # -- what the processes do -----------------------------------------------------
    def _run(self, name: str) -> None:
        group = self.active[name]
        group.update(state="RUNNING", started=True, pid=next(_pids))
        if self.on_start:
            self.on_start(name)

    def finish_stops(self, only: str | None = None) -> list[str]:
        """Every STOPPING process (or just ``only``) finishes its graceful stop now."""
        done = [n for n, g in self.active.items() if g["state"] == "STOPPING"
                and only in (None, n)]
        for name in done:
            self.active[name]["state"] = "STOPPED"
            if self.on_stop:
                self.on_stop(name)
        return done

    def exit(self, name: str, state: str = "EXITED") -> None:
        """The process ends by itself (SHARD_END: exit 0 -> EXITED)."""
        self.active[name]["state"] = state
        if self.on_stop:
            self.on_stop(name)

    def human_stop(self, name: str) -> None:
        """`supervisorctl stop NAME`: waits for the stop."""
        self.stop(name)
        self.finish_stops(only=name)

    def running(self, prefix: str = "consumer-") -> list[str]:
        return sorted(n for n, g in self.active.items()
                      if n.startswith(prefix) and g["state"] in RUNNING_STATES)
