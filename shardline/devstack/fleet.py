"""Run the real fleet under supervisord: one consumer per shard, N stage workers, the loader.

Used by the demo, the end-to-end tests and the pipeline benchmark, so they all
run what production runs: `shardline supervisor-config` output and a real supervisord.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

if TYPE_CHECKING:
    # psycopg2 has no types here: Any to mypy, named for the reader
    from psycopg2.extensions import connection

    from shardline.controlstore.base import ControlStore

T = TypeVar("T")

BIN = Path(sys.executable).parent
SHARDLINE = str(BIN / "shardline")

# Low-latency buffering for the demo and the latency benchmark: batches close
# after 0.5 s, the loader loads at least every 2 s (production: 60 s / 64 MB).
DEMO_SETTINGS = {
    "SHARDLINE_CONSUMER_BATCH_MAX_AGE_S": "0.5",
    "SHARDLINE_CONSUMER_IDLE_SLEEP_S": "0.2",
    "SHARDLINE_CONSUMER_CHECKPOINT_INTERVAL_S": "2",
    "SHARDLINE_CONSUMER_REPORT_INTERVAL_S": "1",
    "SHARDLINE_LOADER_MAX_INTERVAL_S": "2",
    "SHARDLINE_LOADER_POLL_S": "0.5",
    "SHARDLINE_LOADER_MIN_FILES": "200",
    "SHARDLINE_LOADER_LEASE_TTL_S": "5",  # a killed loader's successor waits this long
}


def warehouse_query(env: dict[str, str], sql: str,
                    args: Any = None) -> list[tuple[Any, ...]]:
    """Run one query in the schema the fleet's env names (validated like any setting)."""
    from shardline import clients, settings

    return _fetch_all(clients.warehouse_connect(settings.load(None, env=env)), sql, args)


def control_store(env: dict[str, str]) -> ControlStore:
    """The control store the fleet's env names (any backend); close it after use."""
    from shardline import settings
    from shardline.controlstore import open_store

    return open_store(settings.load(None, env=env))


def control_query(env: dict[str, str], sql: str,
                  args: Any = None) -> list[tuple[Any, ...]]:
    """One query on a PostgreSQL control store (the demo's and the tests' default)."""
    import psycopg2

    from shardline import settings

    c = settings.load(None, env=env).control
    return _fetch_all(psycopg2.connect(c.dsn, options=f"-c search_path={c.schema}"), sql, args)


def _fetch_all(conn: connection, sql: str, args: Any) -> list[tuple[Any, ...]]:
    """One query's rows; the connection is closed afterwards."""
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            rows: list[tuple[Any, ...]] = cur.fetchall()
            return rows
    finally:
        conn.close()


