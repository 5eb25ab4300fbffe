"""up / down / status / load / stop_service / start_service, driven by ``dir/state.json``.

``up`` starts (or repairs) every service under the directory's lock and waits until all
answer; ``down`` stops exactly the processes the state records and deletes the cluster.
The per-service work lives in ``services.py`` and ``pg_server.py``, the process handling
in ``procs.py``, the record in ``state.py``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path
from typing import Iterator

import shardline.devstack.pg_server as pg_server
import shardline.devstack.services as services
from .aws import warm_up_clients
from .common import (
    DEFAULT_BUCKET, DEFAULT_COMMIT_LATENCY_MS, DEFAULT_DIR, DEFAULT_ISOLATION, ISOLATIONS, RELAY,
    SERVICES, START_TIMEOUT, WAREHOUSE_MODES, DevstackError, Record, log,
)  # fmt: skip
from .procs import alive, wait_ready
from .state import (
    ServiceStatus, StackInfo, free_ports, info_from_state, locked, new_state, read_state,
    service_names, state_path, warehouse as warehouse_of, write_state,
)  # fmt: skip


def _ensure_service(name: str, state: Record) -> bool:
    """Start the service unless its recorded process is alive and answering.

    Returns True if it was (re)started. Saves state right away, so `down` can clean up
    even if a later service fails.
    """
    svc, port = state["services"].get(name), state["ports"][name]
    is_alive = alive(svc)
    if is_alive and services.answers(name, port):
        log.info("%s already running (pid %d, port %d)", name, svc["pid"], port)
        return False
    if svc:
        why = "is not answering" if is_alive else "is gone"
        log.info("%s (pid %s) %s, restarting it on port %d", name, svc["pid"], why, port)
        services.stop(name, state)
    state["services"][name] = services.STARTERS[name](state)
    write_state(Path(state["dir"]), state)
    log.info("started %s (pid %d, port %d)", name, state["services"][name]["pid"], port)
    return True


def _warehouse_mode(state: Record, mode: str | None, latency_ms: int | None,
                    isolation: str | None = None) -> Record:
    """The mode asked for, else the recorded one; latency and isolation default per mode."""
    current = warehouse_of(state)
    mode = mode or current["mode"]
    if mode not in WAREHOUSE_MODES:
        raise DevstackError(f"unknown warehouse mode {mode!r}; modes: {', '.join(WAREHOUSE_MODES)}")
    if isolation is not None and isolation not in ISOLATIONS:
        raise DevstackError(f"unknown isolation {isolation!r}; choices: {', '.join(ISOLATIONS)}")
    if mode == "postgres":
        if latency_ms:
            raise DevstackError("a commit latency needs --warehouse redshift-like")
        if isolation not in (None, DEFAULT_ISOLATION):
            raise DevstackError("an isolation choice needs --warehouse redshift-like")
        return {"mode": mode, "commit_latency_ms": 0}
    if isolation is None:
        isolation = current["isolation"] if current["mode"] == mode else DEFAULT_ISOLATION
    if latency_ms is None:
        latency_ms = current["commit_latency_ms"] if current["mode"] == mode \
            else DEFAULT_COMMIT_LATENCY_MS
    if not 0 <= latency_ms <= 60_000:
        raise DevstackError(f"commit latency {latency_ms} ms is not within 0..60000")
    return {"mode": mode, "commit_latency_ms": latency_ms, "isolation": isolation}


def _ensure_relay(state: Record, timeout: float) -> None:
    """redshift-like: the commit-latency relay runs with the recorded latency; else none."""
    wh = state["warehouse"]
    if wh["mode"] == "postgres":
        if RELAY in state["ports"]:
            services.stop(RELAY, state)
            state["services"].pop(RELAY, None)
            del state["ports"][RELAY]
            write_state(Path(state["dir"]), state)
        return
    if RELAY not in state["ports"]:
        state["ports"][RELAY] = free_ports(1)[0]
    svc = state["services"].get(RELAY)
    # a relay from before it answered Redshift's COPY is replaced too
    if svc and (svc.get("commit_latency_ms") != wh["commit_latency_ms"] or not svc.get("copies")):
        services.stop(RELAY, state)
        state["services"][RELAY] = None
    if _ensure_service(RELAY, state):
        wait_ready(RELAY, state["services"][RELAY], state["ports"][RELAY], timeout,
                   services.CHECKS[RELAY])


def up(
    dir: Path = DEFAULT_DIR,
    ports: dict[str, int] | None = None,
    bucket: str = DEFAULT_BUCKET,
    timeout: float = START_TIMEOUT,
    warehouse: str | None = None,
    commit_latency_ms: int | None = None,
    isolation: str | None = None,
) -> StackInfo:
    """Start the stack under dir (or repair a running one) and wait until it answers.

    ports maps service names ("gearman", "kinesis", "s3", "postgres") to ports; missing
    ones are picked free at the first `up` and kept in dir/state.json afterwards.
    warehouse: "postgres" or "redshift-like" (None: keep the recorded mode, else postgres);
    redshift-like makes SERIALIZABLE the warehouse database's default and puts the
    ``pgrelay`` commit-latency relay (``commit_latency_ms``, default 300) in front of it;
    ``isolation`` (redshift-like: "serializable" or "snapshot", None: keep the recorded one)
    is the warehouse database's default isolation level.
    """
    began = time.monotonic()
    services.check_prerequisites()
    dir = Path(dir).resolve()
    dir.mkdir(parents=True, exist_ok=True)
    with locked(dir):
        state = read_state(dir) or new_state(dir, ports, bucket, pg_server.layout)
        clash = {k: v for k, v in (ports or {}).items() if state["ports"].get(k) != v}
        if clash:
            raise DevstackError(
                f"the stack in {dir} uses ports {state['ports']}, not {clash}; run `down` first"
            )
        state["bucket"] = bucket
        state["warehouse"] = _warehouse_mode(state, warehouse, commit_latency_ms, isolation)
        write_state(dir, state)

        # Spawn the quick ones, set up postgres (blocking) meanwhile, then wait for all.
        started = [name for name in ("gearman", "kinesis", "s3") if _ensure_service(name, state)]
        warm = threading.Thread(target=warm_up_clients, args=(state["ports"],), daemon=True)
        warm.start()  # boto3 imports and model loading overlap with initdb
        _ensure_service("postgres", state)
        warm.join()
        for name in started:
            wait_ready(
                name, state["services"][name], state["ports"][name], timeout,
                services.CHECKS[name],
            )  # fmt: skip

        _ensure_relay(state, timeout)

        info = info_from_state(state)
        services.ensure_bucket(info)
        pg_server.ensure_database(info.pg_port, redshift_like=info.warehouse_mode != "postgres",
                                 isolation=info.isolation)
    log.info("stack up in %s (%.2fs)", dir, time.monotonic() - began)
    return info


def down(dir: Path = DEFAULT_DIR) -> None:
    """Stop the processes recorded in dir/state.json, delete the cluster and the state."""
    dir = Path(dir).resolve()
    if not state_path(dir).exists():
        log.info("no stack in %s", dir)
        return
    with locked(dir):
        state = read_state(dir)
        if state is None:
            return
        for name in reversed(service_names(state)):
            services.stop(name, state)
        pg_server.remove_cluster(state)
        state_path(dir).unlink()
    log.info("stack in %s is down", dir)


@contextlib.contextmanager
def _service_state(dir: Path, name: str) -> Iterator[Record]:
    """The stack's state under its lock, for work on one known service; saved afterwards."""
    if name not in SERVICES + (RELAY,):
        raise DevstackError(f"unknown service {name!r}; services: {', '.join(SERVICES)}")
    dir = Path(dir).resolve()
    with locked(dir):
        state = read_state(dir)
        if state is None:
            raise DevstackError(f"no stack in {dir}")
        if name not in service_names(state):
            raise DevstackError(f"{name} runs only with --warehouse redshift-like")
        yield state
        write_state(dir, state)


