"""Local development stack: gearmand, kinesalite (Kinesis), moto (S3) and PostgreSQL.

Every service listens on 127.0.0.1 only; data, logs and the state file live under one
directory (default ``.devstack/`` in the repository, git-ignored).

    shardline devstack up        # start (or repair) the stack, print its status
    eval "$(shardline devstack env)"
    shardline devstack status
    shardline devstack down      # stop exactly what ``up`` started

``dir/state.json`` records ports, PIDs (with their kernel start time, so a recycled PID
is never mistaken for ours), the bucket and the PostgreSQL paths. A second ``up`` reuses
it and restarts only the services that do not answer.

PostgreSQL is a throwaway cluster: ``initdb`` runs as the ``postgres`` user when we are
root (``initdb`` refuses root). When that user cannot reach ``dir`` (e.g. a parent is
mode 0700, as pytest's tmp directories are), the cluster lives in a ``/tmp/shardline-pg-*``
directory recorded in the state. ``down`` deletes the cluster and keeps its log in ``dir``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import psycopg2

log = logging.getLogger("shardline.devstack")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO_ROOT / ".devstack"
KINESALITE_SCRIPT = REPO_ROOT / "scripts" / "kinesalite-server.js"

HOST = "127.0.0.1"
SERVICES = ("gearman", "kinesis", "s3", "postgres")
DATABASE = "shardline"
PG_USER = "postgres"
DEFAULT_BUCKET = "shardline-dev"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
STATE_VERSION = 1

# Fake credentials: the emulators need some, real AWS must never see them.
DUMMY_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}

# Popen objects of the processes this Python process spawned, so we can reap them.
_CHILDREN: dict[int, subprocess.Popen] = {}


class DevstackError(RuntimeError):
    """A service could not be started, stopped or found."""


@dataclass
class StackInfo:
    """Where a running stack's services listen."""

    dir: Path
    gearman_port: int
    kinesis_port: int
    s3_port: int
    pg_port: int
    bucket: str
    pg_socket_dir: Path

    @property
    def gearman_server(self) -> str:
        return f"{HOST}:{self.gearman_port}"

    @property
    def kinesis_endpoint_url(self) -> str:
        return f"http://{HOST}:{self.kinesis_port}"

    @property
    def s3_endpoint_url(self) -> str:
        return f"http://{HOST}:{self.s3_port}"

    @property
    def dsn(self) -> str:
        return f"host={HOST} port={self.pg_port} dbname={DATABASE} user={PG_USER}"

    def env(self) -> dict[str, str]:
        """Environment variables that point shardline (and boto3) at this stack."""
        return {
            "SHARDLINE_KINESIS_ENDPOINT_URL": self.kinesis_endpoint_url,
            "SHARDLINE_S3_ENDPOINT_URL": self.s3_endpoint_url,
            "SHARDLINE_S3_BUCKET": self.bucket,
            "SHARDLINE_GEARMAN_SERVERS": self.gearman_server,
            "SHARDLINE_WAREHOUSE_DSN": self.dsn,
            **DUMMY_AWS_ENV,
        }

    def client(self, service: str, **kwargs: Any):
        """A boto3 client ("kinesis" or "s3") for this stack, with the dummy credentials."""
        endpoint = {"kinesis": self.kinesis_endpoint_url, "s3": self.s3_endpoint_url}[service]
        return _boto_client(service, endpoint, **kwargs)


class ServiceStatus(NamedTuple):
    pid: int | None
    port: int
    alive: bool


# --------------------------------------------------------------------------- state


def _state_path(dir: Path) -> Path:
    return dir / "state.json"


def _read_state(dir: Path) -> dict | None:
    try:
        return json.loads(_state_path(dir).read_text())
    except FileNotFoundError:
        return None


def _write_state(dir: Path, state: dict) -> None:
    """Write state.json atomically."""
    tmp = _state_path(dir).with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, _state_path(dir))


