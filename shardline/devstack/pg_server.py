"""The throwaway PostgreSQL cluster: layout, initdb + start, health check, stop, removal.

``initdb`` and ``postgres`` refuse root, so when we are root they run as the ``postgres``
user. When that user cannot reach the stack directory (e.g. a parent is mode 0700, as
pytest's tmp directories are) or the socket path would be too long, the cluster lives in
a ``/tmp/shardline-pg-*`` directory recorded in the state. Removal keeps a copy of the
server log in the stack directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg2

from .common import (
    CONTROL_DATABASE, DATABASE, DEFAULT_ISOLATION, HOST, ISOLATIONS, PG_USER, START_TIMEOUT,
    DevstackError, Record, log,
)  # fmt: skip
from .procs import alive, record, require, tail, terminate

if TYPE_CHECKING:  # psycopg2 is untyped (types-psycopg2 is not a dependency)
    from psycopg2.extensions import connection


def bindir() -> Path:
    """Newest Debian PostgreSQL bin directory, else the one on PATH."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1].parent
    initdb = require("initdb", "apt-get install postgresql")
    return Path(initdb).parent


def as_pg_user(cmd: list[str]) -> list[str]:
    """Run as `postgres` when we are root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return cmd
    runuser = require("runuser", "apt-get install util-linux")
    return [runuser, "-u", PG_USER, "--", *cmd]


def _can_use(dir: Path) -> bool:
    """Can the user that runs postgres reach dir, and is the socket path short enough?"""
    if len(str(dir / "pg" / ".s.PGSQL.65535")) > 100:  # sun_path limit is 107 bytes
        return False
    if os.geteuid() != 0:
        return True
    return subprocess.run(as_pg_user(["test", "-x", str(dir)]), check=False).returncode == 0


def layout(dir: Path) -> Record:
    """Paths of the throwaway cluster: under dir if possible, else a /tmp directory."""
    if _can_use(dir):
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


def _run(cmd: list[str], pg: Record, what: str) -> None:
    result = subprocess.run(
        as_pg_user(cmd), cwd=pg["root"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise DevstackError(
            f"postgres: {what} failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
            f"\ntail of {pg['log']}:\n{tail(pg['log'])}"
        )


def start(state: Record) -> Record:
    """initdb if needed, then `pg_ctl -w start`; returns the postmaster's record."""
    pg, port, pgbin = state["pg"], state["ports"]["postgres"], bindir()
    root = Path(pg["root"])
    root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(root, PG_USER, PG_USER)
    if not (Path(pg["data"]) / "PG_VERSION").exists():
        _run(
            [str(pgbin / "initdb"), "-D", pg["data"], "-A", "trust", "-U", PG_USER,
             "-E", "UTF8", "--locale=C", "--no-sync"],
            pg, "initdb",
        )  # fmt: skip
    options = f"-p {port} -k {pg['socket_dir']} -c listen_addresses={HOST} -c fsync=off"
    _run(
        [str(pgbin / "pg_ctl"), "-D", pg["data"], "-l", pg["log"], "-o", options,
         "-w", "-t", str(int(START_TIMEOUT)), "start"],
        pg, f"pg_ctl start on {HOST}:{port}",
    )  # fmt: skip
    pid = int((Path(pg["data"]) / "postmaster.pid").read_text().split()[0])
    return record(pid, pg["log"])


def _connect(port: int, dbname: str = "postgres", **kwargs: object) -> connection:
    return psycopg2.connect(
        host=HOST, port=port, dbname=dbname, user=PG_USER, connect_timeout=2, **kwargs
    )


def check(port: int) -> None:
    with contextlib.closing(_connect(port)) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1")


def ensure_database(port: int, redshift_like: bool = False,
                    isolation: str = DEFAULT_ISOLATION) -> None:
    """The warehouse database and the control store's own; the warehouse's default
    isolation is Redshift's ``isolation`` (SERIALIZABLE, or SNAPSHOT as REPEATABLE READ)
    when redshift-like, else PostgreSQL's default. New sessions see the change; open ones
    keep theirs."""
    with contextlib.closing(_connect(port)) as conn:
        conn.autocommit = True
        with conn.cursor() as cur:
            for name in (DATABASE, CONTROL_DATABASE):
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
                    log.info("created database %s", name)
            if redshift_like:
                cur.execute(f'ALTER DATABASE "{DATABASE}" '
                            f"SET default_transaction_isolation = '{ISOLATIONS[isolation]}'")
            else:
                cur.execute(f'ALTER DATABASE "{DATABASE}" RESET default_transaction_isolation')


def stop(state: Record) -> None:
    """`pg_ctl stop -m fast`, falling back to signals on the recorded postmaster."""
    pg, svc = state["pg"], state["services"].get("postgres")
    if not alive(svc):
        return
    log.info("stopping postgres (pid %d)", svc["pid"])
    if Path(pg["data"]).is_dir():
        pg_ctl = str(bindir() / "pg_ctl")
        cmd = [pg_ctl, "-D", pg["data"], "-m", "fast", "-w", "-t", "10", "stop"]
        subprocess.run(as_pg_user(cmd), cwd=pg["root"], capture_output=True, check=False)
    terminate("postgres", svc)


def remove_cluster(state: Record) -> None:
    """Delete the throwaway cluster, keeping a copy of its log in dir."""
    pg = state["pg"]
    with contextlib.suppress(OSError):
        shutil.copyfile(pg["log"], Path(state["dir"]) / "postgres.log")
    shutil.rmtree(pg["root"], ignore_errors=True)
