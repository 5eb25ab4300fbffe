"""setup.cfg's python_requires admits no Python that lacks a standard module we import."""
from __future__ import annotations

import configparser
from pathlib import Path

from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[2]

# tomllib (the tables file, shardline/tables_file.py) arrived in the standard library in 3.11.
FIRST_WITH_TOMLLIB = (3, 11)


def python_requires() -> SpecifierSet:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return SpecifierSet(cfg["options"]["python_requires"])


def test_python_requires_excludes_every_version_without_tomllib():
    spec = python_requires()
    too_old = [f"3.{minor}.{patch}" for minor in range(0, FIRST_WITH_TOMLLIB[1])
               for patch in (0, 99)]
    admitted = [v for v in too_old if spec.contains(v, prereleases=True)]
    assert admitted == [], f"python_requires {spec} admits {admitted}, which have no tomllib"


def test_python_requires_admits_the_versions_we_run_on():
    spec = python_requires()
    assert spec.contains("3.11.0") and spec.contains("3.12.4")

