"""``shardline agent --stream S --include FILE``: this host's agent, one program under
supervisord (``shardline supervisor-config --agent`` writes it into the config).

Wiring only: the control store (heartbeats, assignments, and the consumers' leases and
checkpoints), the Kinesis adapter, supervisord's XML-RPC socket ($SUPERVISOR_SERVER_URL, which
supervisord sets for its programs), and the include file rendered by the same code as
``supervisor-config``. The consumer programs get this process's own non-secret
``SHARDLINE_*`` settings (supervisor-config's ``environment=`` reaches the agent too) and
its ``--config``, so they run with the settings the host's config was made for.

Metrics: the agent serves this host's scrape target on ``agent.metrics_address``
(``shardline.metrics.multiproc``; a port in use is a warning, never a stop).

Signals: the first SIGTERM/SIGINT ends the loop after the current step (leave the fleet if
supervisord is shutting down, exit 0; supervisord stops the consumers itself); a second one
stops at once (exit 130).
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import signal
import socket
import stat
import sys
import threading
import time
from typing import Callable, Mapping, Sequence

from shardline import kinesis, preflight
from shardline.cli.kit import command_parser, load_settings, parse_command_args
from shardline.errors import ConfigError
from shardline.exitcodes import ExitCode
from shardline.fleet.agent import Agent, IncludeFile
from shardline.fleet.supervisor import Supervisor, server_url
from shardline.lifecycle import StopSignals
from shardline.logs import get_logger
from shardline.tail.report import collectors as tail_collectors
from shardline.metrics import multiproc
from shardline.ops.supervisor_render import DEFAULT_TEMPLATE, program_names, render_consumers
from shardline.settings import ENV_PREFIX, Settings


def stop_requested() -> StopSignals:
    """SIGTERM/SIGINT handlers: the first ends the loop after the current step, a second
    raises ``ForcedStop`` (``shardline.cli`` turns it into FORCED_STOP). ``StopSignals``
    only counts in the handler and its ``wait`` polls: setting a ``threading.Event`` from a
    handler can deadlock on the Event's own lock if the signal lands while it is held."""
    stop = StopSignals(log=get_logger("agent"), notice="leaving after the current step")
    stop.install((signal.SIGTERM, signal.SIGINT))
    return stop




def consumer_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's non-secret SHARDLINE_* settings, for the consumers' ``environment=``."""
    from shardline.ops.supervisor_config import parse_env

    environ = os.environ if environ is None else environ
    pairs = [f"{k}={v}" for k, v in sorted(environ.items()) if k.startswith(ENV_PREFIX)]
    env, _ = parse_env(pairs, "the agent's environment")
    return env


def reattach_stderr(path: str) -> None:
    """Append stderr to ``path`` if it is a pipe. supervisord reads its programs' output
    through pipes; when it dies they are closed and every line written to them is lost, so
    the agent's last lines go to the log file supervisord was writing them to instead."""
    try:
        if not stat.S_ISFIFO(os.fstat(2).st_mode):
            return
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError:
        return  # no such log directory (a config of another making): nothing better to do
    os.dup2(fd, 2)
    os.close(fd)


