"""The lake loader's test-only kill point (the chaos campaign's way to stop it between its
Iceberg commit and its ledger update): inert unless armed, and taken once."""
from __future__ import annotations

import signal
import subprocess
import sys

from shardline.loaders.lake.loader import KILL_AFTER_COMMIT_ENV, _test_kill_point

CALL = "from shardline.loaders.lake.loader import _test_kill_point; _test_kill_point(); " \
       "print('alive')"


def test_unset_or_unarmed_does_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(KILL_AFTER_COMMIT_ENV, raising=False)
    _test_kill_point()
    monkeypatch.setenv(KILL_AFTER_COMMIT_ENV, str(tmp_path / "not-armed"))
    _test_kill_point()


def test_armed_the_first_caller_removes_the_file_and_dies_by_sigkill(tmp_path):
    trigger = tmp_path / "armed"
    trigger.touch()
    env = {KILL_AFTER_COMMIT_ENV: str(trigger), "PATH": "/usr/bin:/bin"}
    first = subprocess.run([sys.executable, "-c", CALL], env=env, capture_output=True,
                           text=True, timeout=60)
    assert first.returncode == -signal.SIGKILL and first.stdout == "" and not trigger.exists()
    second = subprocess.run([sys.executable, "-c", CALL], env=env, capture_output=True,
                            text=True, timeout=60)
    assert second.returncode == 0 and second.stdout == "alive\n"
