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
    parser.add_argument("--markdown", action="store_true",
                        help="print docs/settings.md (every setting as a Markdown table)")
    args, code = parse_command_args(parser, argv)
    if args is None:
        return code
    if args.markdown:
        print(settings_mod.markdown(), end="")
        return ExitCode.OK
    if args.check:
        load_tables(load_settings(args))
        print("settings OK (and the tables file)")
        return ExitCode.OK
    for key, env, default, help_text in settings_mod.describe():
        print(f"{key:<38} {env:<44} {default!s:<24} {help_text}")
    return ExitCode.OK