@contextlib.contextmanager
def _locked(dir: Path) -> Iterator[None]:
    """Serialize up/down on one directory."""
    with open(dir / "state.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _info(state: dict) -> StackInfo:
    ports = state["ports"]
    return StackInfo(
        dir=Path(state["dir"]),
        gearman_port=ports["gearman"],
        kinesis_port=ports["kinesis"],
        s3_port=ports["s3"],
        pg_port=ports["postgres"],
        bucket=state["bucket"],
        pg_socket_dir=Path(state["pg"]["socket_dir"]),
    )


def _free_ports(count: int) -> list[int]:
    """Distinct TCP ports that are free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _new_state(dir: Path, ports: dict[str, int] | None, bucket: str) -> dict:
    unknown = set(ports or {}) - set(SERVICES)
    if unknown:
        raise ValueError(f"unknown service(s) in ports: {sorted(unknown)}; known: {SERVICES}")
    picked = dict(zip(SERVICES, _free_ports(len(SERVICES))))
    picked.update(ports or {})
    return {
        "version": STATE_VERSION,
        "dir": str(dir),
        "ports": picked,
        "bucket": bucket,
        "pg": _pg_layout(dir),
        "services": {},
    }


# ----------------------------------------------------------------------- processes


def _proc_start_time(pid: int) -> str | None:
    """Kernel start time of a live, non-zombie process, or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return fields[19]  # field 22 of proc(5), counted after "pid (comm)"


def _alive(svc: dict | None) -> bool:
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
    return _proc_start_time(pid) == svc.get("start_time")


def _spawn(cmd: list[str], log_path: Path, cwd: Path | None = None) -> dict:
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
    return {"pid": proc.pid, "start_time": _proc_start_time(proc.pid), "log": str(log_path)}


def _wait_dead(svc: dict, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _alive(svc):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _terminate(name: str, svc: dict, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the recorded process, SIGKILL it if it is still there after timeout."""
    if not _alive(svc):
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


def _tail(path: str | Path, lines: int = 20) -> str:
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


def _wait_ready(name: str, svc: dict, port: int, timeout: float) -> None:
    """Poll the service's health check until it answers; fail with its log tail."""
    check = _CHECKS[name]
    deadline = time.monotonic() + timeout
    while True:
        if not _alive(svc):
            raise DevstackError(
                f"{name} exited while starting on {HOST}:{port}; "
                f"tail of {svc['log']}:\n{_tail(svc['log'])}"
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
            _terminate(name, svc, timeout=1.0)  # useless now; do not leave it to `down`
            raise DevstackError(
                f"{name} did not answer on {HOST}:{port} within {timeout:.0f}s ({last}); "
                f"tail of {svc['log']}:\n{_tail(svc['log'])}"
            )
        time.sleep(0.05)


def _require(binary: str | Path, hint: str) -> str:
    """Return the binary's path or fail saying what to install."""
    path = shutil.which(str(binary))
    if not path:
        raise DevstackError(f"{Path(binary).name} not found: {hint}")
    return path


# ------------------------------------------------------------------------- gearmand


def _gearmand_bin() -> str:
    return _require("gearmand", "apt-get install gearman-job-server")


def _start_gearman(state: dict) -> dict:
    dir, port = Path(state["dir"]), state["ports"]["gearman"]
    cmd = [
        _gearmand_bin(), "-L", HOST, "-p", str(port),
        "--log-file=stderr", f"--pid-file={dir / 'gearmand.pid'}",
    ]  # fmt: skip
    return _spawn(cmd, dir / "gearmand.log")


def _check_gearman(port: int) -> None:
    """Admin protocol: `status` answers with lines ending in a lone '.'."""
    with socket.create_connection((HOST, port), timeout=1.0) as sock:
        sock.sendall(b"status\n")
        reply = b""
        while not (reply == b".\n" or reply.endswith(b"\n.\n")):
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"gearmand closed the connection after {reply!r}")
            reply += chunk


# ----------------------------------------------------------------------- kinesalite


def _node_bin() -> str:
    """node, after checking that kinesalite and our launcher script are in place."""
    node = _require("node", "apt-get install nodejs npm")
    if not KINESALITE_SCRIPT.is_file():
        raise DevstackError(f"{KINESALITE_SCRIPT} is missing (run from a shardline checkout)")
    if not (REPO_ROOT / "node_modules" / "kinesalite").is_dir():
        raise DevstackError(f"kinesalite not installed: run `npm ci` in {REPO_ROOT}")
    return node


def _start_kinesis(state: dict) -> dict:
    dir, port = Path(state["dir"]), state["ports"]["kinesis"]
    cmd = [_node_bin(), str(KINESALITE_SCRIPT), str(port)]
    return _spawn(cmd, dir / "kinesalite.log", cwd=REPO_ROOT)


# ---------------------------------------------------------------------- boto3 clients

_BOTO_LOCK = threading.Lock()


@functools.lru_cache(maxsize=None)
def _boto_session():
    """One shared session: creating clients from it reuses the parsed service models."""
    import boto3  # imported lazily: `devstack env/status` do not need it

    return boto3.session.Session()


def _boto_client(service: str, endpoint_url: str, **kwargs: Any):
    params = {
        "endpoint_url": endpoint_url,
        "region_name": DUMMY_AWS_ENV["AWS_DEFAULT_REGION"],
        "aws_access_key_id": DUMMY_AWS_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": DUMMY_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
    }
    params.update(kwargs)
    with _BOTO_LOCK:  # sessions are not thread-safe, the clients they make are
        return _boto_session().client(service, **params)


@functools.lru_cache(maxsize=32)
def _probe_client(service: str, port: int):
    """A client that fails fast, for health checks."""
    import botocore.config

    config = botocore.config.Config(
        connect_timeout=1, read_timeout=2, retries={"max_attempts": 1, "mode": "standard"}
    )
    return _boto_client(service, f"http://{HOST}:{port}", config=config)


def _warm_up_clients(ports: dict[str, int]) -> None:
    _probe_client("kinesis", ports["kinesis"])
    _probe_client("s3", ports["s3"])


def _check_kinesis(port: int) -> None:
    _probe_client("kinesis", port).list_streams(Limit=1)


# ---------------------------------------------------------------------------- moto


def _moto_bin() -> str:
    """moto_server next to our Python (the venv's bin), else from PATH."""
    moto = Path(sys.executable).parent / "moto_server"
    return _require(moto if moto.exists() else "moto_server", "pip install 'moto[server]'")


def _start_s3(state: dict) -> dict:
    dir, port = Path(state["dir"]), state["ports"]["s3"]
    return _spawn([_moto_bin(), "-H", HOST, "-p", str(port)], dir / "moto.log")


def _check_s3(port: int) -> None:
    _probe_client("s3", port).list_buckets()


def _ensure_bucket(info: StackInfo) -> None:
    s3 = info.client("s3")
    if info.bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=info.bucket)
        log.info("created bucket %s", info.bucket)


# ------------------------------------------------------------------------ postgres


def _pg_bindir() -> Path:
    """Newest Debian PostgreSQL bin directory, else the one on PATH."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    initdb = _require("initdb", "apt-get install postgresql")
    return Path(initdb).parent


def _as_pg_user(cmd: list[str]) -> list[str]:
    """Run as `postgres` when we are root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return cmd
    runuser = _require("runuser", "apt-get install util-linux")
    return [runuser, "-u", PG_USER, "--", *cmd]


def _pg_can_use(dir: Path) -> bool:
    """Can the user that runs postgres reach dir, and is the socket path short enough?"""
    if len(str(dir / "pg" / ".s.PGSQL.65535")) > 100:  # sun_path limit is 107 bytes
        return False
    if os.geteuid() != 0:
        return True
    return subprocess.run(_as_pg_user(["test", "-x", str(dir)]), check=False).returncode == 0


def _pg_layout(dir: Path) -> dict:
    """Paths of the throwaway cluster: under dir if possible, else a /tmp directory."""
    if _pg_can_use(dir):
        root = dir / "pg"
    else:
        root = Path(tempfile.mkdtemp(prefix="shardline-pg-"))
        log.info("%s is not reachable by user %s; PostgreSQL data goes to %s", dir, PG_USER, root)
    return {
        "root": str(root),
        "data": str(root / "data"),
        "socket_dir": str(root),
        "log": str(root / "postgres.log"),
    }


def _pg_run(cmd: list[str], pg: dict, what: str) -> None:
    result = subprocess.run(
        _as_pg_user(cmd), cwd=pg["root"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise DevstackError(
            f"postgres: {what} failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
            f"\ntail of {pg['log']}:\n{_tail(pg['log'])}"
        )


def _start_postgres(state: dict) -> dict:
    """initdb if needed, then `pg_ctl -w start`; returns the postmaster's record."""
    pg, port, bindir = state["pg"], state["ports"]["postgres"], _pg_bindir()
    root = Path(pg["root"])
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(root, PG_USER, PG_USER)
    if not (Path(pg["data"]) / "PG_VERSION").exists():
        _pg_run(
            [str(bindir / "initdb"), "-D", pg["data"], "-A", "trust", "-U", PG_USER,
             "-E", "UTF8", "--locale=C", "--no-sync"],
            pg, "initdb",
        )  # fmt: skip
    options = f"-p {port} -k {pg['socket_dir']} -c listen_addresses={HOST} -c fsync=off"
    _pg_run(
        [str(bindir / "pg_ctl"), "-D", pg["data"], "-l", pg["log"], "-o", options,
         "-w", "-t", str(int(START_TIMEOUT)), "start"],
        pg, f"pg_ctl start on {HOST}:{port}",
    )  # fmt: skip
    pid = int((Path(pg["data"]) / "postmaster.pid").read_text().split()[0])
    return {"pid": pid, "start_time": _proc_start_time(pid), "log": pg["log"]}


def _pg_connect(port: int, dbname: str = "postgres", **kwargs: Any):
    return psycopg2.connect(
        host=HOST, port=port, dbname=dbname, user=PG_USER, connect_timeout=2, **kwargs
    )


def _check_postgres(port: int) -> None:
    conn = _pg_connect(port)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
    finally:
        conn.close()


def _ensure_database(port: int) -> None:
    conn = _pg_connect(port)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if cur.fetchone() is None:
                cur.execute(f'CREATE DATABASE "{DATABASE}"')
                log.info("created database %s", DATABASE)
    finally:
        conn.close()


def _stop_postgres(state: dict) -> None:
    """`pg_ctl stop -m fast`, falling back to signals on the recorded postmaster."""
    pg, svc = state["pg"], state["services"].get("postgres")
    if not _alive(svc):
        return
    log.info("stopping postgres (pid %d)", svc["pid"])
    if Path(pg["data"]).is_dir():
        pg_ctl = str(_pg_bindir() / "pg_ctl")
        cmd = [pg_ctl, "-D", pg["data"], "-m", "fast", "-w", "-t", "10", "stop"]
        subprocess.run(_as_pg_user(cmd), cwd=pg["root"], capture_output=True, check=False)
    _terminate("postgres", svc)


def _remove_cluster(state: dict) -> None:
    """Delete the throwaway cluster, keeping a copy of its log in dir."""
    pg = state["pg"]
    with contextlib.suppress(OSError):
        shutil.copyfile(pg["log"], Path(state["dir"]) / "postgres.log")
    shutil.rmtree(pg["root"], ignore_errors=True)


# ---------------------------------------------------------------------- public API

_STARTERS: dict[str, Callable[[dict], dict]] = {
    "gearman": _start_gearman,
    "kinesis": _start_kinesis,
    "s3": _start_s3,
    "postgres": _start_postgres,
}
_CHECKS: dict[str, Callable[[int], None]] = {
    "gearman": _check_gearman,
    "kinesis": _check_kinesis,
    "s3": _check_s3,
    "postgres": _check_postgres,
}


def _check_prerequisites() -> None:
    """Fail before starting anything if a binary is missing, listing all of them."""
    finders = [_gearmand_bin, _node_bin, _moto_bin, _pg_bindir, lambda: _as_pg_user([])]
    problems = []
    for find in finders:
        try:
            find()
        except DevstackError as exc:
            problems.append(str(exc))
    if problems:
        raise DevstackError("missing prerequisites:\n  " + "\n  ".join(problems))


def _answers(name: str, port: int) -> bool:
    try:
        _CHECKS[name](port)
        return True
    except Exception:  # noqa: BLE001
        return False


def _stop_service(name: str, state: dict) -> None:
    if name == "postgres":
        _stop_postgres(state)
    elif state["services"].get(name):
        _terminate(name, state["services"][name])


def _ensure_service(name: str, state: dict) -> bool:
    """Start the service unless its recorded process is alive and answering.

    Returns True if it was (re)started. Saves state right away, so `down` can clean up
    even if a later service fails.
    """
    svc, port = state["services"].get(name), state["ports"][name]
    alive = _alive(svc)
    if alive and _answers(name, port):
        log.info("%s already running (pid %d, port %d)", name, svc["pid"], port)
        return False
    if svc:
        why = "is not answering" if alive else "is gone"
        log.info("%s (pid %s) %s, restarting it on port %d", name, svc["pid"], why, port)
        _stop_service(name, state)
    state["services"][name] = _STARTERS[name](state)
    _write_state(Path(state["dir"]), state)
    log.info("started %s (pid %d, port %d)", name, state["services"][name]["pid"], port)
    return True


def up(
    dir: Path = DEFAULT_DIR,
    ports: dict[str, int] | None = None,
    bucket: str = DEFAULT_BUCKET,
    timeout: float = START_TIMEOUT,
) -> StackInfo:
    """Start the stack under dir (or repair a running one) and wait until it answers.

    ports maps service names ("gearman", "kinesis", "s3", "postgres") to ports; missing
    ones are picked free at the first `up` and kept in dir/state.json afterwards.
    """
    began = time.monotonic()
    _check_prerequisites()
    dir = Path(dir).resolve()
    dir.mkdir(parents=True, exist_ok=True)
    with _locked(dir):
        state = _read_state(dir) or _new_state(dir, ports, bucket)
        clash = {k: v for k, v in (ports or {}).items() if state["ports"].get(k) != v}
        if clash:
            raise DevstackError(
                f"the stack in {dir} uses ports {state['ports']}, not {clash}; run `down` first"
            )
        state["bucket"] = bucket
        _write_state(dir, state)

        # Spawn the quick ones, set up postgres (blocking) meanwhile, then wait for all.
        started = [name for name in ("gearman", "kinesis", "s3") if _ensure_service(name, state)]
        warm = threading.Thread(target=_warm_up_clients, args=(state["ports"],), daemon=True)
        warm.start()  # boto3 imports and model loading overlap with initdb
        _ensure_service("postgres", state)
        warm.join()
        for name in started:
            _wait_ready(name, state["services"][name], state["ports"][name], timeout)

        info = _info(state)
        _ensure_bucket(info)
        _ensure_database(info.pg_port)
    log.info("stack up in %s (%.2fs)", dir, time.monotonic() - began)
    return info


def down(dir: Path = DEFAULT_DIR) -> None:
    """Stop the processes recorded in dir/state.json, delete the cluster and the state."""
    dir = Path(dir).resolve()
    if not _state_path(dir).exists():
        log.info("no stack in %s", dir)
        return
    with _locked(dir):
        state = _read_state(dir)
        if state is None:
            return
        for name in reversed(SERVICES):
            _stop_service(name, state)
        _remove_cluster(state)
        _state_path(dir).unlink()
    log.info("stack in %s is down", dir)


def status(dir: Path = DEFAULT_DIR) -> dict[str, ServiceStatus]:
    """Service name -> (pid, port, alive); empty when there is no stack in dir."""
    state = _read_state(Path(dir).resolve())
    if state is None:
        return {}
    result = {}
    for name in SERVICES:
        svc = state["services"].get(name) or {}
        result[name] = ServiceStatus(svc.get("pid"), state["ports"][name], _alive(svc))
    return result


def load(dir: Path = DEFAULT_DIR) -> StackInfo | None:
    """Info of the stack recorded in dir, or None if there is none (never `up`, or `down`)."""
    state = _read_state(Path(dir).resolve())
    return _info(state) if state else None


# ---------------------------------------------------------------------------- CLI


def _print_status(dir: Path) -> bool:
    """Print a status table; True if every service is alive."""
    services = status(dir)
    if not services:
        print(f"no stack in {dir}")
        return False
    print(f"{'SERVICE':<10} {'PID':>8} {'PORT':>6}  STATE")
    for name, st in services.items():
        print(f"{name:<10} {st.pid or '-':>8} {st.port:>6}  {'up' if st.alive else 'DOWN'}")
    return all(st.alive for st in services.values())


def _dir_arg(dir: Path) -> str:
    """` --dir DIR` for hints, empty for the default directory."""
    return "" if Path(dir).resolve() == DEFAULT_DIR else f" --dir {shlex.quote(str(dir))}"


def _parser() -> argparse.ArgumentParser:
    dir_opt = argparse.ArgumentParser(add_help=False)
    dir_opt.add_argument("--dir", type=Path, default=argparse.SUPPRESS,
                         help=f"stack directory (default: {DEFAULT_DIR})")  # fmt: skip
    parser = argparse.ArgumentParser(
        prog="shardline devstack", parents=[dir_opt],
        description="Local gearmand + kinesalite + moto S3 + PostgreSQL on 127.0.0.1.",
    )  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", parents=[dir_opt], help="start the stack (idempotent)")
    p_up.add_argument("--bucket", default=DEFAULT_BUCKET, help="S3 bucket to create")
    sub.add_parser("down", parents=[dir_opt], help="stop the stack and delete its data")
    sub.add_parser("status", parents=[dir_opt], help="show pid, port, state per service")
    p_env = sub.add_parser("env", parents=[dir_opt],
                           help='print variables: eval "$(shardline devstack env)"')  # fmt: skip
    p_env.add_argument("--plain", action="store_true",
                       help="KEY=value lines without `export` or shell quoting")  # fmt: skip
    return parser


def main(argv: list[str]) -> int:
    """`shardline devstack up|down|status|env [--dir DIR]`; returns the exit status."""
    args = _parser().parse_args(argv)
    dir = getattr(args, "dir", None) or DEFAULT_DIR
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="devstack: %(message)s", stream=sys.stderr)
    try:
        if args.command == "up":
            up(dir, bucket=args.bucket)
            _print_status(dir)
            print(f'\nexport the settings with: eval "$(shardline devstack env{_dir_arg(dir)})"',
                  file=sys.stderr)  # fmt: skip
            return 0
        if args.command == "down":
            down(dir)
            return 0
        if args.command == "status":
            return 0 if _print_status(dir) else 1
        if args.command == "env":
            info = load(dir)
            if info is None:
                raise DevstackError(f"no stack in {dir}: run `shardline devstack up` first")
            for key, value in info.env().items():
                print(f"{key}={value}" if args.plain else f"export {key}={shlex.quote(value)}")
            return 0
    except DevstackError as exc:
        print(f"devstack: error: {exc}", file=sys.stderr)
        if args.command == "up":
            print(f"devstack: clean up with `shardline devstack down{_dir_arg(dir)}`",
                  file=sys.stderr)  # fmt: skip
        return 1
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
