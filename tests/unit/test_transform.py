"""The default page-view transform (shardline.transforms.page_views:page_view)."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from shardline.errors import BadRecord
from shardline.transforms import page_views as t
from shardline.transforms.page_views import page_view

UTC = timezone.utc


def event(**over):
    base = {
        "event_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "occurred_at": "2026-11-26T10:15:30.250+05:30",
        "url": "https://www.example.com/products/42?ref=home&x=1",
        "referrer": "https://search.example.org/q?s=shoes",
        "user_agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120",
        "ip": "203.0.113.77",
        "user_id": "u-123",
        "session_id": "sess-9",
    }
    base.update(over)
    return base


def test_full_row():
    row = page_view(event())
    assert row == {
        "event_id": "0f8fad5b-d9cb-469f-a165-70867728950e",
        "occurred_at": datetime(2026, 11, 26, 4, 45, 30, 250000, tzinfo=UTC),
        "url": "https://www.example.com/products/42?ref=home&x=1",
        "url_host": "www.example.com",
        "url_path": "/products/42",
        "url_query": "ref=home&x=1",
        "referrer": "https://search.example.org/q?s=shoes",
        "referrer_host": "search.example.org",
        "user_agent": event()["user_agent"],
        "device_class": "desktop",
        "ip_prefix": "203.0.113.0/24",
        "user_id": "u-123",
        "session_id": "sess-9",
    }


@pytest.mark.parametrize("text, expected", [
    ("2026-11-26T10:15:30+05:30", datetime(2026, 11, 26, 4, 45, 30, tzinfo=UTC)),
    ("2026-11-26T00:10:00+05:30", datetime(2026, 11, 25, 18, 40, tzinfo=UTC)),  # day before
    ("2026-11-26T10:15:30Z", datetime(2026, 11, 26, 10, 15, 30, tzinfo=UTC)),
    ("2026-11-26T10:15:30.123456-08:00", datetime(2026, 11, 26, 18, 15, 30, 123456, tzinfo=UTC)),
    ("2026-11-26 10:15:30+00:00", datetime(2026, 11, 26, 10, 15, 30, tzinfo=UTC)),
])
def test_occurred_at_normalised_to_utc(text, expected):
    got = page_view(event(occurred_at=text))["occurred_at"]
    assert got == expected and got.utcoffset().total_seconds() == 0


@pytest.mark.parametrize("text", ["2026-11-26T10:15:30", "2026-11-26", "2026-11-26 10:15:30.5"])
def test_naive_timestamp_rejected(text):
    with pytest.raises(BadRecord, match="occurred_at: no time zone"):
        page_view(event(occurred_at=text))


@pytest.mark.parametrize("text", ["yesterday", "", "2026-13-01T00:00:00Z", "1700000000"])
def test_bad_timestamp_rejected(text):
    with pytest.raises(BadRecord, match="occurred_at: not an ISO-8601 timestamp"):
        page_view(event(occurred_at=text))


def test_timestamp_out_of_range_in_utc():
    with pytest.raises(BadRecord, match="occurred_at: out of range"):
        page_view(event(occurred_at="0001-01-01T00:00:00+05:30"))


@pytest.mark.parametrize("url, host, path, query", [
    ("https://www.example.com/a/b?x=1&y=2", "www.example.com", "/a/b", "x=1&y=2"),
    ("http://example.com", "example.com", "/", None),  # no path, query absent
    ("https://example.com/p", "example.com", "/p", None),  # query absent
    ("https://example.com/p?", "example.com", "/p", None),  # empty query = absent
    ("https://EXAMPLE.com:8443/p#frag", "example.com", "/p", None),  # port, fragment dropped
    ("https://user:pw@example.com/p?q", "example.com", "/p", "q"),
    ("HTTPS://example.com/%C3%A9t%C3%A9", "example.com", "/%C3%A9t%C3%A9", None),
    ("http://[2001:db8::1]:8080/x?y", "2001:db8::1", "/x", "y"),
    ("https://bücher.example/straße?q=ü", "bücher.example", "/straße", "q=ü"),
    # odd text is kept exactly (urlsplit would silently drop tabs and newlines)
    ("https://x.example/a b?note=line1\nline2", "x.example", "/a b", "note=line1\nline2"),
    ("https://x.example/c?note=tab\there&q=say \"hi\", friend#f", "x.example", "/c",
     'note=tab\there&q=say "hi", friend'),
    ("https://x.example?q=1", "x.example", "/", "q=1"),
    ("https://x.example#top", "x.example", "/", None),
])
def test_url_split(url, host, path, query):
    row = page_view(event(url=url))
    assert (row["url"], row["url_host"], row["url_path"], row["url_query"]) == \
        (url, host, path, query)


@pytest.mark.parametrize("url, reason", [
    ("ftp://example.com/file", "not an absolute http(s) URL"),
    ("/relative/path", "not an absolute http(s) URL"),
    ("example.com/x", "not an absolute http(s) URL"),
    ("https:///nohost", "has no host"),
    ("https://example.com:99999/", "does not parse"),
    ("https://[::1/", "does not parse"),
    ("https://exa mple.com/", "whitespace or control characters in the host"),
    ("https://[::1]x/", "text after the IPv6 host"),
])
def test_bad_url(url, reason):
    with pytest.raises(BadRecord, match=r"^url: ") as info:
        page_view(event(url=url))
    assert reason in info.value.reason


@pytest.mark.parametrize("referrer, host", [
    (None, None),
    ("", None),  # empty referrer header = no referrer
    ("https://news.example.net/story?id=1", "news.example.net"),
    ("android-app://com.google.android.gm/", "com.google.android.gm"),
    ("not a url", None),  # kept as text, no host
])
def test_referrer(referrer, host):
    row = page_view(event(referrer=referrer))
    assert row["referrer"] == (referrer or None)
    assert row["referrer_host"] == host


def test_referrer_missing_key_is_null():
    e = event()
    del e["referrer"]
    del e["user_id"]
    row = page_view(e)
    assert row["referrer"] is None and row["referrer_host"] is None and row["user_id"] is None


@pytest.mark.parametrize("ua, cls", [
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "bot"),
    ("Mozilla/5.0 (compatible; bingbot/2.0)", "bot"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "HeadlessChrome/120.0", "bot"),
    ("Mozilla/5.0 (compatible; GPTBot/1.2; +https://openai.com/gptbot)", "bot"),
    ("AdsBot-Google (+http://www.google.com/adsbot.html)", "bot"),
    ("Mozilla/5.0 (Linux; Android 12; Robotics-Tab)", "tablet"),  # "bot" inside a word
    ("curl/8.4.0", "other"),
    ("python-requests/2.31", "other"),
    ("Mozilla/5.0 (SMART-TV; Linux; Tizen 7.0) AppleWebKit/537.36", "other"),
    ("Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148", "tablet"),
    ("Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 Chrome/120 Safari/537.36",
     "tablet"),
    ("Mozilla/5.0 (Linux; U; Android 4.0.3; en-us; KFTT Build/IML74K) Silk/3.4", "tablet"),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
     "mobile"),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/120 Mobile Safari/537.36",
     "mobile"),
    ("Mozilla/5.0 (Windows Phone 10.0; Android 6.0.1; Microsoft; Lumia 950) Mobile Edge/15",
     "mobile"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 14_1) AppleWebKit/605.1.15 Version/17.1 Safari",
     "desktop"),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Gecko/20100101 Firefox/120.0", "desktop"),
    ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120", "desktop"),
    ("Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36", "desktop"),
    ("", "other"),
    ("SomeSmartTV/1.0", "other"),
])
def test_device_class(ua, cls):
    assert page_view(event(user_agent=ua))["device_class"] == cls
    assert t.device_class(ua) == cls


def test_device_class_agrees_with_the_generator_reference():
    from shardline.sample import events

    for expected, ua in events.USER_AGENTS:
        assert t.device_class(ua) == expected == events.classify_user_agent(ua), ua


def test_generated_events_all_transform_like_the_reference():
    import json
    from shardline.sample import events

    n = 0
    for _kind, _, data in events.generate(3000, bad_fraction=0.0, seed=7):
        e = json.loads(data)
        row = page_view(e)
        assert row["device_class"] == events.classify_user_agent(e["user_agent"])
        assert row["ip_prefix"] == events.ip_prefix(e["ip"])
        n += 1
    assert n == 3000


@pytest.mark.parametrize("ip, prefix", [
    ("203.0.113.77", "203.0.113.0/24"),
    ("10.0.0.0", "10.0.0.0/24"),
    ("255.255.255.255", "255.255.255.0/24"),
    ("0.0.0.0", "0.0.0.0/24"),
    ("2001:db8:1:2::5", "2001:db8:1::/48"),
    ("2001:0db8:abcd:0012:0000:0000:0000:0001", "2001:db8:abcd::/48"),
    ("2001:DB8:ABCD:FFFF:1:2:3:4", "2001:db8:abcd::/48"),
    ("::1", "::/48"),
    ("fe80::1%eth0", "fe80::/48"),
    ("::ffff:198.51.100.23", "198.51.100.0/24"),  # IPv4-mapped: treated as IPv4
])
def test_ip_prefix(ip, prefix):
    assert page_view(event(ip=ip))["ip_prefix"] == prefix


@pytest.mark.parametrize("ip", ["256.1.1.1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "example.com",
                                "", "1.2.3.4/24", "2001:db8::g", "١.٢.٣.٤", " 1.2.3.4"])
def test_bad_ip(ip):
    with pytest.raises(BadRecord, match="^ip: not an IP address"):
        page_view(event(ip=ip))


@pytest.mark.parametrize("field, value, reason", [
    ("event_id", 12345, "event_id: expected a string, got int"),
    ("event_id", "not-a-uuid", "event_id: not a UUID"),
    ("event_id", None, "event_id: expected a string, got null"),
    ("occurred_at", 1700000000, "occurred_at: expected a string, got int"),
    ("url", ["https://x"], "url: expected a string, got list"),
    ("referrer", 5, "referrer: expected a string or null, got int"),
    ("referrer", {"a": 1}, "referrer: expected a string or null, got dict"),
    ("user_agent", None, "user_agent: expected a string, got null"),
    ("user_agent", True, "user_agent: expected a string, got bool"),
    ("ip", 3232235777, "ip: expected a string, got int"),
    ("user_id", 42, "user_id: expected a string or null, got int"),
    ("session_id", None, "session_id: expected a string, got null"),
    ("session_id", 1.5, "session_id: expected a string, got float"),
])
def test_wrong_types(field, value, reason):
    with pytest.raises(BadRecord) as info:
        page_view(event(**{field: value}))
    assert info.value.reason.startswith(reason)


@pytest.mark.parametrize("field", ["event_id", "occurred_at", "url", "user_agent", "ip",
                                   "session_id"])
def test_missing_required_field(field):
    e = event()
    del e[field]
    with pytest.raises(BadRecord, match=f"^{field}: missing$"):
        page_view(e)


def test_event_id_lower_cased_and_extra_fields_ignored():
    row = page_view(event(event_id="0F8FAD5B-D9CB-469F-A165-70867728950E", extra={"x": 1}))
    assert row["event_id"] == "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert "extra" not in row


def test_ip_prefix_matches_ipaddress_on_random_addresses():
    import ipaddress
    import random

    rng = random.Random(5)
    for _ in range(3000):
        if rng.random() < 0.5:
            addr = ipaddress.IPv4Address(rng.getrandbits(32))
            want = str(ipaddress.ip_network(f"{addr}/24", strict=False))
        else:
            # sparse groups, so zero runs in the prefix get exercised
            groups = [rng.choice((0, 0, 1, 0xdb8, rng.getrandbits(16))) for _ in range(8)]
            addr = ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups))
            if addr.ipv4_mapped is not None:
                continue
            want = str(ipaddress.ip_network(f"{addr}/48", strict=False))
        assert t.ip_prefix(str(addr)) == want, addr
        assert t.ip_prefix(addr.exploded) == want, addr


def test_parser_caches_keep_only_short_values():
    """A stream of unique long URLs/referrers/user agents must not fill the LRU caches."""
    caches = (t._split_url, t._url_host, t._ip_prefix, t.device_class)
    for c in caches:  # other tests may have filled them to maxsize
        c.cache_clear()
    long_text = "x" * (t.CACHE_MAX_CHARS + 1)
    before = [c.cache_info().currsize for c in caches]
    row = page_view(event(url=f"https://shop.example.com/{long_text}",
                          referrer=f"https://ref.example.com/{long_text}",
                          user_agent=f"Mozilla/5.0 (X11) {long_text}"))
    assert row["url_path"] == "/" + long_text and row["referrer_host"] == "ref.example.com"
    assert row["device_class"] == "desktop"
    assert [c.cache_info().currsize for c in caches][:2] == before[:2]
    assert caches[3].cache_info().currsize == before[3]
    short = page_view(event(url="https://shop.example.com/short-cache-test",
                            referrer="https://ref.example.com/short-cache-test"))
    assert short["url_host"] == "shop.example.com"
    assert [c.cache_info().currsize for c in caches][:2] == [n + 1 for n in before[:2]]
