"""status: report building and alert rules from plain rows (no database)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from shardline.ops import status, status_render, status_report
from shardline.exitcodes import ExitCode
from shardline.ops.gearman_admin import FunctionStatus, ServerStatus

NOW = datetime(2026, 11, 26, 7, 0, 0)
S = "clicks"
SEQ = "49656215286911442018427376489937437429617402736049487874"  # 56 digits
SEQ2 = "49656215286911442018427376489937437429617402736049487999"


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def lease(shard, owner="host-a:123:abcd", renewed=2, ttl=30, token=4, acquired=600):
    return {"stream": S, "shard_id": shard, "owner": owner, "token": token,
            "acquired_at": ago(acquired), "renewed_at": ago(renewed),
            "expires_at": ago(renewed) + timedelta(seconds=ttl)}


def status_row(shard, age=1.0, lag=0, **kw):
    row = {"stream": S, "shard_id": shard, "owner": "host-a:123:abcd",
           "last_read_sequence": SEQ2, "checkpoint_sequence": SEQ, "millis_behind_latest": lag,
           "iterator_age_ms": 1500, "inflight_batches": 2, "inflight_bytes": 4096,
           "records_per_s": 123.5, "state": "reading", "updated_at": ago(age)}
    row.update(kw)
    return row


def cp(shard, seq=SEQ, sub=0, closes=True):
    return {"stream": S, "shard_id": shard, "sequence_number": seq, "sub_sequence_number": sub,
            "closes_sequence": closes, "updated_at": ago(3)}


def report(**kw):
    kw.setdefault("now", NOW)
    kw.setdefault("streams", [S])
    kw.setdefault("max_lag_ms", 60_000)
    kw.setdefault("report_interval_s", 5.0)
    return status_report.build_report(**kw)


def healthy_inputs():
    shards = ["shardId-000000000000", "shardId-000000000001"]
    return dict(leases=[lease(s) for s in shards], checkpoints=[cp(s) for s in shards],
                status_rows=[status_row(s) for s in shards])


def test_healthy_when_owned_fresh_and_caught_up():
    r = report(**healthy_inputs())
    assert r["healthy"] and r["alerts"] == []
    assert status_report.exit_code(r) == ExitCode.OK
    s0 = r["shards"][0]
    assert s0["owner"] == "host-a:123:abcd" and s0["owner_live"]
    assert s0["lease_age_s"] == 2 and s0["lease_expires_in_s"] == 28
    assert s0["checkpoint"]["sequence_number"] == SEQ  # full in the data / --json
    assert s0["status"]["records_per_s"] == 123.5 and s0["status"]["age_s"] == 1


def test_no_lease_is_an_alert():
    inputs = healthy_inputs()
    inputs["leases"] = inputs["leases"][:1]
    r = report(**inputs)
    assert status_report.exit_code(r) == ExitCode.ALERT
    assert len(r["alerts"]) == 1
    assert "clicks/shardId-000000000001: no live owner (no lease" in r["alerts"][0]


def test_expired_and_released_leases_are_alerts():
    inputs = healthy_inputs()
    inputs["leases"] = [lease("shardId-000000000000", renewed=45, ttl=30),
                        lease("shardId-000000000001", owner=None)]
    r = report(**inputs)
    assert r["shards"][0]["owner_live"] is False
    assert any("expired 15s ago" in a for a in r["alerts"])
    assert any("released" in a for a in r["alerts"])
    assert status_report.exit_code(r) == ExitCode.ALERT


def test_lag_past_threshold_is_an_alert():
    inputs = healthy_inputs()
    inputs["status_rows"][1] = status_row("shardId-000000000001", lag=60_001)
    r = report(**inputs)
    assert r["alerts"] == ["clicks/shardId-000000000001: lags 60001 ms behind the stream tip "
                           "(> status.max_lag_ms = 60000)"]
    inputs["status_rows"][1] = status_row("shardId-000000000001", lag=60_000)
    assert report(**inputs)["healthy"]


def test_stale_status_row_is_an_alert():
    inputs = healthy_inputs()
    inputs["status_rows"][0] = status_row("shardId-000000000000", age=15.5)  # > 3 x 5 s
    r = report(**inputs)
    assert status_report.exit_code(r) == ExitCode.ALERT
    assert "status row is stale" in r["alerts"][0]
    assert r["shards"][0]["status"]["stale"] is True
    inputs["status_rows"][0] = status_row("shardId-000000000000", age=14.9)
    assert report(**inputs)["healthy"]


def test_missing_status_row_alerts_only_after_grace():
    inputs = healthy_inputs()
    inputs["status_rows"] = inputs["status_rows"][:1]
    r = report(**inputs)  # lease taken 600 s ago, never reported
    assert any("no status row" in a for a in r["alerts"])
    inputs["leases"][1] = lease("shardId-000000000001", acquired=3)
    assert report(**inputs)["healthy"]  # just started


def test_shard_at_shard_end_never_alerts():
    r = report(leases=[lease("shardId-000000000000", owner=None)],
               checkpoints=[cp("shardId-000000000000", seq="SHARD_END", sub=0)],
               status_rows=[status_row("shardId-000000000000", age=9999, lag=10**9,
                                       state="shard_end")])
    assert r["healthy"]
    assert r["shards"][0]["shard_end"] is True


def test_kinesis_listing_adds_shards_nobody_runs():
    inputs = healthy_inputs()
    kinesis = {S: [{"shard_id": "shardId-000000000000", "open": True},
                   {"shard_id": "shardId-000000000001", "open": True},
                   {"shard_id": "shardId-000000000002", "open": True}]}
    r = report(kinesis=kinesis, **inputs)
    assert [s["shard_id"] for s in r["shards"]][-1] == "shardId-000000000002"
    assert r["alerts"] == ["clicks/shardId-000000000002: no live owner (no lease: no consumer "
                           "has run for this shard)"]


def test_kinesis_error_is_a_note_not_an_alert():
    r = report(kinesis={S: {"error": "ResourceNotFoundException: no stream"}},
               **healthy_inputs())
    assert r["healthy"]
    assert "could not list" in r["notes"][0]


def test_other_streams_are_filtered_out():
    inputs = healthy_inputs()
    inputs["leases"].append({**lease("shardId-000000000009"), "stream": "other"})
    r = report(**inputs)
    assert {s["stream"] for s in r["shards"]} == {S}


def test_ledger_gearman_loads_and_quarantine():
    gearman = [ServerStatus("127.0.0.1:4730", True, (FunctionStatus("shardline_stage", 7, 2, 4),
                                                      FunctionStatus("other", 0, 0, 1))),
               ServerStatus("127.0.0.1:4731", True, (FunctionStatus("shardline_stage", 1, 1, 4),)),
               ServerStatus("127.0.0.1:4732", False, error="connection refused")]
    r = report(gearman=gearman,
               pending=[{"target_table": "page_views", "files": 3, "bytes": 3000,
                         "oldest": ago(42)}],
               last_load={"load_id": "L1", "target_table": "page_views", "file_count": 10,
                          "byte_count": 10_000, "rows_copied": 5000, "rows_inserted": 4990,
                          "started_at": ago(13), "finished_at": ago(12)},
               **healthy_inputs())
    assert r["gearman"]["functions"]["shardline_stage"] == {"total": 8, "running": 3,
                                                            "queued": 5, "workers": 8}
    assert [s["up"] for s in r["gearman"]["servers"]] == [True, True, False]
    assert r["gearman"]["servers"][2]["error"] == "connection refused"
    assert r["alerts"] == ["gearman 127.0.0.1:4732 is unreachable: connection refused"]
    assert r["staged_pending_total"] == {"files": 3, "bytes": 3000, "rows": 0}
    assert r["staged_pending"][0]["oldest_age_s"] == 42
    assert r["last_load"]["rows_copied"] == 5000 and r["last_load"]["age_s"] == 12
    assert r["last_load"]["duration_s"] == 1
    assert r["quarantined"] == []
    json.dumps(r)  # JSON-ready as is


def test_a_quarantined_file_is_shown_and_alerts():
    r = report(quarantined=[{"target_table": "page_views", "s3_key": "p/staged/x.csv.gz",
                             "error": "COPY failed: bad timestamp", "quarantined_at": ago(5)}],
               **healthy_inputs())
    assert not r["healthy"]
    assert r["alerts"] == ["page_views: p/staged/x.csv.gz is quarantined (its COPY kept failing)"]
    assert r["quarantined"][0]["error"] == "COPY failed: bad timestamp"
    text = status_render.render_text(r)
    assert "quarantined" in text and "p/staged/x.csv.gz" in text and "bad timestamp" in text


def test_text_shortens_sequences_and_json_keeps_them():
    inputs = healthy_inputs()
    inputs["watermarks"] = [{"stream": S, "shard_id": "shardId-000000000000",
                             "target_table": "page_views", "loaded_sequence": SEQ,
                             "loaded_sub_sequence": 0, "load_id": "L1", "updated_at": ago(10)}]
    r = report(**inputs)
    text = status_render.render_text(r)
    assert SEQ not in text and SEQ2 not in text
    assert ".." + SEQ[-10:] in text and ".." + SEQ2[-10:] in text
    assert "host-a:123" in text and "abcd" not in text
    assert "OK" in text.splitlines()[0]
    doc = json.loads(json.dumps(r))
    assert doc["shards"][0]["watermarks"][0]["loaded_sequence"] == SEQ
    assert doc["shards"][0]["status"]["last_read_sequence"] == SEQ2


def test_text_lists_alerts():
    inputs = healthy_inputs()
    inputs["leases"] = []
    text = status_render.render_text(report(**inputs))
    assert "ALERT (2)" in text.splitlines()[0]
    assert "ALERTS:" in text and "! shardId-000000000000" in text


def test_text_with_nothing():
    text = status_render.render_text(report(streams=[]))
    assert "no shards" in text and "last load: none yet" in text


def test_short_seq():
    assert status_report.short_seq(None) == "-"
    assert status_report.short_seq("12345") == "12345"
    assert status_report.short_seq("SHARD_END") == "SHARD_END"
    assert status_report.short_seq(SEQ) == ".." + SEQ[-10:]
    assert status_report.short_seq(SEQ, tail=4) == ".." + SEQ[-4:]


def test_format_helpers():
    assert status_report.fmt_duration(None) == "-"
    assert status_report.fmt_duration(1.25) == "1.2s" or status_report.fmt_duration(1.25) == "1.3s"
    assert status_report.fmt_duration(75) == "75s"
    assert status_report.fmt_duration(600) == "10m"
    assert status_report.fmt_bytes(999) == "999 B"
    assert status_report.fmt_bytes(1_500_000) == "1.5 MB"


def test_cli_usage_errors():
    assert status.main(["--watch", "0"]) == ExitCode.USAGE
    assert status.main(["--nope"]) == ExitCode.USAGE


# -- alerts beyond shards (issue 13) ---------------------------------------------
STAGE = "shardline_stage"


def gm(*servers):
    """ServerStatus objects: (name, workers of the stage function) or (name, None) = down."""
    return [ServerStatus(n, False, error="connection refused") if w is None else
            ServerStatus(n, True, (FunctionStatus(STAGE, 2, 0, w),)) for n, w in servers]


def pending(age, files=3):
    return [{"target_table": "page_views", "files": files, "bytes": 300, "rows": 30,
             "oldest": ago(age)}]


def test_loader_not_loading_alerts_past_the_pending_age():
    r = report(pending=pending(541), max_pending_age_s=540, **healthy_inputs())
    assert r["alerts"] == ["page_views: the loader is not loading: 3 files pending, the oldest "
                           "staged 9m ago (> status.max_pending_age_s = 9m); no load in the "
                           "last 7 days"]
    assert r["staged_pending_total"] == {"files": 3, "bytes": 300, "rows": 30}
    assert report(pending=pending(539), max_pending_age_s=540, **healthy_inputs())["healthy"]
    assert report(pending=pending(10_000), **healthy_inputs())["healthy"]  # threshold off


def test_pending_age_default_is_sized_from_the_loader_cadence():
    from shardline.settings import StatusSettings

    assert StatusSettings().pending_age_limit_s(180) == 540
    assert StatusSettings().pending_age_limit_s(0) == 60  # a floor for back-to-back loaders
    assert StatusSettings(max_pending_age_s=30).pending_age_limit_s(180) == 30


def test_gearmand_unreachable_and_no_stage_worker_alert():
    r = report(gearman=gm(("g1:4730", 3), ("g2:4730", None)), stage_function=STAGE,
               **healthy_inputs())
    assert r["alerts"] == ["gearman g2:4730 is unreachable: connection refused"]
    r = report(gearman=gm(("g1:4730", 0), ("g2:4730", 0)), stage_function=STAGE,
               **healthy_inputs())
    assert r["alerts"] == ["gearman: no worker is registered for shardline_stage on g1:4730, "
                           "g2:4730 (4 jobs queued)"]
    r = report(gearman=[ServerStatus("g1:4730", True, ())], stage_function=STAGE,
               **healthy_inputs())  # the function was never registered at all
    assert "no worker is registered for shardline_stage" in r["alerts"][0]
    r = report(gearman=gm(("g1:4730", None)), stage_function=STAGE, **healthy_inputs())
    assert r["alerts"] == ["gearman g1:4730 is unreachable: connection refused"]  # not twice
    assert report(gearman=gm(("g1:4730", 0), ("g2:4730", 1)), stage_function=STAGE,
                  **healthy_inputs())["healthy"]


def recent(stream=S, rows=990, dead=10, files=5, table="page_views"):
    return {"target_table": table, "stream": stream, "files": files, "rows": rows,
            "dead_letters": dead}


def test_dead_letter_ratio_over_the_window_alerts():
    kw = dict(max_dead_letter_ratio=0.01, dead_letter_window_s=900, **healthy_inputs())
    r = report(staged_recent=[recent(dead=10), recent(table="clicks", rows=0, dead=1, files=1)],
               **kw)  # 11 of 1001
    assert r["alerts"] == ["clicks: 11 dead letters of 1001 records staged in the last 15m "
                           "(1.10% > status.max_dead_letter_ratio = 0.01)"]
    assert r["dead_letters"] == 11
    w = r["dead_letter_window"]
    assert (w["window_s"], w["files"], w["rows"], w["dead_letters"]) == (900, 6, 990, 11)
    assert report(staged_recent=[recent(dead=10)], **kw)["healthy"]  # 10 of 1000: not above
    assert report(staged_recent=[recent(stream="other", dead=900)], **kw)["healthy"]
    none = report(**kw)
    assert none["healthy"] and none["dead_letters"] == 0
    assert none["dead_letter_window"]["ratio"] is None
    text = status_render.render_text(report(staged_recent=[recent(dead=10)], **kw))
    assert "dead letters (last 15m): 10 of 1,000 records staged (1.00%) in 5 files" in text


def host(host_id, age, ttl=20, **info):
    return {"host_id": host_id, "renewed_at": ago(age),
            "expires_at": ago(age) + timedelta(seconds=ttl), "info": {"stream": S, **info}}


def test_hosts_carry_their_shards_and_a_dead_one_alerts():
    inputs = healthy_inputs()  # live leases owned by host-a:123:abcd
    assigned = [{"stream": S, "shard_id": "shardId-000000000002", "host_id": "host-b"}]
    r = report(hosts=[host("host-a", 2), host("host-b", 45, running="shardId-000000000003"),
                      host("host-other", 1, stream="elsewhere")],
               assignments=assigned, dead_host_alert_s=86400, **inputs)
    assert r["hosts"] == [
        {"host_id": "host-a", "heartbeat_at": "2026-11-26T06:59:58Z", "heartbeat_age_s": 2,
         "alive": True, "shards": ["shardId-000000000000", "shardId-000000000001"],
         "expired_s": None},
        {"host_id": "host-b", "heartbeat_at": "2026-11-26T06:59:15Z", "heartbeat_age_s": 45,
         "alive": False, "shards": ["shardId-000000000002", "shardId-000000000003"],
         "expired_s": 25}]
    assert r["alerts"] == ["host host-b: heartbeat stopped 45s ago (expired 25s ago); it still "
                           "has shardId-000000000002, shardId-000000000003"]
    text = status_render.render_text(r)
    assert "host-b" in text and "DEAD" in text
    json.dumps(r)
    # long dead: listed, no longer an alert; 0: alerts as long as it is registered
    old = [host("host-b", 90_000)]
    assert report(hosts=old, dead_host_alert_s=86400, **inputs)["healthy"]
    assert not report(hosts=old, dead_host_alert_s=0, **inputs)["healthy"]
    assert report(hosts=old, **inputs)["hosts"][0]["alive"] is False  # threshold off: listed


def test_rows_gathered_from_a_store_feed_the_alerts():
    """gather_control / gather_ledger over a MemoryStore, then the settings' thresholds."""
    from shardline.controlstore import MemoryStore
    from shardline.settings import load
    from shardline.records.ledger import StagedFile

    t0 = (NOW - datetime(1970, 1, 1)).total_seconds()
    store = MemoryStore(clock=lambda: t0)
    store.acquire_lease(S, "shardId-000000000000", "host-a:1:x", 30)
    store.heartbeat("host-z", 5, {"stream": S})
    store.record_file(StagedFile(
        s3_key="k", target_table="page_views", stream=S, shard_id="shardId-000000000000",
        first_sequence="1", first_sub_sequence=0, last_sequence="2", last_sub_sequence=0,
        row_count=1, byte_count=10, dead_letter_count=1, staged_at=ago(700)))
    assert store.streams() == [S]
    settings = load(None, env={"SHARDLINE_STATUS_DEAD_LETTER_WINDOW_S": "800"})
    data = status.gather_control(store, store.streams())
    data.update(status.gather_ledger(store, ["page_views"], ago(800)))
    st = settings.status
    r = report(max_pending_age_s=st.pending_age_limit_s(settings.loader.max_interval_s),
               max_dead_letter_ratio=st.max_dead_letter_ratio,
               dead_letter_window_s=st.dead_letter_window_s,
               dead_host_alert_s=st.dead_host_alert_s, stage_function=STAGE, **data)
    assert any("the loader is not loading: 1 files pending" in a for a in r["alerts"])
    assert any("1 dead letters of 2 records" in a for a in r["alerts"])
    assert not any(a.startswith("host host-z") for a in r["alerts"])
    assert r["hosts"][0]["host_id"] == "host-z" and r["hosts"][0]["alive"] is True
    assert r["staged_pending"][0]["rows"] == 1


def test_streams_default_to_the_setting_else_every_stream_the_store_knows():
    from shardline.controlstore import MemoryStore
    from shardline.errors import ConfigError
    from shardline.settings import load

    store = MemoryStore()
    none = load(None, env={})
    with pytest.raises(ConfigError, match="kinesis.stream is required"):
        status.resolve_streams(none, store)
    assert status.resolve_streams(none, store, all_streams=True) == []
    store.acquire_lease("b", "sh0", "o", 30)
    store.assign("a", "sh0", "host-a")
    assert status.resolve_streams(none, store) == ["a", "b"]
    named = load(None, env={"SHARDLINE_KINESIS_STREAM": "clicks"})
    assert status.resolve_streams(named, store) == ["clicks"]
    assert status.resolve_streams(named, store, all_streams=True) == ["a", "b"]
