"""Build the wheel a new user gets from ``pip wheel .``: from a copy of the checkout without
what a clone would not have (virtualenvs, node_modules, build output, egg-info)."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIP = {".git", ".venv", "node_modules", ".devstack", "build", "dist", ".pytest_cache",
        "__pycache__"}


def build_wheel(root: Path) -> Path:
    """The one ``shardline-*.whl``, built under ``root`` (the copy in ``root/src``)."""
    src = root / "src"
    shutil.copytree(REPO, src, ignore=lambda d, names: [n for n in names if n in SKIP
                                                          or n.endswith(".egg-info")])
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(root / "dist"), str(src)],
                   check=True, timeout=180)
    wheels = list((root / "dist").glob("shardline-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]
