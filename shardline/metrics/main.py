"""``shardline metrics``: this host's metrics in Prometheus text format.

``--serve [HOST:PORT]`` serves them on ``/metrics`` until SIGTERM (default address:
``agent.metrics_address``): the host's scrape target when supervisord runs the pipeline
without the agent (``supervisor-config`` writes it as the ``metrics`` program; with
``--agent`` the agent serves the same). Without ``--serve`` it prints one scrape to stdout.
Both read the multiprocess directory (``--dir``, default ``$PROMETHEUS_MULTIPROC_DIR``) and,
when this host runs ``shardline tail``, its per-file report (``shardline.tail.report``).

Exit codes: 0 after a stop, 78 for a bad address or a missing directory, 69 when the
address cannot be bound (supervisord restarts the program).
"""
from __future__ import annotations

import os
import sys
from typing import Sequence

from shardline.cli.kit import command_parser, load_settings, parse_command_args
from shardline.errors import ConfigError
from shardline.exitcodes import ExitCode
from shardline.lifecycle import StopSignals
from shardline.logs import get_logger
from shardline.metrics import multiproc
from shardline.tail.report import collectors as tail_collectors


def main(argv: Sequence[str]) -> int:
    parser = command_parser("metrics", "Serve (or print) this host's metrics: every program "
                                       "supervisord runs here, in Prometheus text format.")
    parser.add_argument("--serve", nargs="?", const="", default=None, metavar="HOST:PORT",
                        help="serve /metrics on HOST:PORT (default: agent.metrics_address)")
    parser.add_argument("--dir", help="the multiprocess directory (default: "
                                      f"${multiproc.ENV})")
    args, code = parse_command_args(parser, argv)
    if args is None:
        return code
    settings = load_settings(args)
    path = args.dir or multiproc.multiproc_dir()
    if not path or not os.path.isdir(path):
        raise ConfigError(f"no metrics directory: pass --dir or set {multiproc.ENV} (the "
                          f"generated supervisord config sets it for every program)")
    log = get_logger("metrics", dir=path)
    if args.serve is None:
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry()
        registry.register(multiproc.HostCollector(path))
        for collector in tail_collectors(settings):
            registry.register(collector)
        sys.stdout.write(generate_latest(registry).decode())
        return ExitCode.OK
    address = args.serve or settings.agent.metrics_address
    if not address:
        raise ConfigError("--serve needs HOST:PORT (agent.metrics_address is empty)")
    stop = StopSignals(log=log, notice="stopping the metrics server")
    stop.install()
    try:
        server = multiproc.serve(address, path, tail_collectors(settings))
    except OSError as exc:
        log.error("cannot serve on %s: %s", address, exc)
        return ExitCode.UNAVAILABLE
    log.info("serving this host's metrics on http://%s/metrics", multiproc.bound_address(server))
    try:
        while not stop.is_set():
            stop.wait(1.0)
    finally:
        multiproc.stop(server)
    return ExitCode.OK
