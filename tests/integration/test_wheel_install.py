"""The built wheel, installed in a fresh virtualenv, is the whole product.

A new user runs ``pip wheel .`` and installs the result: the migrations must come with it
(``shardline migrate`` creates every table), and the card's folders install under the one
import name, so ``import consumers`` / ``import workers`` fail there.
"""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import psycopg2
import pytest

from shardline import migrate
from tests.wheel_build import build_wheel


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding only the wheel; third-party libraries come from ours via a .pth
    (a path line: our venv's own .pth files, the editable finder among them, are not run)."""
    root = tmp_path_factory.mktemp("wheel")
    wheel = build_wheel(root)
    pip = [sys.executable, "-m", "pip"]
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(pip + ["--python", str(python), "install", "-q", "--no-deps",
                          str(wheel)], check=True, timeout=180)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], check=True, capture_output=True, text=True,
                          cwd=root).stdout.strip()
    Path(site, "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def _run(venv: Path, *args: str, env: dict[str, str] | None = None,
         ) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in (env or os.environ).items() if k != "PYTHONPATH"}
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120,
                          cwd=venv.parent, env=clean)


def test_installed_wheel_has_one_import_name(wheel_venv: Path):
    python = str(wheel_venv / "bin" / "python")
    ok = _run(wheel_venv, python, "-c", "import shardline.consumers.main, shardline.workers.stage,"
              " shardline.loaders.warehouse.plan; import shardline; print(shardline.__file__);"
              " from shardline.ops.status_web import page_html; assert"
              " b'/api/status' in page_html()")  # the status page ships as package data
    assert ok.returncode == 0, ok.stderr
    assert str(wheel_venv) in ok.stdout  # the wheel's copy, not the checkout
    for name in ("consumers", "workers", "sql"):
        bad = _run(wheel_venv, python, "-c", f"import {name}")
        assert bad.returncode != 0 and "ModuleNotFoundError" in bad.stderr, name


def test_installed_wheel_migrates_every_table(wheel_venv: Path, stack_env: dict[str, str],
                                              stack, pg_schema: str):
    done = _run(wheel_venv, str(wheel_venv / "bin" / "shardline"), "migrate", env=stack_env)
    assert done.returncode == 0, done.stderr
    expected = {stmt.split()[2].strip('"').lower()
                for _, _, path in migrate.migrations()
                for stmt in migrate.render(path.read_text(encoding="utf-8"), "postgres")
                if stmt.upper().startswith("CREATE TABLE")}
    assert len(expected) >= 4  # page_views + the load record (loads, loaded_files, load_fence)
    conn = psycopg2.connect(stack.dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = %s", (pg_schema,))
            tables = {row[0] for row in cur.fetchall()}
    finally:
        conn.close()
    assert expected <= tables, expected - tables
