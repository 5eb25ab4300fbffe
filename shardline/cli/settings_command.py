"""``shardline settings``: every setting with its env var and default, or ``--check`` the
current configuration (the tables file included)."""
from __future__ import annotations

from shardline import settings as settings_mod
from shardline.cli.kit import command_parser, load_settings, parse_command_args
from shardline.exitcodes import ExitCode
from shardline.tables import load_tables


def main(argv: list[str]) -> int:
    parser = command_parser("settings", "List every setting with its env var and default; "
                                        "with --check, validate the current configuration.")
    parser.add_argument("--check", action="store_true")
    args, code = parse_command_args(parser, argv)
    if args is None:
        return code
    if args.check:
        load_tables(load_settings(args))
        print("settings OK (and the tables file)")
        return ExitCode.OK
    for key, env, default, help_text in settings_mod.describe():
        print(f"{key:<38} {env:<44} {default!s:<24} {help_text}")
    return ExitCode.OK
