"""mypy over the product under its real module names (``make lint``).

Why a script: ``setup.cfg``'s ``package_dir`` installs ``consumers/``, ``workers/``,
``loaders/`` and ``sql/`` as ``shardline.consumers`` ... . mypy cannot remap folders to
package names, and the editable install's import hook is invisible to it, so ``mypy -p
shardline`` sees only ``shardline/`` and every ``shardline.consumers.x`` import resolves to
nothing (Any, silently). This script builds a link farm in ``.typecheck/`` where those
folders sit at their package names, runs mypy on the whole package there, and prints each
error with the real source path.

Every module is checked (so types across components are real), but only errors in the
*scope* (``[tool.shardline.lint] scope`` in pyproject.toml: files and folders that are clean)
fail the run; the others are counted per file. ``--all`` makes every error count.
``--print-scope`` prints the scope, one path a line (``make lint`` runs ruff on it).

tests/, bench/ and scripts/ are not part of the package: mypy reads them only with
``--with-tests`` (tests/ as the package ``tests``, bench/ and scripts/ as top-level modules,
the way they import each other), and their errors are counted per file, never failing the
run, in the scope or not: in the scope they are held to ruff alone.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FARM = ROOT / ".typecheck"
# Real folder -> its place in the farm; setup.cfg's package_dir, read below.
# Checked with --with-tests, reported only: not the package.
EXTRA_DIRS = ("tests", "bench", "scripts")
ERROR_LINE = re.compile(r"^(?P<path>[^:\s][^:]*\.pyi?):(?P<rest>\d+:.*)$")


def package_dirs() -> dict[str, str]:
    """``shardline.consumers = consumers`` lines of setup.cfg: package name -> folder."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    out: dict[str, str] = {}
    for line in cfg.get("options", "package_dir").splitlines():
        if "=" in line:
            name, folder = (part.strip() for part in line.split("=", 1))
            out[name] = folder
    return out


def build_farm() -> dict[Path, Path]:
    """(Re)build ``.typecheck/shardline``; returns farm path -> real path for each link."""
    links: dict[Path, Path] = {}
    pkg = FARM / "shardline"
    if pkg.exists():
        for entry in pkg.iterdir():  # only links live here: rebuilt each run
            entry.unlink()
    pkg.mkdir(parents=True, exist_ok=True)
    dirs = package_dirs()
    sub = {name.split(".", 1)[1]: ROOT / folder for name, folder in dirs.items()
           if name.startswith("shardline.")}
    for entry in sorted((ROOT / dirs.get("shardline", "shardline")).iterdir()):
        if entry.name == "__pycache__" or entry.name in sub:
            continue
        links[pkg / entry.name] = entry
    for name, folder in sub.items():
        links[pkg / name] = folder
    for link, real in links.items():
        link.symlink_to(os.path.relpath(real, link.parent))
    return links


def real_path(path: str, links: dict[Path, Path]) -> str:
    """A farm path as mypy prints it -> the source file's path relative to the checkout."""
    p = Path(path)
    absolute = p if p.is_absolute() else ROOT / p
    for link, real in links.items():
        try:
            rest = absolute.relative_to(link)
        except ValueError:
            continue
        return str((real / rest).relative_to(ROOT))
    try:  # mypy resolved the link itself
        return str(absolute.resolve().relative_to(ROOT))
    except ValueError:
        return path


def load_scope() -> list[str]:
    with open(ROOT / "pyproject.toml", "rb") as f:
        conf = tomllib.load(f)
    scope: list[str] = conf["tool"]["shardline"]["lint"]["scope"]
    return scope


def in_scope(path: str, scope: list[str]) -> bool:
    return any(path == s or path.startswith(s.rstrip("/") + "/") for s in scope)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true",
                        help="fail on errors anywhere, not only in the scope")
    parser.add_argument("--quiet-outside", action="store_true",
                        help="do not list the errors outside the scope, only count them")
    parser.add_argument("--print-scope", action="store_true",
                        help="print the scope's paths and exit")
    parser.add_argument("--with-tests", action="store_true",
                        help="check tests/, bench/ and scripts/ too; their errors are only "
                             "counted")
    args = parser.parse_args(argv)
    if args.print_scope:
        print("\n".join(load_scope()))
        return 0

    links = build_farm()
    scope = load_scope()
    cmd = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
           "--no-error-summary", "--show-absolute-path", "--cache-dir", str(FARM / "mypy_cache"),
           "-p", "shardline"]
    mypy_path = [str(FARM)]
    tests_link = FARM / "tests"
    if tests_link.is_symlink():
        tests_link.unlink()
    if args.with_tests:
        tests_link.symlink_to(os.path.relpath(ROOT / "tests", FARM))
        links[tests_link] = ROOT / "tests"
        cmd += ["--explicit-package-bases", "-p", "tests"]
        for folder in ("bench", "scripts"):
            mypy_path.append(str(ROOT / folder))
            for f in sorted((ROOT / folder).glob("*.py")):
                cmd += ["-m", f.stem]
    env = {**os.environ, "MYPYPATH": os.pathsep.join(mypy_path)}
    proc = subprocess.run(cmd, cwd=FARM, env=env, capture_output=True, text=True)
    if proc.returncode not in (0, 1):  # 2: mypy itself failed (config, crash)
        sys.stderr.write(proc.stdout + proc.stderr)
        return proc.returncode

    inside: list[str] = []
    outside: dict[str, list[str]] = {}
    extra: dict[str, list[str]] = {}
    for line in proc.stdout.splitlines():
        m = ERROR_LINE.match(line)
        if m is None:
            continue
        path = real_path(m["path"], links)
        text = f"{path}:{m['rest']}"
        if in_scope(path, list(EXTRA_DIRS)):
            if ": error:" in text:
                extra.setdefault(path, []).append(text)
        elif args.all or in_scope(path, scope):
            inside.append(text)
        elif ": error:" in text:
            outside.setdefault(path, []).append(text)
        # notes outside the scope belong to errors that are not shown
    for text in inside:
        print(text)
    n_in = sum(": error:" in t for t in inside)
    n_out = sum(len(v) for v in outside.values())
    if outside and not args.quiet_outside:
        print(f"-- outside the typecheck scope ({n_out} errors, not failing the run):")
        for path, errors in sorted(outside.items()):
            print(f"   {len(errors):4d} {path}")
    if args.with_tests:
        n_extra = sum(len(v) for v in extra.values())
        print(f"-- tests/, bench/, scripts/ ({n_extra} errors, reported only):")
        for path, errors in sorted(extra.items()):
            print(f"   {len(errors):4d} {path}")
    print(f"typecheck: {n_in} errors in scope, {n_out} outside it")
    return 1 if n_in else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
