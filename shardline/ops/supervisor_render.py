"""The supervisord config text for one stream: a pure function of its inputs.

No timestamps, shards sorted, so the same inputs give a byte-identical file and a
rerun after a reshard changes only the new shards' sections (``supervisorctl
update`` then starts just those). Consumers: ``autorestart=unexpected`` with
``exitcodes=0`` (a shard at SHARD_END stays stopped) and ``stopwaitsecs`` above
the consumer's shutdown bound. No ``[group:...]``: supervisord restarts every
member of a group whose member list changed.

Every program gets ``PROMETHEUS_MULTIPROC_DIR=<out>/metrics`` (``shardline.metrics``); without
the agent a ``metrics`` program serves that directory at ``agent.metrics_address``.

Many hosts (``--agent``): ``render(agent_include=FILE)`` writes the ``agent`` program and an
``[include]`` of FILE instead of the consumers, and ``render_consumers`` is what
``shardline agent`` writes into FILE (the same program sections, ``autostart=false``).
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
from shardline.lake.config import lake_tables
from shardline.metrics import multiproc
from shardline.settings import Settings

CONF_NAME = "shardline.conf"
SOCKET_NAME = "supervisor.sock"
DEFAULT_TEMPLATE = "{shardline} {args}"
PROCESS_NUM = "%(process_num)d"
START_RETRIES = 100  # supervisord backs off 1 s, 2 s, 3 s ...: ~80 min before FATAL
WORKER_STOPWAITSECS = 30
LOADER_STOPWAITSECS = 60
AGENT_STOPWAITSECS = 15
TAIL_STOPWAITSECS = 30  # the tailer's producer sends or spools what it holds, then exits
_UNIX_SOCKET_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin
_PROGRAM_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class TailProgram:
    """``shardline tail`` on this host: its globs, the stream and the events' table."""

    patterns: tuple[str, ...]
    stream: str
    table: str = "log_lines"


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


def agent_include_name(prefix: str) -> str:
    """The agent's include file, next to the main config (one per stream prefix)."""
    return f"{prefix}-agent-consumers.conf" if prefix else "agent-consumers.conf"


def program_names(prefix: str) -> dict[str, str]:
    p = f"{prefix}-" if prefix else ""
    return {"consumer": f"{p}consumer-", "worker": f"{p}stage-worker", "loader": f"{p}loader",
            "lake": f"{p}lake-loader-", "agent": f"{p}agent", "metrics": f"{p}metrics",
            "tail": f"{p}tail", "relay": f"{p}relay"}


class Programs:
    """Program sections that share one command line, ``environment=`` and log directory
    (``render`` for the whole config, ``render_consumers`` for the agent's include file)."""

    def __init__(self, *, out_dir: str, shardline_cmd: Sequence[str], settings: Settings,
                 config_path: str | None = None, environment: Mapping[str, str] | None = None,
                 command_template: str = DEFAULT_TEMPLATE):
        self.logs = os.path.join(os.path.abspath(out_dir), "logs")
        self.base = shlex.join(shardline_cmd)
        self.common = ["--config", os.path.abspath(config_path)] if config_path else []
        self.template = command_template
        # Every program writes its metrics to this host's multiprocess directory, which the
        # agent (or the metrics program) serves: one scrape target per host.
        env = {**(environment or {}),
               multiproc.ENV: os.path.join(os.path.abspath(out_dir), multiproc.DIR_NAME)}
        self.env_line = ",".join(f"{k}={_quote_env(k, _esc(v))}" for k, v in sorted(env.items()))
        self.shutdown = settings.consumer.shutdown_timeout_s
        self.consumer_wait = math.ceil(self.shutdown) + 10
        # the relay's graceful stop: its drain, then the producer's close time
        self.relay_wait = math.ceil(settings.relay.drain_s + settings.producer.close_timeout_s) \
            + 15

    def command(self, args: list[str]) -> str:
        # Everything is literal for supervisord except the %(process_num)d placeholder.
        joined = " ".join(PROCESS_NUM if a == PROCESS_NUM else _esc(shlex.quote(a))
                          for a in args + self.common)
        return (_esc(self.template).replace("{shardline}", _esc(self.base))
                .replace("{args}", joined))

    def section(self, name: str, cmd: str, *, autorestart: str, stopwait: int,
                extra: Sequence[str] = (), log_name: str = "%(program_name)s",
                autostart: bool = True) -> list[str]:
        logs = _esc(self.logs)
        block = [f"[program:{name}]", f"command={cmd}", *extra,
                 f"autostart={'true' if autostart else 'false'}", f"autorestart={autorestart}",
                 "exitcodes=0", "startsecs=1",
                 f"startretries={START_RETRIES}", "stopsignal=TERM",
                 f"stopwaitsecs={stopwait}", "stopasgroup=true", "killasgroup=true",
                 f"stdout_logfile={logs}/{log_name}.out.log",
                 "stdout_logfile_maxbytes=50MB", "stdout_logfile_backups=5",
                 f"stderr_logfile={logs}/{log_name}.err.log",
                 "stderr_logfile_maxbytes=50MB", "stderr_logfile_backups=5"]
        if self.env_line:
            block.append(f"environment={self.env_line}")
        return block + [""]

    def consumer(self, name: str, stream: str, shard: str, *, autostart: bool = True) -> list[str]:
        if not _PROGRAM_NAME.match(name):
            raise ConfigError(f"shard id {shard!r} cannot be part of a supervisord program name")
        return self.section(name, self.command(["consumer", "--stream", stream, "--shard", shard]),
                            autorestart="unexpected", stopwait=self.consumer_wait,
                            autostart=autostart)


