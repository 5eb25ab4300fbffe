"""The short chaos campaign (part of `make test`): kills, outages, faults, bad input; the
lake on (its loader killed), a tail source and a relay source beside the producer.

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
TAIL_RATE, RELAY_RATE = 20, 15  # small sources: the run stays within make test's budget
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
         "--tail-rate", str(TAIL_RATE), "--relay-rate", str(RELAY_RATE),
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


def test_the_lake_holds_the_same_events_exactly_once(run):
    v = run[0]
    assert v["lake"] and v["lake_equals_warehouse"], v["problems"]
    assert (v["lake_missing"], v["lake_duplicated"], v["lake_unexpected"]) == (0, 0, 0)
    assert v["lake_rows"] == v["loaded_rows"] + v["relay_unacked_landed"] + v["relay_acked"]
    assert v["kills"].get("lake-loader", 0) >= 3, v["kills"]
    # aimed at the lake's commit point: the Iceberg commit done, the ledger not yet told
    assert v["infra"].get("lake loader kills after the lake commit", 0) >= 1, v["infra"]
    # ...and the next lake loader found that commit in the table and told the ledger
    assert v["reactions"]["lake loader: took over files a killed loader had committed"] >= 1


def test_every_tailed_line_is_one_row_and_every_malformed_one_a_dead_letter(run):
    v = run[0]
    assert v["tail"] and v["tail_lines"] >= 1000 and v["tail_malformed"] >= 20, v["line"]
    assert v["tail_rows"] == v["tail_lines"]
    assert (v["tail_missing"], v["tail_duplicated"], v["tail_unexpected"],
            v["tail_mismatched"]) == (0, 0, 0, 0), v["problems"]
    assert v["tail_dead_lettered"] == v["tail_malformed"]
    assert (v["tail_dead_missing"], v["tail_dead_unexpected"], v["tail_dead_wrong"]) == (0, 0, 0)
    assert v["tail_kills"] >= 3 and v["tail_rotations"] >= 4, v["line"]


def test_every_event_the_relay_acknowledged_is_one_row(run):
    v = run[0]
    assert v["relay"] and v["relay_acked"] >= 500, v["line"]
    assert (v["relay_missing"], v["relay_duplicated"]) == (0, 0), v["problems"]
    assert v["relay_kills"] >= 3, v["line"]


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
