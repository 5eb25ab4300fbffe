"""The page-view event rules of docs/events.md, as code: the reference a reader must match.

``check(data)`` says whether one record is a good event (and why not, by reason
category). The fields and their warehouse byte limits (``REQUIRED`` / ``NULLABLE`` /
``FIELDS`` / ``MAX_BYTES``) are the producer library's (``shardline.producer.page_view``,
from the page_views table of the tables definition), re-exported here. ``classify_user_agent``
and ``ip_prefix`` are the reference derivations a transform (``workers/transform.py``) is
tested against. Used by the sample generator (``shardline.sample.events``), tests and tools.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
from typing import Any

from shardline.producer.page_view import FIELDS, MAX_BYTES, NULLABLE, REQUIRED
from shardline.producer.put import MAX_RECORD_BYTES

__all__ = ["FIELDS", "MAX_BYTES", "MAX_RECORD_BYTES", "NULLABLE", "REQUIRED", "check",
           "classify_user_agent", "ip_prefix"]

_BOT = re.compile(r"bot\b|bot/|crawl|spider|slurp|facebookexternalhit|headless", re.I)
_TABLET = re.compile(r"iPad|Tablet|Kindle|Silk/|PlayBook", re.I)
_MOBILE = re.compile(r"Mobi|iPhone|iPod|Android|Windows Phone", re.I)
_DESKTOP = re.compile(r"Windows NT|Macintosh|X11|CrOS", re.I)


def classify_user_agent(user_agent: str) -> str:
    """Reference device class: bot | tablet | mobile | desktop | other (first match wins).

    bot: bot/crawl/spider/slurp/facebookexternalhit/headless; tablet: iPad, Tablet, Kindle,
    or Android without "Mobile"; mobile: Mobi, iPhone, iPod, Android, Windows Phone;
    desktop: Windows NT, Macintosh, X11, CrOS; else other.
    """
    if _BOT.search(user_agent):
        return "bot"
    if _TABLET.search(user_agent) or ("Android" in user_agent and "Mobile" not in user_agent):
        return "tablet"
    if _MOBILE.search(user_agent):
        return "mobile"
    if _DESKTOP.search(user_agent):
        return "desktop"
    return "other"


def ip_prefix(ip: str) -> str:
    """Reference truncation: IPv4 -> its /24 network, IPv6 -> its /48 ("2001:db8:1::/48")."""
    addr = ipaddress.ip_address(ip)
    bits = 24 if addr.version == 4 else 48
    return str(ipaddress.ip_network(f"{addr}/{bits}", strict=False))


_TS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?([+-]\d{2}:\d{2}|Z)$")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def check(data: bytes) -> dict[str, Any]:
    """Parse and validate one record by the rules in docs/events.md.

    Returns the event dict, or raises ValueError whose message starts with the
    reason category (``invalid_utf8``, ``not_json``, ``not_object``,
    ``missing_field:<f>``, ``wrong_type:<f>``, ``bad_timestamp``, ``too_long:<f>``, ``empty``).
    JSON nested too deep for the parser is ``not_json``, as in the stage worker.
    """
    if not data.strip():
        raise ValueError("empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"invalid_utf8: {exc.reason} at byte {exc.start}") from None
    try:
        event = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep to parse
        raise ValueError(f"not_json: {exc}") from None
    if not isinstance(event, dict):
        raise ValueError(f"not_object: {type(event).__name__}")
    for name in REQUIRED:
        if name not in event:
            raise ValueError(f"missing_field:{name}")
    for name in FIELDS:
        value = event.get(name)
        if value is None and name in NULLABLE:
            continue
        if not isinstance(value, str):
            raise ValueError(f"wrong_type:{name}")
        if name in MAX_BYTES and len(value.encode("utf-8")) > MAX_BYTES[name]:
            raise ValueError(f"too_long:{name}")
    ts = event["occurred_at"]
    if not _TS.match(ts):
        raise ValueError("bad_timestamp")
    try:
        dt.datetime.fromisoformat(ts)
    except ValueError:
        raise ValueError("bad_timestamp") from None
    if not _UUID.match(event["event_id"]):
        raise ValueError("wrong_type:event_id")  # a string, but not a UUID
    if not re.match(r"https?://[^/?#\s]+", event["url"]):
        raise ValueError("wrong_type:url")
    try:
        ipaddress.ip_address(event["ip"])
    except ValueError:
        raise ValueError("wrong_type:ip") from None
    return event