def shardline(*args: str, env: dict[str, str], check: bool = True,
              timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a shardline command; on failure raise with its output (not a bare exit code)."""
    proc = subprocess.run([SHARDLINE, *args], env=env, text=True, capture_output=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"shardline {' '.join(args)} exited {proc.returncode}:\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def wait_for(predicate: Callable[[], T], timeout: float, what: str,
             every: float = 0.5) -> T:
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def wait_gone(pid: int, timeout: float, every: float = 0.1) -> bool:
    """Wait until process ``pid`` no longer exists; False if it still does at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(every)
    return False


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children ...), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@dataclass
class Fleet:
    """A supervisord running one consumer per shard, N stage workers and the loader; with
    ``agent_host``, one host of many: the agent runs the consumers the fleet gives it."""

    conf_dir: Path
    env: dict[str, str]
    stream: str
    workers: int = 2
    agent_host: str | None = None
    settings: dict[str, str] = field(default_factory=dict)  # --set for supervisor-config
    started: bool = field(default=False, init=False)

    @property
    def conf(self) -> Path:
        return self.conf_dir / "shardline.conf"

    def configure(self) -> None:
        shardline("migrate", "--control", env=self.env)  # idempotent: the store's tables
        agent = ["--agent", "--set", f"agent.host_id={self.agent_host}"] if self.agent_host else []
        sets = [a for k, v in sorted(self.settings.items()) for a in ("--set", f"{k}={v}")]
        shardline("supervisor-config", "--stream", self.stream, "--workers", str(self.workers),
                  "--out", str(self.conf_dir), *agent, *sets, env=self.env)

    def start(self) -> None:
        self.configure()
        self.launch()

    def launch(self) -> None:
        """Start supervisord on the config ``configure`` wrote."""
        subprocess.run([str(BIN / "supervisord"), "-c", str(self.conf)], env=self.env,
                       check=True, capture_output=True)
        self.started = True

    def ctl(self, *args: str) -> str:
        proc = subprocess.run([str(BIN / "supervisorctl"), "-c", str(self.conf), *args],
                              env=self.env, text=True, capture_output=True, timeout=120)
        return proc.stdout

    def status(self) -> dict[str, tuple[str, int | None]]:
        """program name -> (state, pid)."""
        out = {}
        for line in self.ctl("status").splitlines():
            parts = line.split()
            if len(parts) < 2:
                continue
            pid = int(parts[parts.index("pid") + 1].rstrip(",")) if "pid" in parts else None
            out[parts[0]] = (parts[1], pid)
        return out

    def kill(self, name_prefix: str, sig: int = signal.SIGKILL) -> list[int]:
        """Signal every running program whose name starts with ``name_prefix``."""
        killed = []
        for name, (state, pid) in self.status().items():
            if name.split(":")[-1].startswith(name_prefix) and state == "RUNNING" and pid:
                os.kill(pid, sig)
                killed.append(pid)
        return killed

    def crash(self) -> list[int]:
        """The host dies: SIGKILL supervisord and every process under it at once (they
        run in process groups of their own, so one killpg would not reach them)."""
        pidfile = self.conf_dir / "supervisord.pid"
        pid = int(pidfile.read_text())
        victims = [pid, *descendants(pid)]
        for victim in victims:
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for victim in victims:
            wait_gone(victim, 10)
        self.started = False
        return victims

    def stop(self) -> None:
        """Graceful: supervisord TERMs each program and waits for it, then exits."""
        if not self.started:
            return
        pidfile = self.conf_dir / "supervisord.pid"
        pid = int(pidfile.read_text()) if pidfile.exists() else None
        self.ctl("shutdown")
        if pid:
            wait_gone(pid, 90)
        self.started = False

    def logs(self, tail: int = 1500) -> str:
        """The tail of every program log, for failure messages."""
        chunks = []
        for path in sorted((self.conf_dir / "logs").glob("*.log")):
            chunks.append(f"--- {path.name}\n" + path.read_text(errors="replace")[-tail:])
        return "\n".join(chunks)


@dataclass
class Hosts:
    """Several "hosts" on this machine: one agent-mode Fleet (its own supervisord) each,
    all sharing the control store and the stream (tests and the chaos campaign)."""

    root: Path
    env: dict[str, str]
    stream: str
    workers: int = 1
    host_settings: dict[str, dict[str, str]] = field(default_factory=dict)  # host -> --set
    fleets: dict[str, Fleet] = field(default_factory=dict, init=False)
    down: set[str] = field(default_factory=set, init=False)

    def start(self, host_ids: list[str]) -> None:
        """Configure them all first, then launch them back to back (they boot together)."""
        for host in host_ids:
            self.fleets[host] = Fleet(self.root / host, self.env, self.stream, self.workers,
                                      agent_host=host,
                                      settings=self.host_settings.get(host, {}))
            self.fleets[host].configure()
        for host in host_ids:
            self.fleets[host].launch()

    def add(self, host: str) -> Fleet:
        self.start([host])
        return self.fleets[host]

    def live(self) -> dict[str, Fleet]:
        return {h: f for h, f in self.fleets.items() if h not in self.down}

    def crash(self, host: str) -> None:
        """SIGKILL the host's supervisord and everything under it."""
        self.fleets[host].crash()
        self.down.add(host)

    def revive(self, host: str) -> None:
        """Boot it again on the config it had (its include file is as the agent left it)."""
        self.fleets[host].launch()
        self.down.discard(host)

    def status(self) -> dict[str, tuple[str, int | None]]:
        """"host/program" -> (state, pid) over the live hosts."""
        return {f"{h}/{name}": st for h, f in self.live().items()
                for name, st in f.status().items()}

    def log_dirs(self) -> list[Path]:
        return [f.conf_dir / "logs" for f in self.fleets.values()]

    def stop(self) -> None:
        for fleet in self.live().values():
            fleet.stop()
