"""``shardline supervisor-config``: write the supervisord config for one stream.

One ``[program:consumer-<shard>]`` per shard that still needs reading,
``stage-worker`` (``numprocs`` copies) and ``loader`` (``--program-prefix P`` names
them ``P-consumer-<shard>`` ... for several streams under one supervisord). The file is
a pure function of its inputs (no timestamps, sorted shards), so running it again
after a reshard changes only the new shards' sections, and
``supervisorctl -c DIR/shardline.conf update`` starts those without touching the
programs already running. There is deliberately no ``[group:...]``: supervisord
restarts every member of a group whose member list changed.

Which shards get a consumer: every open shard, and every closed shard that has no
``SHARD_END`` checkpoint yet (its consumer must drain it so the children can
start). If the warehouse cannot be asked, closed shards that Kinesis still lists
are included too (a consumer that finds SHARD_END exits 0 and stays stopped).

With ``--agent`` (many hosts, see shardline.fleet) the file has no consumer programs:
it runs ``shardline agent``, which keeps this host's share of them in
``DIR/agent-consumers.conf`` (included by the main file) and applies changes itself
through supervisord's XML-RPC interface; nobody runs ``update`` after a reshard.

Secrets never go in the file: supervisord hands its own environment (AWS
credentials, PGPASSWORD, ...) to the programs; ``environment=`` only carries
non-secret ``SHARDLINE_*`` settings given on the command line (``--set``,
``--env``, ``--env-file``), so the programs run with the settings this file was made for.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Iterable, Mapping

from shardline import settings as settings_mod
from shardline.cli.kit import (add_stream_option, command_parser, load_settings,
                               parse_command_args)
from shardline.records.control import SHARD_END
from shardline.errors import ConfigError
from shardline.exitcodes import ExitCode
from shardline.lifecycle import first_line
from shardline.metrics.multiproc import DIR_NAME as METRICS_DIR
from shardline.ops.supervisor_render import (CONF_NAME, DEFAULT_TEMPLATE, TailProgram,
                                             agent_include_name, program_names, render,
                                             render_consumers, select_shards)
from shardline.settings import Settings

# SHARDLINE_* settings that may never be written to a file even though settings hold
# no secrets by design (belt and braces): anything that looks like a credential.
_SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|KEY_ID|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)


def parse_env(pairs: Iterable[str], source: str) -> tuple[dict[str, str], list[str]]:
    """``KEY=VALUE`` items -> (SHARDLINE_* settings to write, names skipped with a reason).

    Accepts ``export KEY=VALUE`` and quoted values (``devstack env`` output).
    Non-SHARDLINE names (AWS keys, PGPASSWORD...) are skipped, never written.
    """
    env: dict[str, str] = {}
    skipped: list[str] = []
    for raw in pairs:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(f"{source}: expected KEY=VALUE, got {raw.strip()[:80]!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            try:
                value = shlex.split(value)[0] if value else ""
            except ValueError:
                value = value[1:-1]
        if not key.startswith(settings_mod.ENV_PREFIX):
            skipped.append(f"{key} (not a shardline setting; supervisord passes its own "
                           f"environment)")
            continue
        if _SECRETISH.search(key[len(settings_mod.ENV_PREFIX):]):
            skipped.append(f"{key} (looks like a secret)")
            continue
        env[key] = value
    # Unknown or invalid settings are errors now rather than in every program later
    # (SHARDLINE_CONFIG, the settings file's path, is checked by the programs themselves).
    settings_mod.load(os.devnull, env=env)
    return env, skipped


def env_overrides(environment: Mapping[str, str]) -> dict[str, str]:
    """``{"SHARDLINE_LOG_LEVEL": "DEBUG"}`` -> ``{"log.level": "DEBUG"}``."""
    out = {}
    for name, value in environment.items():
        if name in settings_mod.ENV_RESERVED:
            continue
        rest = name[len(settings_mod.ENV_PREFIX):].lower()
        section = next((s for s in settings_mod.sections() if rest.startswith(s + "_")), None)
        if section is None:
            raise ConfigError(f"unknown setting variable {name}")
        out[f"{section}.{rest[len(section) + 1:]}"] = value
    return out


def set_flags_env(flags: Mapping[str, str]) -> dict[str, str]:
    """``--set section.key=value`` flags -> SHARDLINE_* variables for the programs (the
    stream is on each command line instead)."""
    out = {}
    for dotted, value in flags.items():
        if dotted == "kinesis.stream":
            continue
        name = f"{settings_mod.ENV_PREFIX}{dotted.replace('.', '_').upper()}"
        if _SECRETISH.search(name[len(settings_mod.ENV_PREFIX):]):
            continue
        out[name] = value
    return out


# -- the outside world ----------------------------------------------------------
def shard_end_checkpoints(settings: Settings, stream: str) -> tuple[set[str] | None, str | None]:
    """Shards of the stream with a SHARD_END checkpoint, or (None, reason) if unknown."""
    from shardline.controlstore import open_store

    try:
        control = open_store(settings)
    except Exception as exc:  # control store not configured
        return None, first_line(exc)
    try:
        return {shard for shard, cp in control.checkpoints(stream).items()
                if cp.sequence_number == SHARD_END}, None
    except Exception as exc:  # unreachable, not migrated, no permission: all say "unknown"
        return None, first_line(exc)
    finally:
        control.close()


def default_shardline_command() -> list[str]:
    """The ``shardline`` script next to this interpreter, else ``python -m shardline.cli``."""
    exe = os.path.abspath(sys.executable)
    script = os.path.join(os.path.dirname(exe), "shardline")
    if os.path.isfile(script) and os.access(script, os.X_OK):
        return [script]
    return [exe, "-m", "shardline.cli"]


def _settings_file(args: argparse.Namespace) -> str | None:
    """The settings file the programs should read: the one this command read."""
    if args.config:
        config: str = args.config
        return config
    if os.environ.get("SHARDLINE_CONFIG"):
        return None  # supervisord passes SHARDLINE_CONFIG through itself
    return settings_mod.DEFAULT_FILE if Path(settings_mod.DEFAULT_FILE).exists() else None


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser(
        "supervisor-config",
        "Write DIR/shardline.conf for supervisord: a consumer per shard that needs one, "
        "N stage workers and the loader. Run it again after a reshard, then "
        "`supervisorctl -c DIR/shardline.conf update`.")
    add_stream_option(parser)
    parser.add_argument("--workers", type=int, default=2, help="stage worker processes "
                                                               "(default 2)")
    parser.add_argument("--out", metavar="DIR", help="directory for shardline.conf, the socket, "
                                                     "the pid file and logs/")
    parser.add_argument("--print", dest="print_only", action="store_true",
                        help="print the config to stdout instead of writing it")
    parser.add_argument("--program-prefix", default="", metavar="PREFIX",
                        help="name programs PREFIX-consumer-<shard>, PREFIX-stage-worker, "
                             "PREFIX-loader (e.g. one prefix per stream when several share a "
                             "supervisord; default: consumer-<shard>, stage-worker, loader)")
    parser.add_argument("--env-file", metavar="FILE",
                        help="KEY=VALUE lines; SHARDLINE_* settings go into environment=, "
                             "anything else (AWS keys...) is skipped")
    parser.add_argument("--env", action="append", default=[], metavar="SHARDLINE_X=VALUE",
                        help="one SHARDLINE_* setting for every program (repeatable); --set "
                             "section.key=value flags are passed on the same way")
    parser.add_argument("--shardline-command", metavar="CMD",
                        help="how programs run shardline (default: the shardline script next "
                             "to this Python, e.g. /opt/shardline/bin/shardline)")
    parser.add_argument("--agent", action="store_true",
                        help="many hosts: instead of a program per shard, the `shardline agent` "
                             "program and an [include] of the file where the agent keeps this "
                             "host's consumer programs (DIR/agent-consumers.conf)")
    parser.add_argument("--tail", action="append", default=[], metavar="GLOB",
                        help="add a `shardline tail` program following GLOB (repeatable; "
                             "quote it: the tailer expands it and picks up new files)")
    parser.add_argument("--tail-stream", metavar="S",
                        help="the tailer's stream (default: --stream)")
    parser.add_argument("--tail-table", default="log_lines", metavar="T",
                        help="the tailer's --table, the events' type the tables file routes "
                             "(default: log_lines)")
    parser.add_argument("--relay", action="store_true",
                        help="add a `shardline relay` program: the local daemon PHP and other "
                             "front ends send their events to (its [relay] settings)")
    # Tests and unusual deployments: the whole command, {shardline} and {args} substituted.
    parser.add_argument("--command-template", default=DEFAULT_TEMPLATE, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args, code = parse_command_args(parser, argv)
    if args is None:
        return code
    if not args.out and not args.print_only:
        print("shardline supervisor-config: --out DIR (or --print) is required", file=sys.stderr)
        return ExitCode.USAGE
    if "{args}" not in args.command_template:
        print("shardline supervisor-config: --command-template needs {args}", file=sys.stderr)
        return ExitCode.USAGE
    settings = load_settings(args, **{"kinesis.stream": args.stream})
    settings.require("kinesis.stream")
    stream = settings.kinesis.stream

    pairs = list(args.env)
    if args.env_file:
        try:
            pairs = Path(args.env_file).read_text(encoding="utf-8").splitlines() + pairs
        except OSError as exc:
            raise ConfigError(f"--env-file: {exc}") from None
    environment, skipped = parse_env(pairs, "--env/--env-file")
    for item in skipped:
        print(f"shardline supervisor-config: not written: {item}", file=sys.stderr)
    # The programs get these settings, so this config (stopwaitsecs...) must use them too:
    # file < environment (ours, then --env/--env-file) < --set.
    set_flags = settings_mod.parse_set_flags(args.set)
    overrides = {**env_overrides(environment), **set_flags}
    overrides["kinesis.stream"] = stream  # --stream wins over everything
    settings = settings.replace(**overrides)
    environment.update(set_flags_env(set_flags))

    from botocore.exceptions import BotoCoreError, ClientError

    from shardline.errors import ServiceUnavailable
    from shardline.kinesis import kinesis_client, list_shards

    try:  # a missing stream is StreamNotFound (exit 78), a transient failure exit 69
        shards = list_shards(kinesis_client(settings, botocore_retries=3), stream)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        raise ConfigError(f"stream {stream!r}: {err.get('Code')}: {err.get('Message')}") \
            from None
    except BotoCoreError as exc:
        raise ServiceUnavailable(f"kinesis: {exc}") from None
    if not shards:
        raise ConfigError(f"stream {stream!r} has no shards")
    # --agent: the agent decides which shards run where (and checks SHARD_END itself)
    shard_end, why = (set(), None) if args.agent else shard_end_checkpoints(settings, stream)
    selection = select_shards(shards, shard_end, why)
    if shard_end is None:
        print(f"shardline supervisor-config: {selection.note}", file=sys.stderr)

    tail = tail_program(args, settings)
    out_dir = args.out or "."
    include = os.path.join(os.path.abspath(out_dir), agent_include_name(args.program_prefix))
    text = render(stream=stream, shards=selection, out_dir=out_dir,
                  shardline_cmd=(shlex.split(args.shardline_command) if args.shardline_command
                                 else default_shardline_command()),
                  settings=settings, workers=args.workers, prefix=args.program_prefix,
                  config_path=_settings_file(args), environment=environment,
                  command_template=args.command_template,
                  agent_include=include if args.agent else None, tail=tail,
                  relay=args.relay)
    if args.print_only:
        sys.stdout.write(text)
        return ExitCode.OK
    out = Path(os.path.abspath(out_dir))
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / METRICS_DIR).mkdir(parents=True, exist_ok=True)  # PROMETHEUS_MULTIPROC_DIR
    target = out / CONF_NAME
    old = target.read_text(encoding="utf-8") if target.exists() else None
    if old != text:
        tmp = target.with_suffix(".conf.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
    names = program_names(args.program_prefix)
    if args.agent:
        return _agent_summary(args, settings, stream, target, include, old == text, names)
    print(f"{'unchanged' if old == text else 'wrote'} {target}: "
          f"{len(selection.shards)} consumer(s) ({', '.join(selection.shards)}), "
          f"{args.workers} stage worker(s), {_loaders(settings)}"
          + (f", {names['tail']} ({' '.join(tail.patterns)})" if tail else ""))
    if selection.excluded:
        print(f"  at SHARD_END, no program: {', '.join(selection.excluded)}")
    print(f"  start:  supervisord -c {target}\n"
          f"  update: supervisorctl -c {target} update   (adds new "
          f"{names['consumer']}* programs, leaves running ones alone)")
    return ExitCode.OK


def tail_program(args: argparse.Namespace, settings: Settings) -> TailProgram | None:
    """``--tail``: the tail program, once its state has a place (a missing setting stops
    here, not in a program supervisord restarts for ever)."""
    if not args.tail:
        if args.tail_stream:
            raise ConfigError("--tail-stream needs --tail GLOB")
        return None
    from shardline.tail.report import state_dir

    if not state_dir(settings):
        settings.require("tail.state_dir")  # raises, naming the setting
    return TailProgram(tuple(args.tail), args.tail_stream or settings.kinesis.stream,
                       args.tail_table)


def _loaders(settings: Settings) -> str:
    from shardline.tables import load_tables

    names = load_tables(settings).names
    lake = settings.lake.tables
    return f"{len(names)} loader(s) ({', '.join(names)})" + (
        f", {len(lake)} lake loader(s) ({', '.join(lake)})" if lake else "")


def _agent_summary(args: argparse.Namespace, settings: Settings, stream: str, target: Path,
                   include: str, unchanged: bool, names: Mapping[str, str]) -> int:
    """--agent: make the (empty) include file if there is none yet, and say what was done.
    An existing one is the agent's, kept as it is."""
    path = Path(include)
    if not path.exists():
        path.write_text(render_consumers(stream=stream, shards=[], include=include,
                                         shardline_cmd=["shardline"], settings=settings,
                                         prefix=args.program_prefix), encoding="utf-8")
    print(f"{'unchanged' if unchanged else 'wrote'} {target}: {names['agent']} (consumers in "
          f"{include}), {args.workers} stage worker(s), {_loaders(settings)}")
    print(f"  start:  supervisord -c {target}   (on every host, each with its own "
          f"agent.host_id)")
    return ExitCode.OK
