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
from typing import Any, Callable

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


def warehouse_query(env: dict[str, str], sql: str, args: Any = None) -> list[tuple]:
    """Run one query in the schema the fleet's env names (validated like any setting)."""
    from shardline import clients, settings

    conn = clients.warehouse_connect(settings.load(None, env=env))
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def control_store(env: dict[str, str]) -> Any:
    """The control store the fleet's env names (any backend); close it after use."""
    from shardline import settings
    from shardline.controlstore import open_store

    return open_store(settings.load(None, env=env))


def control_query(env: dict[str, str], sql: str, args: Any = None) -> list[tuple]:
    """One query on a PostgreSQL control store (the demo's and the tests' default)."""
    import psycopg2

    from shardline import settings

    c = settings.load(None, env=env).control
    conn = psycopg2.connect(c.dsn, options=f"-c search_path={c.schema}")
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def shardline(*args: str, env: dict[str, str], check: bool = True,
              timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a shardline command; on failure raise with its output (not a bare exit code)."""
    proc = subprocess.run([SHARDLINE, *args], env=env, text=True, capture_output=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"shardline {' '.join(args)} exited {proc.returncode}:\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             every: float = 0.5) -> Any:
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


@dataclass
class Fleet:
    """A supervisord running one consumer per shard, N stage workers and the loader."""

    conf_dir: Path
    env: dict[str, str]
    stream: str
    workers: int = 2
    started: bool = field(default=False, init=False)

    @property
    def conf(self) -> Path:
        return self.conf_dir / "shardline.conf"

    def configure(self) -> None:
        shardline("migrate", "--control", env=self.env)  # idempotent: the store's tables
        shardline("supervisor-config", "--stream", self.stream, "--workers", str(self.workers),
                  "--out", str(self.conf_dir), env=self.env)

    def start(self) -> None:
        self.configure()
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
