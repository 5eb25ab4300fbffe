"""The simulated site and its visitors, for the sample events of ``shardline.sample.events``.

Hosts and pages (``page_path``), referrers, user agents with the device class
each should be classified as (``USER_AGENTS``), and visitor sessions
(``Session``: one device, IP, time zone and a few page views). Everything draws
from the generator's seeded ``random.Random``, in a fixed order, so a seed
gives the same traffic byte for byte.
"""
from __future__ import annotations

import bisect
import ipaddress
import itertools
import random

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
UTM = ("utm_source=newsletter&utm_medium=email&utm_campaign=nov26",
       "utm_source=google&utm_medium=cpc&gclid=Cj0KCQiA",
       "utm_source=facebook&utm_medium=social", "ref=homepage_banner")

EXTERNAL_REFERRERS = (
    "https://www.google.com/", "https://www.google.co.uk/", "https://www.bing.com/search?q=shop",
    "https://duckduckgo.com/", "https://t.co/aB3dE9xYz", "https://www.facebook.com/",
    "https://l.instagram.com/?u=https%3A%2F%2Fshop.example.com%2F&e=AT0",
    "https://news.ycombinator.com/item?id=41234567", "https://www.reddit.com/r/BuyItForLife/",
    "android-app://com.google.android.gm/",
)

# (device class a reader should derive, user agent).
# See shardline.sample.event_rules.classify_user_agent.
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


# Valid text that looks like an attack on whatever stores it: SQL injection, CSV /
# spreadsheet formula injection, COPY control text (\N is its NULL marker, \. its
# end of data), SQL NULL and quoting look-alikes, format strings, U+2028. The pipeline
# must store each as the plain text it is, never interpret it.
HOSTILE = ("'; DROP TABLE page_views; --", "1' OR '1'='1", "Robert'); DELETE FROM checkpoints;--",
           '=HYPERLINK("http://evil.example","x")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(1+1)",
           "\\N", "\\.", "NULL", '""', "a;b", "$$ dollar $$", "E'\\x41'", "%s %(x)s {0}",
           "\u2028line sep")

# Awkward but valid text: quotes, commas, tabs, backslashes, newlines, emoji, non-ASCII,
# and the HOSTILE strings.
AWKWARD = ('say "hi", friend', "tab\there", "back\\slash\\path", "line1\nline2",
           "café crème", "Ünïcödé ßtraße", "日本語のページ", "emoji 😀🛒🎉", "a,b,,c",
           "it's \"quoted\"", "crlf\r\nnext", "RTL \u05e9\u05dc\u05d5\u05dd", "€100 – 50% off"
           ) + HOSTILE
AWKWARD_PROBABILITY = 0.02

_OFFSETS = ((0, 0.82), (330, 0.05), (-300, 0.04), (60, 0.04), (540, 0.02), (-480, 0.02),
            (345, 0.01))  # minutes east of UTC, weight


def uuid4(rng: random.Random) -> str:
    """A version-4 UUID string from the seeded generator (same as uuid.UUID(int=..., version=4))."""
    n = rng.getrandbits(128)
    n = (n & ~(0xF000 << 64) & ~(0xC000 << 48)) | (0x4000 << 64) | (0x8000 << 48)
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_CLASSES = tuple(_CLASS_WEIGHTS)
_CLASS_CUM = tuple(itertools.accumulate(_CLASS_WEIGHTS.values()))
_UA_BY_CLASS = {c: tuple(ua for k, ua in USER_AGENTS if k == c) for c in _CLASSES}
_OFFSET_CUM = tuple(itertools.accumulate(w for _, w in _OFFSETS))
_OFFSET_TEXT = tuple(f"{'+' if o >= 0 else '-'}{abs(o) // 60:02d}:{abs(o) % 60:02d}"
                     for o, _ in _OFFSETS)
_IPV4_FIRST = (23, 31, 45, 66, 81, 98, 103, 151, 176, 185, 203, 212)
_SITE_HOSTS = HOSTS[:3] + HOSTS[4:]


class Session:
    """One visitor: device (user agent), IP, host, time zone and how many views are left."""

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


def page_path(rng: random.Random, host: str) -> str:
    """A path (and query) on ``host`` for one page view."""
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
