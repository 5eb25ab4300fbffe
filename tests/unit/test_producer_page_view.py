"""The page view's byte limits come from the page_views table of the tables definition."""
from __future__ import annotations

from importlib import resources

from shardline import tables_file
from shardline.producer import page_view
from shardline.sample import event_rules
from shardline.tables import table_spec


def test_limits_are_the_widths_of_the_same_named_columns():
    spec = table_spec("page_views")
    sized = {c.name: c.max_bytes for c in spec.user_columns if c.max_bytes is not None}
    assert page_view.MAX_BYTES == {f: sized[f] for f in page_view.FIELDS if f in sized}
    # ip is stored as ip_prefix, occurred_at as a timestamp: neither has a width to cut to.
    assert set(page_view.MAX_BYTES) == {"event_id", "url", "referrer", "user_agent",
                                        "user_id", "session_id"}
    assert event_rules.MAX_BYTES is page_view.MAX_BYTES


def test_a_width_changed_in_the_tables_file_changes_the_limit(monkeypatch):
    text = (resources.files("shardline") / "default_tables.toml").read_text(encoding="utf-8")
    narrow = text.replace('"url",           type = "varchar(2048)"',
                          '"url",           type = "varchar(300)"')
    assert narrow != text
    tables = tables_file.parse(narrow, "<narrow>")
    monkeypatch.setattr(page_view, "table_spec", lambda name: tables[name])
    limits = page_view.field_limits()
    assert limits["url"] == 300
    assert limits["referrer"] == 2048
