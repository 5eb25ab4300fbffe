"""``shardline try-transform --from-archive s3://... --against-warehouse`` on the real stack:
records staged and archived by the stage job (moto S3, the control store) and loaded by the
loader (PostgreSQL), then tried with a new transform: what it would add, change and remove."""
from __future__ import annotations

import json

import pytest

from shardline import codec
from shardline.cli import main
from shardline.exitcodes import ExitCode
from shardline.workers.stage import StageJob
from tests.contract.loader_kit import SHARD0, STREAM, PostgresBackend, seq

pytestmark = pytest.mark.integration

V2 = '''
from shardline.transforms.page_views import page_view


def v2(event):
    if event.get("session_id") == "s-3":
        raise ValueError("v2 drops this one")
    row = page_view({"user_agent": "", **event})  # v1 rejects a missing user agent
    if event["session_id"] in ("s-1", "s-2"):
        row["device_class"] = "kiosk"
    return row
'''


@pytest.fixture
def pg(stack, stack_env, pg_conn, pg_schema, s3, s3_prefix, control_store) -> PostgresBackend:
    return PostgresBackend(stack.env(), pg_conn, pg_schema, s3, s3_prefix, control_store)


def _event(i: int) -> dict:
    return {"event_id": f"0f8fad5b-d9cb-469f-a165-{i:012d}",
            "occurred_at": "2026-11-26T10:15:30.250Z", "url": f"https://shop.example.com/p/{i}",
            "referrer": None, "user_agent": "Mozilla/5.0 (X11; Linux)", "ip": "203.0.113.7",
            "user_id": None, "session_id": f"s-{i}"}


def test_against_the_warehouse_counts_what_a_new_transform_would_change(
        pg, tmp_path, monkeypatch, capsys):
    events = [_event(i) for i in range(6)]
    del events[5]["user_agent"]  # a dead letter under v1, a row under v2
    batch = codec.Batch(STREAM, SHARD0, [
        codec.Record(seq(i + 1), 0, f"pk-{i}", json.dumps(e).encode(), 1_764_138_600_000 + i)
        for i, e in enumerate(events)])
    job = StageJob(pg.settings(), s3=pg.s3)  # archives the batch (s3.archive is on)
    try:
        job.run(codec.encode(batch))
    finally:
        job.close()
    assert pg.loader().step().state == "loaded"
    assert pg.query("SELECT count(*) FROM page_views") == [(5,)]

    (tmp_path / "tt_v2.py").write_text(V2)
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = pg.settings()
    for key, value in {"warehouse.dsn": settings.warehouse.dsn,
                       "warehouse.schema": pg.schema, "s3.endpoint_url": settings.s3.endpoint_url,
                       "worker.transform": "tt_v2:v2"}.items():
        monkeypatch.setenv("SHARDLINE_" + key.replace(".", "_").upper(), value)
    code = main(["try-transform", "--json", "--against-warehouse",
                 "--from-archive", f"s3://{pg.bucket}/{pg.prefix}/archive/"])
    out = json.loads(capsys.readouterr().out)
    assert code == ExitCode.OK, out
    assert out["records"] == 6
    assert [d["reason"] for d in out["dead_letters"]] == [
        "transform: ValueError: v2 drops this one"]
    diff = out["warehouse"]["page_views"]
    examples = diff.pop("examples")
    assert diff == {"added": 1, "changed": 2, "removed": 1, "unchanged": 2, "retagged": 2}
    assert len(examples) == 2 and all("'desktop' -> 'kiosk'" in e for e in examples)

    # the readable form says the same
    assert main(["try-transform", "--against-warehouse",
                 "--from-archive", f"s3://{pg.bucket}/{pg.prefix}/archive/"]) == ExitCode.OK
    assert ("page_views against the warehouse: would add 1 row(s), change 2, remove 1; "
            "2 unchanged (2 of them only get the new transform version)"
            in capsys.readouterr().out)
