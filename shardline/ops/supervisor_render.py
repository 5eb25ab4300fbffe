"""The supervisord config text for one stream: a pure function of its inputs.

No timestamps, shards sorted, so the same inputs give a byte-identical file and a
rerun after a reshard changes only the new shards' sections (``supervisorctl
update`` then starts just those). Consumers: ``autorestart=unexpected`` with
``exitcodes=0`` (a shard at SHARD_END stays stopped) and ``stopwaitsecs`` above
the consumer's shutdown bound. No ``[group:...]``: supervisord restarts every
member of a group whose member list changed.
"""
from __future__ import annotations

import math
import os
import re
import shlex
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from shardline.errors import ConfigError
from shardline.kinesis import ShardInfo
from shardline.settings import Settings

CONF_NAME = "shardline.conf"
SOCKET_NAME = "supervisor.sock"
DEFAULT_TEMPLATE = "{shardline} {args}"
PROCESS_NUM = "%(process_num)d"
START_RETRIES = 100  # supervisord backs off 1 s, 2 s, 3 s ...: ~80 min before FATAL
WORKER_STOPWAITSECS = 30
LOADER_STOPWAITSECS = 60
_UNIX_SOCKET_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin
_PROGRAM_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Selection:
    shards: tuple[str, ...]  # shards that get a consumer program, sorted
    excluded: tuple[str, ...]  # closed shards already at SHARD_END
    note: str  # how the choice was made (written into the file header)


# -- pure parts -----------------------------------------------------------------
def select_shards(shards: Iterable[ShardInfo], shard_end: set[str] | None,
                  warehouse_error: str | None = None) -> Selection:
    """``shard_end`` None means the warehouse could not be asked."""
    shards = sorted(shards, key=lambda s: s.shard_id)
    if shard_end is None:
        keep = [s.shard_id for s in shards]
        closed = [s.shard_id for s in shards if s.closed]
        note = ("warehouse not reachable" + (f" ({warehouse_error})" if warehouse_error else "")
                + ": could not check for SHARD_END checkpoints, so every listed shard gets a "
                  "consumer" + (f" (closed: {', '.join(closed)})" if closed else ""))
        return Selection(tuple(keep), (), note)
    keep = [s.shard_id for s in shards if s.is_open or s.shard_id not in shard_end]
    excluded = [s.shard_id for s in shards if s.closed and s.shard_id in shard_end]
    note = "open shards and closed shards not yet at SHARD_END"
    if excluded:
        note += f"; at SHARD_END (no program): {', '.join(excluded)}"
    return Selection(tuple(keep), tuple(excluded), note)


def _esc(value: str) -> str:
    """supervisord expands %(name)s in most values: a literal % must be doubled."""
    return value.replace("%", "%%")


def _quote_env(key: str, value: str) -> str:
    """supervisord reads environment= with a non-POSIX shlex: no escapes inside quotes,
    and quote characters at either end of a value are stripped."""
    if value[:1] in ("'", '"') or value[-1:] in ("'", '"') or "\n" in value:
        raise ConfigError(f"{key}: a value for supervisord's environment= cannot start or end "
                          f"with a quote or hold a newline")
    quote = '"' if '"' not in value else "'"
    if quote in value:
        raise ConfigError(f"{key}: a value for supervisord's environment= cannot hold both "
                          f"quote characters")
    return quote + value + quote


def program_names(prefix: str) -> dict[str, str]:
    p = f"{prefix}-" if prefix else ""
    return {"consumer": f"{p}consumer-", "worker": f"{p}stage-worker", "loader": f"{p}loader"}


