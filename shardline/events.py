"""Sample page-view events: a realistic, seeded generator plus malformed records.

A good event is one JSON object (UTF-8)::

    {"event_id": "0b0c6a8e-...", "occurred_at": "2026-11-26T06:30:01.123456+00:00",
     "url": "https://shop.example.com/products/linen-shirt?color=blue", "referrer": null,
     "user_agent": "Mozilla/5.0 (...)", "ip": "203.0.113.57", "user_id": "u-48213",
     "session_id": "s-9f2c..."}

The rules are in docs/events.md. ``generate(n, bad_fraction, seed)`` yields
``(kind, partition_key, data)``: ``kind`` is ``"good"`` or one of ``BAD_KINDS``.
The same seed and start time give byte-identical output.

Good records use the session id as partition key, so one session's events go to
one shard in order. Bad records get a random partition key.
"""
from __future__ import annotations

import bisect
import collections
import datetime as dt
import ipaddress
import itertools
import json
import random
import re
import time

GOOD = "good"
BAD_KINDS = (
    "not_json",       # garbage text
    "invalid_utf8",   # bytes that do not decode as UTF-8
    "missing_field",  # a required field is absent
    "wrong_type",     # a field has the wrong JSON type (event_id a number, url a list, ...)
    "bad_timestamp",  # occurred_at without a zone, or nonsense
    "not_object",     # valid JSON, but an array / string / number
    "empty",          # zero bytes (Kinesis and kinesalite accept empty Data)
    "too_long",       # a field over its warehouse column byte limit
    "near_limit",     # ~900 KB of non-JSON (Kinesis refuses records over 1 MiB)
)
KINDS = (GOOD,) + BAD_KINDS

# Fields that must be present and non-null; REQUIRED + NULLABLE are all the fields.
REQUIRED = ("event_id", "occurred_at", "url", "user_agent", "ip", "session_id")
NULLABLE = ("referrer", "user_id")
FIELDS = ("event_id", "occurred_at", "url", "referrer", "user_agent", "ip", "user_id",
          "session_id")
# UTF-8 byte limits of the event fields (from the page_views columns).
MAX_BYTES = {"event_id": 36, "url": 2048, "referrer": 2048, "user_agent": 1024,
             "user_id": 128, "session_id": 128}
MAX_RECORD_BYTES = 1024 * 1024      # Kinesis: data + partition key of one record
NEAR_LIMIT_BYTES = 900 * 1024

# near_limit records are heavy (900 KB each): one in NEAR_LIMIT_EVERY bad-kind
# cycles carries one; the first cycle always does, so small runs still see one.
NEAR_LIMIT_EVERY = 10

# ---------------------------------------------------------------------------
# Reference data
# ---------------------------------------------------------------------------

HOSTS = ("shop.example.com", "www.example.com", "blog.example.org", "m.example.com",
         "docs.example.io")

_PRODUCTS = ("linen-shirt", "wool-scarf", "trail-runner-2", "espresso-maker", "desk-lamp",
             "canvas-tote", "rain-jacket", "chef-knife-8in", "yoga-mat", "usb-c-hub",
             "noise-cancelling-headphones", "cast-iron-skillet", "kids-rain-boots")
_CATEGORIES = ("men", "women", "kids", "home", "kitchen", "outdoor", "electronics", "sale")
_BLOG = ("how-we-ship-faster", "autumn-lookbook", "care-guide-linen", "behind-the-seams",
         "10-kitchen-tools", "sustainability-report-2026", "gift-ideas")
_DOCS = ("getting-started", "api/authentication", "api/orders", "webhooks", "faq",
         "sdk/python", "sdk/javascript", "changelog")
_SEARCH = ("shirt", "blue scarf", "running shoes", "lamp", "gift for dad", "sale",
           "knife set", "headphones wireless", "boots size 38")
_UTM = ("utm_source=newsletter&utm_medium=email&utm_campaign=nov26",
        "utm_source=google&utm_medium=cpc&gclid=Cj0KCQiA",
        "utm_source=facebook&utm_medium=social", "ref=homepage_banner")

_EXTERNAL_REFERRERS = (
    "https://www.google.com/", "https://www.google.co.uk/", "https://www.bing.com/search?q=shop",
    "https://duckduckgo.com/", "https://t.co/aB3dE9xYz", "https://www.facebook.com/",
    "https://l.instagram.com/?u=https%3A%2F%2Fshop.example.com%2F&e=AT0",
    "https://news.ycombinator.com/item?id=41234567", "https://www.reddit.com/r/BuyItForLife/",
    "android-app://com.google.android.gm/",
)