def _check_prefix(prefix: str) -> None:
    if prefix and not _PROGRAM_NAME.match(prefix):
        raise ConfigError(f"--program-prefix {prefix!r}: use letters, digits, '.', '_' or '-'")


def render(*, stream: str, shards: Selection, out_dir: str, shardline_cmd: Sequence[str],
           settings: Settings, workers: int = 2, prefix: str = "",
           config_path: str | None = None, environment: Mapping[str, str] | None = None,
           command_template: str = DEFAULT_TEMPLATE, agent_include: str | None = None,
           tail: TailProgram | None = None, relay: bool = False) -> str:
    """The whole supervisord config as text (deterministic for the same inputs).

    ``agent_include``: instead of one program per shard, an ``agent`` program and an
    ``[include]`` of this file, where ``shardline agent`` keeps this host's consumers.
    ``tail``: a ``tail`` program following these log files.
    ``relay``: a ``relay`` program too (``shardline relay``, for PHP and other front ends).
    """
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    _check_prefix(prefix)
    out = os.path.abspath(out_dir)
    logs = os.path.join(out, "logs")
    sock = os.path.join(out, SOCKET_NAME)
    if len(sock.encode()) > _UNIX_SOCKET_MAX:
        raise ConfigError(f"--out {out}: the socket path {sock} is too long for a unix socket "
                          f"(max {_UNIX_SOCKET_MAX} bytes); choose a shorter directory")
    names = program_names(prefix)
    programs = Programs(out_dir=out, shardline_cmd=shardline_cmd, settings=settings,
                        config_path=config_path, environment=environment,
                        command_template=command_template)
    command, program = programs.command, programs.section
    shutdown = programs.shutdown
    note = shards.note
    if agent_include is not None:
        note = (f"started and stopped on this host by `shardline agent` (program "
                f"{names['agent']}) in {os.path.abspath(agent_include)}")

    lines = [
        f"; supervisord config for shardline stream {stream!r}.",
        "; Generated by `shardline supervisor-config`; do not edit: change the settings and",
        "; generate again, then `supervisorctl -c THIS_FILE update` (starts new programs,",
        "; stops removed ones, leaves unchanged ones running).",
        f"; consumers: {note}.",
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

    if agent_include is None:
        lines += ["; Consumers: one per shard. Exit 0 (SHARD_END reached, or a clean stop) stays",
                  "; stopped; any other exit code is restarted. stopwaitsecs is above",
                  f"; consumer.shutdown_timeout_s ({shutdown:g}s) so a graceful stop is never "
                  f"killed.", ""]
        for shard in shards.shards:
            lines += programs.consumer(names["consumer"] + shard, stream, shard)
    else:
        lines += agent_program(programs, stream, names, agent_include, prefix)
    lines += ["; Stage workers and the loader run all the time: any exit is restarted.", ""]
    lines += program(
        names["worker"], command(["worker", "--functions", "stage", "--id", PROCESS_NUM]),
        autorestart="true", stopwait=WORKER_STOPWAITSECS,
        extra=[f"numprocs={workers}", "numprocs_start=0",
               "process_name=%(program_name)s_%(process_num)02d"],
        log_name="%(program_name)s_%(process_num)02d")
    # One loader per table of the tables file (each holds its table's loader lease): the
    # first table's is ``loader``, the others' ``loader-<table>``.
    from shardline.tables import load_tables

    for i, table in enumerate(load_tables(settings).names):
        lines += program(names["loader"] + ("" if i == 0 else f"-{table}"),
                         command(["loader", "--table", table]), autorestart="true",
                         stopwait=LOADER_STOPWAITSECS)
    # One lake loader per table of lake.tables, beside its warehouse loader (docs/lake.md).
    for table in lake_tables(settings, load_tables(settings)):
        lines += program(names["lake"] + table, command(["lake-loader", "--table", table]),
                         autorestart="true", stopwait=LOADER_STOPWAITSECS)
    if tail is not None:
        lines += tail_program(programs, names, tail)
    if relay:
        lines += relay_program(programs, stream, names)
    address = settings.agent.metrics_address
    if agent_include is None and address:
        lines += ["; This host's scrape target: the metrics of every program above, merged",
                  f"; (prometheus_client multiprocess mode, {multiproc.DIR_NAME}/). With --agent "
                  f"the agent serves it.", ""]
        lines += program(names["metrics"], command(["metrics", "--serve", address]),
                         autorestart="true", stopwait=WORKER_STOPWAITSECS)
    if agent_include is not None:
        lines += ["; The agent's consumer programs (rewritten by the agent, applied through",
                  "; supervisord's XML-RPC reloadConfig/addProcessGroup/removeProcessGroup).",
                  "[include]", f"files={_esc(os.path.abspath(agent_include))}", ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def agent_program(programs: Programs, stream: str, names: Mapping[str, str], include: str,
                  prefix: str) -> list[str]:
    """The ``agent`` program: always restarted; priority 1000 so that at shutdown
    supervisord stops it before the consumers (other hosts start waiting for their leases
    at once)."""
    args = ["agent", "--stream", stream, "--include", os.path.abspath(include)]
    if prefix:
        args += ["--program-prefix", prefix]
    return ["; The agent: heartbeats this host, and runs a consumer program for each shard",
            "; the fleet assigns to it (see the [include] at the end).", ""] + programs.section(
        names["agent"], programs.command(args), autorestart="true",
        stopwait=AGENT_STOPWAITSECS, extra=["priority=1000"])


def tail_program(programs: Programs, names: Mapping[str, str],
                 tail: TailProgram) -> list[str]:
    """The ``tail`` program. The globs are quoted on its command line: the tailer expands
    them itself, and so picks up files created later. A clean exit (after SIGTERM) stays
    stopped; any other is restarted, and the restart resumes from the offsets."""
    if not tail.patterns:
        raise ConfigError("--tail needs at least one path or glob")
    args = ["tail", "--stream", tail.stream, "--table", tail.table, *tail.patterns]
    return ["; The tailer: log files of this host to the stream, one event per line.",
            ""] + programs.section(names["tail"], programs.command(args),
                                   autorestart="unexpected", stopwait=TAIL_STOPWAITSECS)
def relay_program(programs: Programs, stream: str, names: Mapping[str, str]) -> list[str]:
    """The relay: always restarted (what it acknowledged is in its journal, shipped by the
    next start); stopwaitsecs covers its drain and the producer's close time."""
    return ["; The relay: front ends that are not Python (PHP under php-fpm, Node) send",
            "; their events to its socket (docs/producer.md).", ""] + programs.section(
        names["relay"], programs.command(["relay", "--stream", stream]), autorestart="true",
        stopwait=programs.relay_wait)


def render_consumers(*, stream: str, shards: Iterable[str], include: str,
                     shardline_cmd: Sequence[str], settings: Settings, prefix: str = "",
                     config_path: str | None = None,
                     environment: Mapping[str, str] | None = None,
                     command_template: str = DEFAULT_TEMPLATE, host_id: str = "") -> str:
    """The agent's include file: one consumer program per shard, ``autostart=false`` (the
    agent starts each one once the shard's previous owner has let go of its lease, so a
    config re-read after a restart starts nothing by itself). Logs go to ``logs/`` next
    to the file, like the main config's."""
    _check_prefix(prefix)
    names = program_names(prefix)
    programs = Programs(out_dir=os.path.dirname(os.path.abspath(include)),
                        shardline_cmd=shardline_cmd, settings=settings,
                        config_path=config_path, environment=environment,
                        command_template=command_template)
    lines = [f"; Consumer programs of stream {stream!r} on host {host_id or '?'}.",
             "; Written by `shardline agent`; do not edit (the agent rewrites it).", ""]
    for shard in sorted(set(shards)):
        lines += programs.consumer(names["consumer"] + shard, stream, shard, autostart=False)
    return "\n".join(lines).rstrip("\n") + "\n"
