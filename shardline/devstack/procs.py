"""Processes of the stack: spawn, is-it-still-ours, stop, wait until a service answers.

A recorded process is identified by PID *and* kernel start time, so a recycled PID is
never mistaken for ours; a service only counts as ready when the process we started
holds the listening socket, so a stranger on our port is not taken for it. Nothing here
knows about particular services: callers pass names, ports and health checks.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

from .common import HOST, STOP_TIMEOUT, DevstackError, Record, log

# Popen objects of the processes this Python process spawned, so we can reap them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def proc_start_time(pid: int) -> str | None:
    """Kernel start time of a live, non-zombie process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return fields[19]  # field 22 of proc(5), counted after "pid (comm)"


def alive(svc: Record | None) -> bool:
    """True if the process recorded in svc is still ours and running."""
    if not svc or not svc.get("pid"):
        return False
    pid = svc["pid"]
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        del _CHILDREN[pid]
        return False
    if not Path("/proc/self/stat").exists():  # no procfs: a signal-0 probe will do
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    return proc_start_time(pid) == svc.get("start_time")


def record(pid: int, log_path: str | Path) -> Record:
    """The state.json entry of a service process."""
    return {"pid": pid, "start_time": proc_start_time(pid), "log": str(log_path)}


def spawn(cmd: list[str], log_path: Path, cwd: Path | None = None) -> Record:
    """Start cmd in its own session with output appended to log_path."""
    with open(log_path, "ab") as logf:
        logf.write(f"--- {time.strftime('%F %T')} {shlex.join(cmd)}\n".encode())
        logf.flush()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
        )
    _CHILDREN[proc.pid] = proc
    return record(proc.pid, log_path)


def _wait_dead(svc: Record, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(svc):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def terminate(name: str, svc: Record, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the recorded process, SIGKILL it if it is still there after timeout."""
    if not alive(svc):
        return
    pid = svc["pid"]
    log.info("stopping %s (pid %d)", name, pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGCONT)  # a stopped process must run to act on SIGTERM
    if _wait_dead(svc, timeout):
        return
    log.warning("%s (pid %d) ignored SIGTERM for %.0fs, sending SIGKILL", name, pid, timeout)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not _wait_dead(svc, 2.0):
        raise DevstackError(f"{name} (pid {pid}) survived SIGKILL")


def tail(path: str | Path, lines: int = 20) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _listening_sockets(port: int) -> set[str]:
    """`socket:[inode]` names of the TCP sockets listening on port (any address)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    found.add(f"socket:[{fields[9]}]")
    return found


def _owns_port(pid: int, port: int) -> bool:
    """Does pid hold the listening socket? (So a stranger on our port is not taken for us.)"""
    if not Path("/proc/net/tcp").exists():
        return True  # cannot tell without /proc: trust the health check
    sockets = _listening_sockets(port)
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in sockets:
                    return True
    return False


def wait_ready(
    name: str, svc: Record, port: int, timeout: float, check: Callable[[int], None]
) -> None:
    """Poll the service's health check until it answers; fail with its log tail."""
    deadline = time.monotonic() + timeout
    while True:
        if not alive(svc):
            raise DevstackError(
                f"{name} exited while starting on {HOST}:{port}; "
                f"tail of {svc['log']}:\n{tail(svc['log'])}"
            )
        try:
            check(port)
            if _owns_port(svc["pid"], port):
                log.debug("%s answers on port %d", name, port)
                return
            last: Exception = DevstackError(
                f"another process answers on port {port}; `down` then `up` picks free ports"
            )
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready yet"
            last = exc
        if time.monotonic() > deadline:
            terminate(name, svc, timeout=1.0)  # useless now; do not leave it to `down`
            raise DevstackError(
                f"{name} did not answer on {HOST}:{port} within {timeout:.0f}s ({last}); "
                f"tail of {svc['log']}:\n{tail(svc['log'])}"
            )
        time.sleep(0.05)


def require(binary: str | Path, hint: str) -> str:
    """Return the binary's path or fail saying what to install."""
    path = shutil.which(str(binary))
    if not path:
        raise DevstackError(f"{Path(binary).name} not found: {hint}")
    return path
