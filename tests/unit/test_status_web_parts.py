"""The status web page's pure parts: where it may listen, the bounded history, the hosts,
the sampler's error handling and the fleet metrics (the page itself: the integration test
in headless Chromium, tests/integration/test_status_web.py)."""
from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shardline.exitcodes import ExitCode
from shardline.ops import status, status_web
from shardline.ops.status_web import History, Sampler, fleet_hosts, fleet_registry, parse_bind


@pytest.mark.parametrize("text, want", [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)), ("localhost:80", ("localhost", 80)),
    (":9000", ("127.0.0.1", 9000)), ("[::1]:8081", ("::1", 8081)),
    ("127.0.0.2:1", ("127.0.0.2", 1)),
])
def test_loopback_addresses_are_accepted(text, want):
    assert parse_bind(text) == want


@pytest.mark.parametrize("text", ["0.0.0.0:8080", "10.1.2.3:80", "example.com:80", "[::]:80"])
def test_other_addresses_need_public(text):
    with pytest.raises(ValueError, match="--public"):
        parse_bind(text)
    assert parse_bind(text, public=True)[1] in (80, 8080)


@pytest.mark.parametrize("text", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:x", "127.0.0.1:70000"])
def test_a_port_is_required(text):
    with pytest.raises(ValueError):
        parse_bind(text)


def test_the_interval_must_be_positive():
    with pytest.raises(ValueError, match="--interval"):
        parse_bind("127.0.0.1:8080", interval=0)


def test_status_refuses_a_public_address_before_connecting_anywhere(capsys):
    assert status.main(["--serve", "0.0.0.0:8080"]) == ExitCode.USAGE
    assert "--public" in capsys.readouterr().err


def _report(lag0=10, rps0=5.0, *, alerts=(), hosts=None):
    report = {
        "healthy": not alerts, "alerts": list(alerts), "streams": ["s"],
        "shards": [
            {"stream": "s", "shard_id": "a", "owner": "h1:1:u", "owner_live": True,
             "status": {"millis_behind_latest": lag0, "records_per_s": rps0},
             "checkpoint": {"age_s": 4.5}},
            {"stream": "s", "shard_id": "b", "owner": "h2:2:u", "owner_live": False,
             "status": None, "checkpoint": None},
            {"stream": "s", "shard_id": "c", "owner": "h1:3:u", "owner_live": True,
             "status": {"millis_behind_latest": 0, "records_per_s": None},
             "checkpoint": None},
        ],
        "staged_pending": [{"target_table": "page_views", "files": 3, "bytes": 1200,
                            "oldest_age_s": 42.0}],
        "quarantined": [{"target_table": "page_views", "s3_key": "k", "error": "e"}] * 2,
    }
    if hosts is not None:
        report["hosts"] = hosts
    return report


def test_history_is_bounded_and_per_shard():
    h = History(window_s=10, interval_s=1)
    for t in range(100):
        h.add(float(t), _report(lag0=t))
    assert len(h) == 11  # ceil(window / interval) + 1 samples, whatever the uptime
    d = h.to_dict()
    a, b, c = d["shards"]
    assert (a["shard_id"], b["shard_id"], c["shard_id"]) == ("a", "b", "c")
    assert a["points"][0] == [89.0, 89, 5.0] and a["points"][-1] == [99.0, 99, 5.0]
    assert b["points"][-1] == [99.0, None, None]  # no status row: a gap, not a zero
    assert c["points"][-1][2] is None


def test_history_drops_samples_older_than_the_window():
    h = History(window_s=10, interval_s=1)
    h.add(0.0, _report())
    h.add(5.0, _report())
    h.add(20.0, _report())  # sampling stalled: the old ones are out of the window
    assert [p[0] for p in h.to_dict()["shards"][0]["points"]] == [20.0]


def test_hosts_come_from_the_report_or_else_from_the_leases():
    given = [{"host_id": "x", "alive": True, "shards": ["a"]}]
    assert fleet_hosts(_report(hosts=given)) == given
    h1, h2 = fleet_hosts(_report())
    assert (h1["host_id"], h1["alive"], h1["shards"]) == ("h1", True, ["a", "c"])
    assert (h2["host_id"], h2["alive"], h2["shards"]) == ("h2", False, ["b"])


def test_a_failed_sample_keeps_the_last_report_and_says_why():
    reports = [_report(), RuntimeError("warehouse down\nmore detail")]

    def collect():
        r = reports.pop(0)
        if isinstance(r, Exception):
            raise r
        return r

    sampler = Sampler(collect, interval_s=1, clock=iter([100.0, 101.0]).__next__)
    assert sampler.latest() is None
    sampler.step()
    sampler.step()
    latest = sampler.latest()
    assert latest["shards"][0]["shard_id"] == "a"
    assert latest["sampler"]["error"] == "RuntimeError: warehouse down"
    assert latest["sampler"]["sampled_at"] == 100.0 and latest["sampler"]["failed_at"] == 101.0
    assert latest["sampler"]["hosts_from_leases"] is True
    assert len(sampler.history) == 1


def _metrics(sampler, tables=("page_views", "clicks")):
    text = generate_latest(fleet_registry(sampler, tables)).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_fleet_metrics_from_the_latest_report():
    sampler = Sampler(lambda: _report(lag0=1234, alerts=["x", "y", "z"]))
    sampler.step()
    m = _metrics(sampler)
    pv, clicks = (("table", "page_views"),), (("table", "clicks"),)
    assert m[("shardline_fleet_pending_files", pv)] == 3
    assert m[("shardline_fleet_pending_files", clicks)] == 0  # exported, as 0
    assert m[("shardline_fleet_pending_bytes", pv)] == 1200
    assert m[("shardline_fleet_oldest_pending_age_seconds", pv)] == 42.0
    assert m[("shardline_fleet_quarantined_files", pv)] == 2
    assert m[("shardline_fleet_quarantined_files", clicks)] == 0
    assert m[("shardline_fleet_hosts_alive", ())] == 1  # h2's only lease is not live
    assert m[("shardline_fleet_shard_millis_behind", (("shard", "a"), ("stream", "s")))] == 1234
    assert m[("shardline_fleet_shard_millis_behind", (("shard", "c"), ("stream", "s")))] == 0
    assert ("shardline_fleet_shard_millis_behind", (("shard", "b"), ("stream", "s"))) not in m
    assert m[("shardline_fleet_shard_checkpoint_age_seconds",
              (("shard", "a"), ("stream", "s")))] == 4.5
    assert m[("shardline_fleet_alerts", ())] == 3
    assert not any(name.startswith(("process_", "python_")) for name, _ in m)  # own registry


def test_fleet_metrics_before_the_first_sample():
    m = _metrics(Sampler(lambda: _report()))
    assert m[("shardline_fleet_alerts", ())] == 0
    assert m[("shardline_fleet_pending_files", (("table", "page_views"),))] == 0


def test_the_page_is_self_contained():
    page = status_web.page_html().decode()
    assert "<script src" not in page and "<link" not in page and "@import" not in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page
    assert ".innerHTML" not in page  # text goes in as text
