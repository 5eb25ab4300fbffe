"""The services of the stack: how each one starts and how we know it answers.

gearmand, kinesalite (Kinesis), moto (S3 and DynamoDB, through moto_server.py) and pgrelay
(relay.py, redshift-like mode only) are plain child processes, defined here; PostgreSQL
needs initdb and pg_ctl and lives in ``pg_server.py``. ``STARTERS`` and
``CHECKS`` map each name of ``SERVICES`` to its start function (state -> process record)
and its health check (port -> None, raising if the service does not answer).
"""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path
from typing import Callable

import shardline.devstack.pg_server as pg_server
from .aws import probe_client
from .common import (HOST, KINESALITE_SCRIPT, RELAY, REPO_ROOT, DevstackError, Record,
                     http_url, log)
from .procs import require, spawn, terminate
from .state import StackInfo

# ------------------------------------------------------------------------- gearmand


def _gearmand_bin() -> str:
    return require("gearmand", "apt-get install gearman-job-server")


def _start_gearman(state: Record) -> Record:
    dir, port = Path(state["dir"]), state["ports"]["gearman"]
    cmd = [
        _gearmand_bin(), "-L", HOST, "-p", str(port),
        "--log-file=stderr", f"--pid-file={dir / 'gearmand.pid'}",
    ]  # fmt: skip
    return spawn(cmd, dir / "gearmand.log")


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
    node = require("node", "apt-get install nodejs npm")
    if not KINESALITE_SCRIPT.is_file():
        raise DevstackError(f"{KINESALITE_SCRIPT} is missing (run from a shardline checkout)")
    if not (REPO_ROOT / "node_modules" / "kinesalite").is_dir():
        raise DevstackError(f"kinesalite not installed: run `npm ci` in {REPO_ROOT}")
    return node


def _start_kinesis(state: Record) -> Record:
    dir, port = Path(state["dir"]), state["ports"]["kinesis"]
    cmd = [_node_bin(), str(KINESALITE_SCRIPT), str(port)]
    return spawn(cmd, dir / "kinesalite.log", cwd=REPO_ROOT)


def _check_kinesis(port: int) -> None:
    probe_client("kinesis", port).list_streams(Limit=1)


# ---------------------------------------------------------------------------- moto


def _moto_bin() -> str:
    """The Python that runs moto (moto_server.py: moto with DynamoDB calls serialised)."""
    if importlib.util.find_spec("moto") is None:
        raise DevstackError(f"moto is not installed for {sys.executable}: "
                            "pip install 'moto[server]'")
    return sys.executable


def _start_s3(state: Record) -> Record:
    dir, port = Path(state["dir"]), state["ports"]["s3"]
    cmd = [_moto_bin(), "-m", "shardline.devstack.moto_server", "-H", HOST, "-p", str(port)]
    return spawn(cmd, dir / "moto.log")


def _check_s3(port: int) -> None:
    """moto serves S3 and DynamoDB (the control store's backend) on one port."""
    probe_client("s3", port).list_buckets()
    probe_client("dynamodb", port).list_tables(Limit=1)


def ensure_bucket(info: StackInfo) -> None:
    s3 = info.client("s3")
    if info.bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=info.bucket)
        log.info("created bucket %s", info.bucket)


# ------------------------------------------------------------- pgrelay (redshift-like)


def _start_relay(state: Record) -> Record:
    """The commit-latency relay in front of PostgreSQL (relay.py), as a process of its own;
    it also answers Redshift's COPY from S3 out of the stack's S3 (redshift_copy.py)."""
    dir, port = Path(state["dir"]), state["ports"][RELAY]
    latency = state["warehouse"]["commit_latency_ms"]
    cmd = [sys.executable, "-m", "shardline.devstack.relay", "--port", str(port),
           "--upstream", f"{HOST}:{state['ports']['postgres']}",
           "--commit-latency-ms", str(latency),
           "--s3-endpoint-url", http_url(state["ports"]["s3"])]  # fmt: skip
    return {**spawn(cmd, dir / f"{RELAY}.log"), "commit_latency_ms": latency, "copies": True}


def _check_relay(port: int) -> None:
    pg_server.check(port)  # a query through the relay reaches PostgreSQL


# ------------------------------------------------------------------------ registry

STARTERS: dict[str, Callable[[Record], Record]] = {
    "gearman": _start_gearman,
    "kinesis": _start_kinesis,
    "s3": _start_s3,
    "postgres": pg_server.start,
    RELAY: _start_relay,
}
CHECKS: dict[str, Callable[[int], None]] = {
    "gearman": _check_gearman,
    "kinesis": _check_kinesis,
    "s3": _check_s3,
    "postgres": pg_server.check,
    RELAY: _check_relay,
}


def check_prerequisites() -> None:
    """Fail before starting anything if a binary is missing, listing all of them."""
    finders: list[Callable[[], object]] = [
        _gearmand_bin, _node_bin, _moto_bin, pg_server.bindir, lambda: pg_server.as_pg_user([]),
    ]  # fmt: skip
    problems = []
    for find in finders:
        try:
            find()
        except DevstackError as exc:
            problems.append(str(exc))
    if problems:
        raise DevstackError("missing prerequisites:\n  " + "\n  ".join(problems))


def answers(name: str, port: int) -> bool:
    try:
        CHECKS[name](port)
        return True
    except Exception:  # noqa: BLE001
        return False


def stop(name: str, state: Record) -> None:
    if name == "postgres":
        pg_server.stop(state)
    elif state["services"].get(name):
        terminate(name, state["services"][name])
