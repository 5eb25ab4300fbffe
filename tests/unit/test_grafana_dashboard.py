"""docs/grafana/shardline.json uses only metrics the code exports, so it cannot drift: every
``shardline_*`` name in a query is a sample a host target serves (``shardline.metrics.pipeline``)
or one of the fleet target's (``FLEET_METRICS``, checked against what ``shardline status --serve``'s
``FleetCollector`` yields)."""
from __future__ import annotations

import json
import re
from pathlib import Path

from shardline.metrics.pipeline import FLEET_METRICS, PIPELINE_METRICS, exported_names

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana" / "shardline.json"
NAME = re.compile(r"\bshardline_[a-z0-9_]+")


def queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def test_every_metric_the_dashboard_uses_is_exported():
    used = {name for expr in queries() for name in NAME.findall(expr)}
    assert used, "no queries found"
    unknown = used - exported_names() - set(FLEET_METRICS)
    assert not unknown, f"the dashboard queries metrics nothing exports: {sorted(unknown)}"


def test_the_dashboard_covers_every_pipeline_and_fleet_metric():
    text = " ".join(queries())
    families = {f.name for m in PIPELINE_METRICS for f in m.describe()} | set(FLEET_METRICS)
    missing = {f for f in families if f not in text and f != "shardline_loader_active"}
    assert not missing, f"metrics without a panel: {sorted(missing)}"


def test_panels_are_well_formed():
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert set(p["gridPos"]) == {"h", "w", "x", "y"}
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
        for t in p.get("targets", []):
            assert t["expr"].count("(") == t["expr"].count(")"), t["expr"]
            assert t["datasource"]["uid"] == "${datasource}"


def test_fleet_names_are_what_status_serve_exports():
    """``FLEET_METRICS`` (the names the dashboard may use) is exactly what the fleet target's
    collector yields (``shardline status --serve`` /metrics)."""
    from shardline.ops.status_web import FleetCollector

    exported = {family.name for family in FleetCollector(lambda: None, ["page_views"]).collect()}
    assert exported == set(FLEET_METRICS)


def test_exported_names_have_the_text_format_suffixes():
    names = exported_names()
    assert "shardline_consumer_records_read_total" in names
    assert "shardline_e2e_latency_seconds_bucket" in names
    assert "shardline_loader_pending_files" in names
    assert "shardline_consumer_records_read" not in names