def build(settings: Settings, *, host_id: str, prefix: str = "",
          shardline_cmd: Sequence[str] | None = None, config_path: str | None = None,
          command_template: str = DEFAULT_TEMPLATE) -> Agent:
    """The agent over real clients; nothing connects before the first step."""
    from botocore.exceptions import NoRegionError

    from shardline.controlstore import open_store
    from shardline.ops.supervisor_config import default_shardline_command

    settings.require("kinesis.stream", "agent.include_file")
    stream = settings.kinesis.stream
    include_path = os.path.abspath(settings.agent.include_file)
    environment = consumer_environment()
    cmd = list(shardline_cmd or default_shardline_command())

    def render(shards: list[str]) -> str:
        return render_consumers(stream=stream, shards=shards, include=include_path,
                                shardline_cmd=cmd, settings=settings, prefix=prefix,
                                config_path=config_path, environment=environment,
                                command_template=command_template, host_id=host_id)

    render([])  # a setting supervisord cannot take (a quote in a value) stops us now: 78
    # where supervisor-config --agent has supervisord write this program's stderr
    log_path = os.path.join(os.path.dirname(include_path), "logs",
                            program_names(prefix)["agent"] + ".err.log")
    store = open_store(settings)  # heartbeats, assignments, and the consumers' leases
    supervisor = Supervisor(server_url(settings.agent.serverurl))
    try:
        client = kinesis.kinesis_client(settings, botocore_retries=3)
    except NoRegionError:
        raise ConfigError("aws.region is required: set [aws] region = ..., SHARDLINE_AWS_REGION "
                          "or AWS_DEFAULT_REGION") from None
    return Agent(
        stream=stream, host_id=host_id, store=store, leases=store,
        list_shards=lambda: kinesis.list_shards(client, stream), supervisor=supervisor,
        include=IncludeFile(include_path, render), poll_s=settings.agent.poll_s,
        heartbeat_ttl_s=settings.agent.heartbeat_ttl_s,
        consumer_prefix=program_names(prefix)["consumer"],
        log=get_logger("agent", stream=stream, host=host_id),
        # the consumer programs' stopwaitsecs (supervisor_render.Programs), for stopping
        # them in supervisord's place should it die
        stop_wait_s=math.ceil(settings.consumer.shutdown_timeout_s) + 10,
        on_lost=lambda: reattach_stderr(log_path))


def run(agent: Agent, stop: StopSignals | threading.Event,
        clock: Callable[[], float] = time.monotonic) -> int:
    """Step until asked to stop, sleeping what each step allows (a signal wakes it)."""
    agent.log.info("agent started (poll %.1fs, heartbeat TTL %.1fs)", agent.poll_s,
                   agent.heartbeat_ttl_s)
    while not stop.is_set():
        stop.wait(agent.step(clock()))
        if agent.exit_code is not None:  # supervisord died; its consumers are stopped
            return agent.exit_code
    agent.leave()
    return ExitCode.OK


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "agent", "Run this host's share of the stream's consumers under supervisord: "
                 "heartbeat, take part in the shard assignment, start and stop consumer "
                 "programs through supervisord's XML-RPC interface.")
    parser.add_argument("--stream", help="Kinesis stream (default: kinesis.stream)")
    parser.add_argument("--include", metavar="FILE",
                        help="the supervisord include file for the consumer programs "
                             "(default: agent.include_file)")
    parser.add_argument("--program-prefix", default="", metavar="PREFIX",
                        help="consumer programs are PREFIX-consumer-<shard> (as in "
                             "supervisor-config)")
    parser.add_argument("--shardline-command", metavar="CMD",
                        help="how consumer programs run shardline (default: the shardline "
                             "script next to this Python)")
    # Tests: the consumers' whole command, {shardline} and {args} substituted.
    parser.add_argument("--command-template", default=DEFAULT_TEMPLATE, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str]) -> int:
    args, code = parse_command_args(build_parser(), argv)
    if args is None:
        return code
    if "{args}" not in args.command_template:
        print("shardline agent: --command-template needs {args}", file=sys.stderr)
        return ExitCode.USAGE
    stop = stop_requested()
    settings = load_settings(args, **{"kinesis.stream": args.stream,
                                      "agent.include_file": args.include})
    host_id = settings.agent.host_id or socket.gethostname()
    agent = build(settings, host_id=host_id, prefix=args.program_prefix,
                  shardline_cmd=(shlex.split(args.shardline_command)
                                 if args.shardline_command else None),
                  config_path=args.config, command_template=args.command_template)
    preflight.require(settings, preflight.CONTROL, preflight.STREAM)
    # The host's scrape target: every program supervisord runs here (multiprocess mode).
    server = multiproc.serve_quietly(settings.agent.metrics_address, agent.log,
                                     extra=tail_collectors(settings))
    try:
        return run(agent, stop)
    finally:
        multiproc.stop(server)
