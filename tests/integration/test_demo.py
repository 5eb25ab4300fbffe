"""`make demo` (scripts/demo.py), shortened: it ends by showing what landed, the status page
answered during the run, and everything it started is stopped (stdin is not a terminal, so
it does not ask to keep the stack)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_demo(stack: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--events", "3000", "--rate", "1000",
         "--shards", "2", "--workers", "1", "--timeout", "180", "--stack-dir", str(stack)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=380)


@pytest.mark.timeout(400)
def test_demo_runs_end_to_end_with_the_status_page():
    stack = Path(tempfile.mkdtemp(prefix="sldemo-", dir="/tmp"))  # short: unix socket path limit
    try:
        proc = run_demo(stack)
    finally:
        shutil.rmtree(stack, ignore_errors=True)
    out = proc.stdout
    assert proc.returncode == 0, f"{out[-3000:]}\n{proc.stderr[-3000:]}"
    assert "every valid event landed exactly once" in out
    assert "top pages" in out and "views per device class" in out
    assert "== the lake: page_views as an Apache Iceberg table" in out
    assert re.search(r"every hour equal: [\d,]+ rows in the warehouse and in the lake", out)

    url = re.search(r"status page: open (http://127\.0\.0\.1:\d+/)", out)
    assert url, out[-3000:]
    # printed before any event is produced ...
    assert out.index(url.group(0)) < out.index("== producing")
    # ... and it answered /api/status at the end of the run, for the demo's 2 shards
    assert re.search(rf"status page answered: {re.escape(url.group(1))} \(\w+, 2 shards\)", out)

    assert "stopping everything the demo started" in out
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url.group(1) + "api/status", timeout=3)
