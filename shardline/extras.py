"""What an install without the ``pipeline`` extra can run, and the one line that says so.

``pip install shardline`` brings the producer library a web front end embeds and nothing of
the pipeline (no PostgreSQL driver, Gearman client or supervisord in a web app). The
pipeline's commands need ``pip install 'shardline[pipeline]'``: run without it they stop at
start, naming what is missing, rather than with a traceback from the first import or
connection that needs it. The extra's packages are read from the installed metadata
(setup.cfg's ``[options.extras_require] pipeline``), so they are written down once.
"""
from __future__ import annotations

import importlib.metadata
import re
from typing import Sequence

PACKAGE = "shardline"
PIPELINE = "pipeline"
INSTALL_HINT = f"pip install '{PACKAGE}[{PIPELINE}]'"
# The commands of the library alone: sample traffic, a stream, the settings list, and the
# two that feed the producer from outside Python (tail, relay).
WITHOUT_PIPELINE = frozenset({"create-stream", "produce", "relay", "settings", "tail"})
# Commands that need no pipeline package with one of these flags: a log host checks its
# tailer (``status --tail``) on the bare install.
WITHOUT_PIPELINE_WITH = {"status": "--tail"}
# The lake (Apache Iceberg tables): pyiceberg and pyarrow, ``pip install 'shardline[lake]'``.
LAKE = "lake"
LAKE_COMMANDS = frozenset({"lake", "lake-loader"})

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_EXTRA = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def extra_packages(extra: str = PIPELINE) -> list[str]:
    """The distributions ``extra`` adds (none when shardline's metadata is not installed,
    e.g. run from a source tree on ``PYTHONPATH``)."""
    try:
        requirements = importlib.metadata.requires(PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        return []
    names = []
    for text in requirements:
        marker = _EXTRA.search(text.partition(";")[2])
        name = _NAME.match(text)
        if marker and marker.group(1) == extra and name and name.group() != PACKAGE:
            names.append(name.group())
    return names


def missing_packages(extra: str = PIPELINE) -> list[str]:
    """The distributions of ``extra`` that are not installed."""
    missing = []
    for name in extra_packages(extra):
        try:
            importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def missing_message(command: str, argv: Sequence[str] = ()) -> str | None:
    """The line a command stops with when it needs the pipeline extra and some of it is
    not installed; None when it can run."""
    if command in WITHOUT_PIPELINE:
        return None
    flag = WITHOUT_PIPELINE_WITH.get(command)
    if flag is not None and any(a == flag or a.startswith(flag + "=") for a in argv):
        return None
    missing = missing_packages()
    if not missing and command in LAKE_COMMANDS:
        return lake_missing_message(command)
    if not missing:
        return None
    return (f"shardline {command}: needs the pipeline's packages, not installed: "
            f"{', '.join(missing)} ({INSTALL_HINT})")


def lake_missing_message(command: str) -> str | None:
    """The line a command stops with when it writes or reads the lake (``lake.tables`` set)
    and the lake extra is not installed; None when it can run."""
    missing = missing_packages(LAKE)
    if not missing:
        return None
    return (f"shardline {command}: the lake needs packages that are not installed: "
            f"{', '.join(missing)} (pip install '{PACKAGE}[{LAKE}]')")
