"""``shardline worker --functions stage [--id ID]``: one Gearman worker process.

Run many at once (supervisord ``numprocs``); each takes one job at a time.
Settings used: gearman.servers, gearman.stage_function, s3.*, warehouse.*,
worker.transform, worker.target_table, worker.reconnect_max_s.

Exit codes: 0 after a graceful stop (SIGTERM/SIGINT: the current job
finishes first), 78 for a configuration problem (unknown function name, a
worker.transform that does not import or is not callable, missing bucket or
DSN), 130 when a second signal forced an immediate stop.
"""
from __future__ import annotations

from typing import Callable

from shardline import clients, preflight
from shardline.cli.kit import command_parser, load_settings
from shardline.errors import ConfigError
from shardline.exitcodes import ExitCode
from shardline.logs import ContextLogger, get_logger
from shardline.settings import Settings
from shardline.workers.runner import Task, WorkerRunner, default_worker_id


def _stage(settings: Settings, log: ContextLogger) -> tuple[str, Task, Callable[[], None]]:
    from shardline.workers.stage import StageJob

    settings.require("s3.bucket")
    job = StageJob(settings, log=log.bind())
    return settings.gearman.stage_function, (lambda data, job_log: job.run(data, job_log)), \
        job.close


# --functions name -> factory(settings, log) -> (gearman function name, task, close)
FUNCTIONS = {"stage": _stage}


def parse_functions(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError("--functions needs at least one name; known: " + ", ".join(FUNCTIONS))
    unknown = [n for n in names if n not in FUNCTIONS]
    if unknown:
        raise ConfigError(f"--functions: unknown worker function(s) {', '.join(unknown)}; "
                          f"known: {', '.join(FUNCTIONS)}")
    return list(dict.fromkeys(names))


def main(argv: list[str]) -> int:
    parser = command_parser("worker", "Run a Gearman worker for the named functions.")
    parser.add_argument("--functions", default="stage",
                        help="comma-separated worker functions (known: %s; default: stage)"
                             % ", ".join(FUNCTIONS))
    parser.add_argument("--id", dest="worker_id", default=None,
                        help="worker id for logs and the gearmand client id "
                             "(default: host:pid)")
    parser.add_argument("--poll-timeout", type=float, default=1.0,
                        help="seconds between stop-flag checks while idle (default 1)")
    args = parser.parse_args(argv)
    names = parse_functions(args.functions)
    settings = load_settings(args)
    worker_id = args.worker_id or default_worker_id()
    log = get_logger("worker", worker=worker_id)

    tasks: dict[str, Task] = {}
    closers: list[Callable[[], None]] = []
    for name in names:
        gearman_name, task, close = FUNCTIONS[name](settings, get_logger(name, worker=worker_id))
        tasks[gearman_name] = task
        closers.append(close)

    try:  # a first-run mistake ends here, in one line, before a job is taken
        preflight.require(settings, preflight.CONTROL, preflight.BUCKET, preflight.GEARMAN)
    except BaseException:
        for close in closers:
            close()
        raise
    runner = WorkerRunner(tasks, lambda: clients.gearman_worker(settings),
                          poll_timeout=args.poll_timeout,
                          reconnect_max_s=settings.worker.reconnect_max_s, log=log,
                          client_id=worker_id)
    runner.install_signal_handlers()
    log.info("gearmand %s; functions %s", ",".join(clients.gearman_servers(settings)),
             ", ".join(f"{n} -> {g}" for n, g in zip(names, tasks, strict=False)))
    try:
        code = runner.run()
    finally:
        for close in closers:
            close()
    return ExitCode.OK if code == 0 else code
