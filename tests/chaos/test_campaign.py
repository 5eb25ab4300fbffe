"""The short chaos campaign (part of `make test`): kills, outages, faults, bad input.

It runs ``python -m tests.chaos`` as a user would, on its own stack, then checks the
verdict it wrote and searches every log of the run for the secret values it was given.

One campaign fits `make test`'s budget, so it runs the mode furthest from PostgreSQL: the
control store on DynamoDB and the warehouse redshift-like (SERIALIZABLE, 300 ms commits).
The PostgreSQL control store is what every pipeline e2e test runs on
(tests/integration/test_pipeline_e2e.py, the loader kill points in
test_loader_integration.py); the other campaign modes are `make chaos CHAOS_ARGS="--control
postgres --warehouse postgres"` (or redshift-like). The long campaigns' commands and
verdicts, all three modes, are in docs/reliability.md.
"""
from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.chaos.campaign import secrets_in_logs

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SEED, DURATION, EVENTS = 7, 90, 24_000
CONTROL, WAREHOUSE = "dynamodb", "redshift-like"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One campaign for the tests of this module: (verdict dict, work dir, output, secrets)."""
    work = tmp_path_factory.mktemp("chaos")
    given = {"CHAOS_AWS_SECRET_ACCESS_KEY": "aws-" + secrets.token_hex(16),
             "CHAOS_PG_PASSWORD": "pg-" + secrets.token_hex(16)}
    out = work / "verdict.json"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.chaos", "--seed", str(SEED), "--duration", str(DURATION),
         "--events", str(EVENTS), "--control", CONTROL, "--warehouse", WAREHOUSE,
         "--dir", str(work / "run"), "--json", str(out)],
        cwd=ROOT, env={**os.environ, **given}, capture_output=True, text=True, timeout=900)
    (work / "campaign.out.log").write_text(proc.stdout)
    (work / "campaign.err.log").write_text(proc.stderr)
    assert out.exists(), f"no verdict (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n" \
                         f"{proc.stderr[-5000:]}"
    return json.loads(out.read_text()), work, proc, given


def test_every_valid_event_lands_once_and_every_bad_one_is_dead_lettered(run):
    v, work, proc, _ = run
    assert proc.returncode == 0 and v["ok"], f"{v['line']}\n{v['problems']}\n" \
                                             f"{proc.stderr[-4000:]}"
    assert proc.stdout.strip().splitlines()[-1] == v["line"]
    assert v["produced_valid"] + v["produced_bad"] == EVENTS
    assert (v["missing"], v["duplicated"], v["unexpected"]) == (0, 0, 0)
    assert v["loaded_rows"] == v["produced_valid"]
    assert v["produced_bad"] >= 200 and v["dead_lettered"] == v["produced_bad"]
    assert (v["dead_missing"], v["dead_unexpected"], v["dead_without_reason"]) == (0, 0, 0)
    assert v["put_twice"] >= 10, "retried puts (same event, two sequence numbers) not exercised"
    assert v["hostile"] >= 100 and v["hostile_mismatched"] == 0
    assert v["lagging_shards"] == [] and v["stuck_programs"] == []
    # a reprocess with a newly deployed transform ran through the chaos: every row is its
    assert v["reprocessed"] and v["stale_rows"] == 0, v["problems"]
    assert v["infra"].get("reprocess runs", 0) >= 1 and v["infra"]["transform deploys"] == 1


def test_it_survived_kills_of_every_kind_and_every_outage(run):
    v = run[0]
    assert all(v["kills"].get(kind, 0) >= 5 for kind in ("consumer", "stage-worker", "loader")), \
        v["kills"]
    assert v["infra"].get("gearmand restarts", 0) >= 1
    # the kill point between the two stores: warehouse committed, control store not told
    assert v["infra"].get("loader kills after the warehouse commit", 0) >= 1, v["infra"]
    assert v["infra"].get("postgres outages", 0) >= 1
    assert v["infra"].get("s3 outages (refused)", 0) + v["infra"].get("s3 outages (frozen)", 0) >= 1
    assert sum(v["faults"].values()) >= 20 and len(v["faults"]) >= 3, v["faults"]
    # ...and the faults were felt and handled by the paths meant for them (from the logs)
    r = v["reactions"]
    assert r["consumer: batch job resubmitted"] > 0, r
    assert sum(n for k, n in r.items() if k.startswith("consumer: GetRecords retried")) > 0, r
    # (a victim may exit on its own between `supervisorctl status` and the kill)
    assert r["supervisord: restart after SIGKILL"] >= sum(v["kills"].values()) // 2, r


def test_no_secret_value_in_any_log(run):
    _, work, _, given = run
    logs = sorted(p for p in work.rglob("*.log") if p.is_file())
    names = {p.name for p in logs}
    # the fleet's and the services' logs are all there, and they are not empty
    assert {"supervisord.log", "loader.err.log", "stage-worker_00.err.log",
            "postgres.log", "gearmand.log"} <= names, names
    assert sum(p.stat().st_size for p in logs) > 20_000
    assert secrets_in_logs(logs, given.values()) == []
    # the search itself works
    planted = work / "planted.txt"
    planted.write_text(f"oops {given['CHAOS_PG_PASSWORD']}\n")
    assert secrets_in_logs([planted], given.values()) == ["planted.txt"]
