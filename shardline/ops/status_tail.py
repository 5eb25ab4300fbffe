"""``shardline status --tail [DIR]``: the tailer of this host, file by file.

Reads the report the tailer keeps in its state directory (``DIR``, default
``tail.state_dir`` or ``<producer.spool_dir>/tail``; ``shardline.tail.report``): per file the
offset, the bytes behind the file's end and the age of the oldest unsent line. Needs
neither the warehouse nor the control store (a log host has neither), so it runs on the
install without the pipeline extra.

Exit 0 when healthy; ``ExitCode.ALERT`` when a file is stalled (it has unsent lines and its
offset has not moved for ``tail.stall_alert_s``); ``ExitCode.CONFIG`` with one line when
there is no state directory or no tailer ever ran with it.
"""
from __future__ import annotations

import json
from dataclasses import asdict
import sqlite3
import sys
import time
from typing import Any, Callable

from shardline.errors import ConfigError
from shardline.exitcodes import ExitCode
from shardline.ops.status_report import fmt_bytes, fmt_duration
from shardline.settings import Settings
from shardline.tail import report as tail_report


def collect(directory: str, stall_s: float, report_interval_s: float,
            clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """The ``--json`` document: files, alerts, notes."""
    try:
        rep = tail_report.read_report(directory)
    except FileNotFoundError:
        raise ConfigError(f"no tailer state in {directory!r} (tail.state_dir): start "
                          f"`shardline tail` with this setting first, or pass --tail DIR") from None
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot read the tailer's state {directory!r}: {exc}") from None
    now = clock()
    files = tail_report.assess(rep, now, stall_s)
    alerts = tail_report.alerts(files, stall_s)
    notes = []
    report_age = None if rep.reported_at is None else round(now - rep.reported_at, 3)
    if report_age is None:
        notes.append("the tailer has not reported yet")
    elif report_age > 3 * report_interval_s:
        notes.append(f"the tailer (pid {rep.pid}) last reported {fmt_duration(report_age)} "
                     f"ago: not running, or hung")
    return {"state": rep.path, "reported_at": rep.reported_at, "report_age_s": report_age,
            "pid": rep.pid, "files": [asdict(f) for f in files], "healthy": not alerts,
            "alerts": alerts, "notes": notes,
            "thresholds": {"stall_alert_s": stall_s}}


def render_text(doc: dict[str, Any]) -> str:
    lines = [f"tail: {doc['state']}  (last report "
             f"{fmt_duration(doc['report_age_s'])} ago, pid {doc['pid'] or '-'})", ""]
    header = f"{'FILE':<48} {'OFFSET':>12} {'BEHIND':>10} {'UNSENT AGE':>10} {'MOVED':>8}"
    lines.append(header)
    for f in doc["files"]:
        mark = "  STALLED" if f["stalled"] else ""
        lines.append(f"{f['path']:<48} {f['offset']:>12} {fmt_bytes(f['behind_bytes']):>10} "
                     f"{fmt_duration(f['oldest_unsent_age_s']):>10} "
                     f"{fmt_duration(f['advanced_age_s']):>8}{mark}")
    if not doc["files"]:
        lines.append("(no files followed)")
    lines += [""] + [f"note: {n}" for n in doc["notes"]]
    return "\n".join(lines).rstrip("\n") + "\n"


def run(settings: Settings, directory: str, as_json: bool) -> int:
    directory = directory or tail_report.state_dir(settings)
    if not directory:
        settings.require("tail.state_dir")  # raises, naming the setting
    doc = collect(directory, settings.tail.stall_alert_s, settings.tail.report_interval_s)
    if as_json:
        print(json.dumps(doc, indent=2), flush=True)
    else:
        sys.stdout.write(render_text(doc))
    for alert in doc["alerts"]:
        print(f"ALERT {alert}", file=sys.stderr)
    return ExitCode.ALERT if doc["alerts"] else ExitCode.OK