def stop_service(dir: Path, name: str) -> None:
    """Stop one service and keep its data (PostgreSQL's cluster stays on disk).

    For outage drills: clients see the server gone until ``start_service``. gearmand and
    moto keep their data in memory, so stopping them loses it, as a real crash would.
    """
    with _service_state(dir, name) as state:
        services.stop(name, state)
        state["services"][name] = None
    log.info("stopped %s", name)


def start_service(dir: Path, name: str, timeout: float = START_TIMEOUT) -> None:
    """Start one stopped service again on its recorded port and wait until it answers."""
    with _service_state(dir, name) as state:
        if _ensure_service(name, state) and name != "postgres":  # pg_ctl -w already waited
            wait_ready(name, state["services"][name], state["ports"][name], timeout,
                       services.CHECKS[name])


def status(dir: Path = DEFAULT_DIR) -> dict[str, ServiceStatus]:
    """Service name -> (pid, port, alive); empty when there is no stack in dir."""
    state = read_state(Path(dir).resolve())
    if state is None:
        return {}
    result = {}
    for name in service_names(state):
        svc = state["services"].get(name) or {}
        result[name] = ServiceStatus(svc.get("pid"), state["ports"][name], alive(svc))
    return result


def load(dir: Path = DEFAULT_DIR) -> StackInfo | None:
    """Info of the stack recorded in dir, or None if there is none (never `up`, or `down`)."""
    state = read_state(Path(dir).resolve())
    return info_from_state(state) if state else None
