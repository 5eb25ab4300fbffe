"""The transform authors' API (shardline.transforms) and the clicks example that uses it."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from shardline import transforms as api
from shardline.transforms import BadRecord

ROOT = Path(__file__).resolve().parents[2]
UTC = timezone.utc
UUID = "0F8FAD5B-D9CB-469F-A165-70867728950E"


@pytest.mark.parametrize("helper, event, reason", [
    (api.require_str, {}, "f: missing"),
    (api.require_str, {"f": None}, "f: expected a string, got null"),
    (api.require_str, {"f": 3}, "f: expected a string, got int"),
    (api.optional_str, {"f": []}, "f: expected a string or null, got list"),
    (api.require_int, {}, "f: missing"),
    (api.require_int, {"f": True}, "f: expected an integer, got bool"),
    (api.require_int, {"f": 1.0}, "f: expected an integer, got float"),
    (api.optional_int, {"f": "1"}, "f: expected an integer or null, got str"),
    (api.require_uuid, {"f": "123"}, "f: not a UUID: '123'"),
    (api.require_timestamp, {"f": "2026-12-01T10:00:00"},
     "f: no time zone (naive timestamps are ambiguous): '2026-12-01T10:00:00'"),
    (api.require_timestamp, {"f": "soon"}, "f: not an ISO-8601 timestamp: 'soon'"),
])
def test_helpers_raise_bad_record_naming_the_field(helper, event, reason):
    with pytest.raises(BadRecord) as info:
        helper(event, "f")
    assert info.value.reason == reason == str(info.value)


def test_helpers_return_the_values():
    assert api.require_str({"f": ""}, "f") == ""
    assert api.optional_str({}, "f") is None and api.optional_int({"f": None}, "f") is None
    assert api.require_int({"f": -5}, "f") == -5 and api.optional_int({"f": 7}, "f") == 7
    assert api.require_uuid({"f": UUID}, "f") == UUID.lower()
    assert api.require_timestamp({"f": "2026-12-01T10:00:00+01:00"}, "f") == \
        datetime(2026, 12, 1, 9, tzinfo=UTC)
    assert api.split_url("HTTPS://u@Shop.Example.com:8443/a b?q=1#top") == \
        ("shop.example.com", "/a b", "q=1")
    assert api.url_host("android-app://com.example/x") == "com.example"
    assert api.url_host("not a url") is None
    with pytest.raises(BadRecord, match=r"^url: has no host"):
        api.split_url("http:///path")


def test_the_api_imports_no_worker_code():
    """Core below the workers: a transform importing the API pulls in no worker module."""
    code = ("import sys, shardline.transforms, shardline.transforms.page_views; "
            "print(sorted(m for m in sys.modules if m.startswith('shardline.workers')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def _clicks():
    spec = importlib.util.spec_from_file_location(
        "clicks_transform_test", ROOT / "examples" / "clicks" / "clicks_transform.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.click


def test_the_clicks_example_uses_the_api_only_and_keeps_its_reasons():
    source = (ROOT / "examples" / "clicks" / "clicks_transform.py").read_text()
    assert "workers" not in source and "import _" not in source
    click = _clicks()
    good = {"type": "click", "event_id": UUID, "occurred_at": "2026-12-01T10:00:00Z",
            "session_id": "s", "url": "https://Shop.example.com/p?x=1", "element": "buy",
            "x": 3}
    assert click(good) == {"event_id": UUID.lower(),
                           "occurred_at": datetime(2026, 12, 1, 10, tzinfo=UTC),
                           "session_id": "s", "url": good["url"], "url_host": "shop.example.com",
                           "element": "buy", "x": 3, "y": None}
    for change, reason in [({"event_id": None}, "event_id: expected a string, got null"),
                           ({"event_id": "x"}, "event_id: not a UUID: 'x'"),
                           ({"url": "ftp://h/"}, "url: not an absolute http(s) URL: 'ftp://h/'"),
                           ({"occurred_at": 5}, "occurred_at: expected a string, got int"),
                           ({"x": "3"}, "x: expected an integer or null")]:
        with pytest.raises(BadRecord) as info:
            click({**good, **change})
        assert info.value.reason == reason