def render(*, stream: str, shards: Selection, out_dir: str, shardline_cmd: Sequence[str],
           settings: Settings, workers: int = 2, prefix: str = "",
           config_path: str | None = None, environment: Mapping[str, str] | None = None,
           command_template: str = DEFAULT_TEMPLATE) -> str:
    """The whole supervisord config as text (deterministic for the same inputs)."""
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    if prefix and not _PROGRAM_NAME.match(prefix):
        raise ConfigError(f"--program-prefix {prefix!r}: use letters, digits, '.', '_' or '-'")
    out = os.path.abspath(out_dir)
    logs = os.path.join(out, "logs")
    sock = os.path.join(out, SOCKET_NAME)
    if len(sock.encode()) > _UNIX_SOCKET_MAX:
        raise ConfigError(f"--out {out}: the socket path {sock} is too long for a unix socket "
                          f"(max {_UNIX_SOCKET_MAX} bytes); choose a shorter directory")
    names = program_names(prefix)
    base = shlex.join(shardline_cmd)
    common = ["--config", os.path.abspath(config_path)] if config_path else []

    def command(args: list[str]) -> str:
        # Everything is literal for supervisord except the %(process_num)d placeholder.
        joined = " ".join(PROCESS_NUM if a == PROCESS_NUM else _esc(shlex.quote(a))
                          for a in args + common)
        return (_esc(command_template).replace("{shardline}", _esc(base))
                .replace("{args}", joined))

    env_line = None
    if environment:
        env_line = ",".join(f"{k}={_quote_env(k, _esc(v))}" for k, v in sorted(environment.items()))
    shutdown = settings.consumer.shutdown_timeout_s
    consumer_wait = math.ceil(shutdown) + 10

    lines = [
        f"; supervisord config for shardline stream {stream!r}.",
        "; Generated by `shardline supervisor-config`; do not edit: change the settings and",
        "; generate again, then `supervisorctl -c THIS_FILE update` (starts new programs,",
        "; stops removed ones, leaves unchanged ones running).",
        f"; consumers: {shards.note}.",
        "; Environment: supervisord passes its own environment (AWS credentials, PGPASSWORD",
        "; or PGPASSFILE) to every program; nothing secret is written here.",
        "",
        "[unix_http_server]",
        f"file={_esc(sock)}",
        "chmod=0700",
        "",
        "[supervisord]",
        f"logfile={_esc(os.path.join(logs, 'supervisord.log'))}",
        "logfile_maxbytes=50MB",
        "logfile_backups=5",
        "loglevel=info",
        f"pidfile={_esc(os.path.join(out, 'supervisord.pid'))}",
        f"childlogdir={_esc(logs)}",
        "nodaemon=false",
        "minfds=1024",
        "",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
        "",
        "[supervisorctl]",
        f"serverurl=unix://{_esc(sock)}",
        "",
    ]

    def program(name: str, cmd: str, *, autorestart: str, stopwait: int,
                extra: Sequence[str] = (), log_name: str = "%(program_name)s") -> list[str]:
        block = [f"[program:{name}]", f"command={cmd}", *extra,
                  "autostart=true", f"autorestart={autorestart}", "exitcodes=0", "startsecs=1",
                  f"startretries={START_RETRIES}", "stopsignal=TERM",
                  f"stopwaitsecs={stopwait}", "stopasgroup=true", "killasgroup=true",
                  f"stdout_logfile={_esc(logs)}/{log_name}.out.log",
                  "stdout_logfile_maxbytes=50MB", "stdout_logfile_backups=5",
                  f"stderr_logfile={_esc(logs)}/{log_name}.err.log",
                  "stderr_logfile_maxbytes=50MB", "stderr_logfile_backups=5"]
        if env_line:
            block.append(f"environment={env_line}")
        return block + [""]

    lines += ["; Consumers: one per shard. Exit 0 (SHARD_END reached, or a clean stop) stays",
              "; stopped; any other exit code is restarted. stopwaitsecs is above",
              f"; consumer.shutdown_timeout_s ({shutdown:g}s) so a graceful stop is never killed.",
              ""]
    for shard in shards.shards:
        name = names["consumer"] + shard
        if not _PROGRAM_NAME.match(name):
            raise ConfigError(f"shard id {shard!r} cannot be part of a supervisord program name")
        lines += program(name, command(["consumer", "--stream", stream, "--shard", shard]),
                         autorestart="unexpected", stopwait=consumer_wait)
    lines += ["; Stage workers and the loader run all the time: any exit is restarted.", ""]
    lines += program(
        names["worker"], command(["worker", "--functions", "stage", "--id", PROCESS_NUM]),
        autorestart="true", stopwait=WORKER_STOPWAITSECS,
        extra=[f"numprocs={workers}", "numprocs_start=0",
               "process_name=%(program_name)s_%(process_num)02d"],
        log_name="%(program_name)s_%(process_num)02d")
    lines += program(names["loader"], command(["loader"]), autorestart="true",
                     stopwait=LOADER_STOPWAITSECS)
    return "\n".join(lines).rstrip("\n") + "\n"