# (device class a reader should derive, user agent). See classify_user_agent.
USER_AGENTS = (
    ("desktop", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/131.0.0.0 Safari/537.36"),
    ("desktop", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like "
                "Gecko) Chrome/130.0.0.0 Safari/537.36"),
    ("desktop", "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0"),
    ("desktop", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    ("desktop", "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, "
                "like Gecko) Version/18.1 Safari/605.1.15"),
    ("desktop", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0"),
    ("mobile", "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 "
               "(KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"),
    ("mobile", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 "
               "(KHTML, like Gecko) CriOS/130.0.6723.90 Mobile/15E148 Safari/604.1"),
    ("mobile", "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
               "Chrome/131.0.6778.39 Mobile Safari/537.36"),
    ("mobile", "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) "
               "SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36"),
    ("tablet", "Mozilla/5.0 (iPad; CPU OS 17_7 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
               "Gecko) Version/17.7 Mobile/15E148 Safari/604.1"),
    ("tablet", "Mozilla/5.0 (Linux; Android 14; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) "
               "Chrome/130.0.0.0 Safari/537.36"),
    ("bot", "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"),
    ("bot", "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)"),
    ("bot", "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; "
            "+https://openai.com/gptbot)"),
    ("bot", "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"),
    ("other", "curl/8.5.0"),
    ("other", "Mozilla/5.0 (SMART-TV; Linux; Tizen 7.0) AppleWebKit/537.36 (KHTML, like Gecko) "
              "SamsungBrowser/5.0 TV Safari/537.36"),
)
# Weights per device class (sum 1): most traffic is desktop and mobile.
_CLASS_WEIGHTS = {"desktop": 0.42, "mobile": 0.38, "tablet": 0.07, "bot": 0.10, "other": 0.03}

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


# Awkward but valid text: quotes, commas, tabs, backslashes, newlines, emoji, non-ASCII.
_AWKWARD = ('say "hi", friend', "tab\there", "back\\slash\\path", "line1\nline2",
            "café crème", "Ünïcödé ßtraße", "日本語のページ", "emoji 😀🛒🎉", "a,b,,c",
            "it's \"quoted\"", "crlf\r\nnext", "RTL \u05e9\u05dc\u05d5\u05dd", "€100 – 50% off")
_AWKWARD_PROBABILITY = 0.02

_OFFSETS = ((0, 0.82), (330, 0.05), (-300, 0.04), (60, 0.04), (540, 0.02), (-480, 0.02),
            (345, 0.01))  # minutes east of UTC, weight


def _uuid4(rng: random.Random) -> str:
    """A version-4 UUID string from the seeded generator (same as uuid.UUID(int=..., version=4))."""
    n = rng.getrandbits(128)
    n = (n & ~(0xF000 << 64) & ~(0xC000 << 48)) | (0x4000 << 64) | (0x8000 << 48)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_ASCII = json.JSONEncoder()


_CLASSES = tuple(_CLASS_WEIGHTS)
_CLASS_CUM = tuple(itertools.accumulate(_CLASS_WEIGHTS.values()))
_UA_BY_CLASS = {c: tuple(ua for k, ua in USER_AGENTS if k == c) for c in _CLASSES}
_OFFSET_CUM = tuple(itertools.accumulate(w for _, w in _OFFSETS))
_OFFSET_TEXT = tuple(f"{'+' if o >= 0 else '-'}{abs(o) // 60:02d}:{abs(o) % 60:02d}"
                     for o, _ in _OFFSETS)
_IPV4_FIRST = (23, 31, 45, 66, 81, 98, 103, 151, 176, 185, 203, 212)
_SITE_HOSTS = HOSTS[:3] + HOSTS[4:]


class _Session:
    __slots__ = ("session_id", "user_id", "user_agent", "ip", "host", "last_url", "views_left",
                 "offset_s", "offset_text")

    def __init__(self, rng: random.Random):
        r = rng.random
        self.session_id = f"s-{rng.getrandbits(64):016x}"
        cls = _CLASSES[bisect.bisect_left(_CLASS_CUM, r() * _CLASS_CUM[-1])]
        uas = _UA_BY_CLASS[cls]
        self.user_agent = uas[int(r() * len(uas))]
        self.user_id = f"u-{1 + int(r() * 249_999)}" if cls != "bot" and r() < 0.45 else None
        if r() < 0.85:
            bits = rng.getrandbits(24)
            self.ip = (f"{_IPV4_FIRST[int(r() * len(_IPV4_FIRST))]}.{bits >> 16}."
                       f"{(bits >> 8) & 0xFF}.{1 + (bits & 0xFF) % 254}")
        else:
            groups = [0x2001, 0x0DB8, rng.getrandbits(16), rng.getrandbits(16)] + \
                [rng.getrandbits(16) if r() < 0.6 else 0 for _ in range(4)]
            self.ip = str(ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups)))
        self.host = "m.example.com" if cls == "mobile" and r() < 0.5 else \
            _SITE_HOSTS[int(r() * len(_SITE_HOSTS))]
        self.last_url: str | None = None
        self.views_left = 1 if cls == "bot" and r() < 0.5 else \
            max(1, int(rng.expovariate(1 / 6)))
        k = bisect.bisect_left(_OFFSET_CUM, r() * _OFFSET_CUM[-1])
        self.offset_s = _OFFSETS[k][0] * 60
        self.offset_text = _OFFSET_TEXT[k]


class Generator:
    """Iterator of ``(kind, partition_key, data)``; ``counts`` and ``good_ids`` fill as it runs.

    ``n`` None means endless. ``bad_fraction`` of the records are malformed: with ``n``
    known, exactly ``round(n * bad_fraction)`` at seeded random positions. Bad kinds
    rotate through ``bad_kinds`` (near_limit only every NEAR_LIMIT_EVERY-th cycle).
    ``start`` is the first event time (default: now); events advance by ``spacing_s``.
    """

    def __init__(self, n: int | None = None, bad_fraction: float = 0.0, seed: int | None = None,
                 *, start: dt.datetime | None = None, spacing_s: float = 0.01,
                 bad_kinds: tuple[str, ...] | list[str] | None = None, sessions: int = 500,
                 keep_ids: bool = False):
        if not 0.0 <= bad_fraction <= 1.0:
            raise ValueError("bad_fraction must be between 0 and 1")
        kinds = tuple(bad_kinds) if bad_kinds else BAD_KINDS
        unknown = set(kinds) - set(BAD_KINDS)
        if unknown:
            raise ValueError(f"unknown bad kinds: {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(BAD_KINDS)}")
        self.n = n
        self.bad_fraction = bad_fraction
        self.rng = random.Random(seed)
        self.start = (start or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)
        self._start_us = int(self.start.timestamp()) * 1_000_000 + self.start.microsecond
        self._spacing_us = int(round(spacing_s * 1e6))
        self._sec_cache: tuple[int, str] = (-1, "")
        self.counts: collections.Counter[str] = collections.Counter()
        self.good_ids: list[str] = []
        self.keep_ids = keep_ids
        self._index = 0
        self._sessions = [_Session(self.rng) for _ in range(sessions)]
        self._cycle = self._bad_cycle(kinds)
        self._cycle_pos = 0
        if n is not None:
            k = round(n * bad_fraction)
            self._bad_positions: set[int] | None = set(self.rng.sample(range(n), k))
        else:
            self._bad_positions = None

    @staticmethod
    def _bad_cycle(kinds: tuple[str, ...]) -> list[str]:
        others = [k for k in kinds if k != "near_limit"]
        if "near_limit" not in kinds:
            return others
        if not others:
            return ["near_limit"]
        return ["near_limit"] + others * NEAR_LIMIT_EVERY  # first cycle includes one

    def __iter__(self) -> "Generator":
        return self

    def __next__(self) -> tuple[str, str, bytes]:
        i = self._index
        if self.n is not None and i >= self.n:
            raise StopIteration
        self._index += 1
        if self._bad_positions is not None:
            bad = i in self._bad_positions
        else:
            bad = self.bad_fraction > 0 and self.rng.random() < self.bad_fraction
        if bad:
            kind = self._cycle[self._cycle_pos % len(self._cycle)]
            self._cycle_pos += 1
            data = getattr(self, "_bad_" + kind)(i)
            key = f"{self.rng.getrandbits(128):032x}"
        else:
            kind = GOOD
            event, key = self.event(i)
            data = self.encode(event)
            if self.keep_ids:
                self.good_ids.append(event["event_id"])
        self.counts[kind] += 1
        return kind, key, data

    # -- good events --------------------------------------------------------

    def _time(self, i: int, s: _Session) -> str:
        rng = self.rng
        # Clocks and network: most events are on time, some a few seconds late.
        late_us = int(min(rng.expovariate(1 / 0.4), 30.0) * 1e6) if rng.random() < 0.3 else 0
        local_us = self._start_us + i * self._spacing_us - late_us + s.offset_s * 1_000_000
        secs, us = divmod(local_us, 1_000_000)
        if secs != self._sec_cache[0]:
            self._sec_cache = (secs, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)))
        text = self._sec_cache[1]
        r = rng.random()
        if r < 0.25:  # JavaScript clients send milliseconds
            return f"{text}.{us // 1000:03d}{s.offset_text}"
        if r < 0.28:
            return text + s.offset_text
        return f"{text}.{us:06d}{s.offset_text}"

    def _path(self, s: _Session) -> str:
        rng = self.rng
        host = s.host
        if host == "blog.example.org":
            r = rng.random()
            if r < 0.15:
                return "/"
            if r < 0.3:
                return f"/tag/{rng.choice(('style', 'kitchen', 'company', 'how-to'))}"
            return f"/2026/{rng.randrange(1, 12):02d}/{rng.choice(_BLOG)}"
        if host == "docs.example.io":
            path = f"/v2/{rng.choice(_DOCS)}"
            return path + ("#" + rng.choice(("request", "errors", "examples"))
                           if rng.random() < 0.1 else "")
        r = rng.random()
        if r < 0.12:
            return "/"
        if r < 0.45:
            path = f"/products/{rng.choice(_PRODUCTS)}"
            if rng.random() < 0.3:
                path += f"?color={rng.choice(('blue', 'black', 'sand', 'olive'))}" \
                        f"&size={rng.choice(('S', 'M', 'L', 'XL', '38', '42'))}"
            return path
        if r < 0.65:
            path = f"/category/{rng.choice(_CATEGORIES)}"
            if rng.random() < 0.4:
                path += f"?page={rng.randrange(2, 9)}&sort={rng.choice(('price', 'new', 'popular'))}"
            return path
        if r < 0.78:
            q = rng.choice(_SEARCH).replace(" ", "+")
            return f"/search?q={q}"
        return rng.choice(("/cart", "/checkout", "/checkout/shipping", "/account/orders",
                           "/account/login", "/help/returns", "/stores"))

    def event(self, i: int) -> tuple[dict, str]:
        """The i-th good event and its partition key (the session id)."""
        rng = self.rng
        slot = rng.randrange(len(self._sessions))
        s = self._sessions[slot]
        url = f"https://{s.host}{self._path(s)}"
        if rng.random() < 0.08:
            url += ("&" if "?" in url else "?") + rng.choice(_UTM)
        if s.last_url is not None and rng.random() < 0.6:
            referrer: str | None = s.last_url
        elif rng.random() < 0.5:
            referrer = rng.choice(_EXTERNAL_REFERRERS)
        else:
            referrer = None
        user_agent = s.user_agent
        if rng.random() < _AWKWARD_PROBABILITY:
            where = rng.randrange(3)
            text = rng.choice(_AWKWARD)
            if where == 0:
                url += ("&" if "?" in url else "?") + "note=" + text
            elif where == 1:
                referrer = f"https://www.google.com/search?q={text}"
            else:
                user_agent = f"{user_agent} Custom/{text}"
        event = {
            "event_id": _uuid4(rng),
            "occurred_at": self._time(i, s),
            "url": url,
            "referrer": referrer,
            "user_agent": user_agent,
            "ip": s.ip,
            "user_id": s.user_id,
            "session_id": s.session_id,
        }
        s.last_url = url
        s.views_left -= 1
        if s.views_left <= 0:
            self._sessions[slot] = _Session(rng)
        return event, s.session_id

    def encode(self, event: dict) -> bytes:
        """Compact UTF-8 JSON; a few records use \\u escapes or spaces (still valid JSON)."""
        r = self.rng.random()
        if r < 0.05:
            return _ASCII.encode(event).encode("ascii")  # \uXXXX escapes, ", " separators
        return _COMPACT.encode(event).encode("utf-8")

    # -- bad records ----------------------------------------------------------

    def _good_dict(self, i: int) -> dict:
        """A fresh good event to break (it uses a session like any other)."""
        return self.event(i)[0]

    def _bad_not_json(self, i: int) -> bytes:
        return self.rng.choice((
            b"GET /products/linen-shirt HTTP/1.1",
            b"{\"event_id\": \"abc\", \"url\": ",              # truncated
            b"{'event_id': 'single-quotes', 'url': 'https://shop.example.com/'}",
            b"event_id=123&url=https%3A%2F%2Fshop.example.com%2F",
            b"<html><body>502 Bad Gateway</body></html>",
            b"{\"event_id\": \"x\",}",                          # trailing comma
            b"NaNaNaN",
        ))

    def _bad_invalid_utf8(self, i: int) -> bytes:
        good = self.encode(self._good_dict(i))
        cut = self.rng.randrange(1, len(good))
        return self.rng.choice((
            b"\xff\xfe" + "{}".encode("utf-16-le"),             # a UTF-16 BOM
            good[:cut] + b"\xc3\x28" + good[cut:],               # invalid 2-byte sequence
            good.replace(b"https", b"http\xe9", 1),              # Latin-1 byte
            b"\xff\xfe\xfd" + good,
        ))

    def _bad_missing_field(self, i: int) -> bytes:
        event = self._good_dict(i)
        del event[REQUIRED[self._cycle_pos % len(REQUIRED)]]
        return json.dumps(event).encode()

    def _bad_wrong_type(self, i: int) -> bytes:
        event = self._good_dict(i)
        field, value = self.rng.choice((
            ("event_id", self.rng.randrange(10 ** 9)),
            ("url", [event["url"]]),
            ("user_agent", {"ua": event["user_agent"]}),
            ("session_id", None),
            ("ip", 3232235777),
            ("occurred_at", 1764138601.5),
            ("user_id", 48213),
            ("referrer", True),
        ))
        event[field] = value
        return json.dumps(event).encode()

    def _bad_bad_timestamp(self, i: int) -> bytes:
        event = self._good_dict(i)
        ts = event["occurred_at"]
        event["occurred_at"] = self.rng.choice((
            ts[:-6],                                   # no zone
            ts[:-6].replace("T", " "),                 # no zone, space separator
            "yesterday",
            "2026-13-45T25:61:00+00:00",
            "",
            "1764138601",
            "26/11/2026 06:30:01 +0000",
        ))
        return json.dumps(event).encode()

    def _bad_not_object(self, i: int) -> bytes:
        event = self._good_dict(i)
        return self.rng.choice((
            json.dumps([event]).encode(),
            json.dumps(list(event.values())).encode(),
            json.dumps(json.dumps(event)).encode(),    # a JSON string holding JSON
            b"42",
            b"null",
        ))

    def _bad_empty(self, i: int) -> bytes:
        return b""

    def _bad_too_long(self, i: int) -> bytes:
        event = self._good_dict(i)
        field = ("url", "user_agent", "referrer", "session_id", "user_id", "event_id")[
            self._cycle_pos % 6]
        if field == "url":
            event["url"] += ("&" if "?" in event["url"] else "?") + "pad=" + "x" * 5000
        elif field == "referrer":
            event["referrer"] = "https://www.google.com/search?q=" + "ü" * 1100  # 2,200 bytes
        elif field == "user_agent":
            event["user_agent"] = event["user_agent"] + " " + "Extension/1.0 " * 80
        elif field == "event_id":
            event["event_id"] = event["event_id"] + "-" + event["event_id"]
        else:
            event[field] = ("é" * 70)  # 70 characters, 140 bytes: over in bytes only
        return json.dumps(event, ensure_ascii=False).encode()

    def _bad_near_limit(self, i: int) -> bytes:
        head = b'{"event_id": "' + _uuid4(self.rng).encode() + b'", "url": "'
        return head + b"A" * (NEAR_LIMIT_BYTES - len(head))  # never closed: not JSON


def generate(n: int | None, bad_fraction: float = 0.0, seed: int | None = None,
             **kwargs) -> Generator:
    """Iterator of ``(kind, partition_key, data)``; see ``Generator`` for the options."""
    return Generator(n, bad_fraction, seed, **kwargs)


# ---------------------------------------------------------------------------
# A simple checker (tests and tools): is this record a good event?
# ---------------------------------------------------------------------------

_TS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?([+-]\d{2}:\d{2}|Z)$")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def check(data: bytes) -> dict:
    """Parse and validate one record by the rules in docs/events.md.

    Returns the event dict, or raises ValueError whose message starts with the
    reason category (``invalid_utf8``, ``not_json``, ``not_object``,
    ``missing_field:<f>``, ``wrong_type:<f>``, ``bad_timestamp``, ``too_long:<f>``, ``empty``).
    """
    if not data.strip():
        raise ValueError("empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"invalid_utf8: {exc.reason} at byte {exc.start}") from None
    try:
        event = json.loads(text)
    except ValueError as exc:
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
