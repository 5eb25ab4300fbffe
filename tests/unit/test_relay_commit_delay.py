"""The PostgreSQL wire parsing of the commit-latency relay (shardline.devstack.relay)."""
from __future__ import annotations

import struct

from shardline.devstack.relay import CommitDelay

SSL_REQUEST = struct.pack("!ii", 8, 80877103)


def startup(user: bytes = b"postgres") -> bytes:
    body = struct.pack("!i", 3 << 16) + b"user\0" + user + b"\0\0"
    return struct.pack("!i", len(body) + 4) + body


def query(text: bytes) -> bytes:
    return b"Q" + struct.pack("!i", len(text) + 5) + text + b"\0"


def flatten(out: list[tuple[float, bytes]]) -> bytes:
    return b"".join(chunk for _, chunk in out)


def test_only_commit_and_end_queries_are_delayed() -> None:
    seen = []
    d = CommitDelay(0.3, lambda: seen.append(1))
    stream = [SSL_REQUEST, startup(), query(b"BEGIN"), query(b"INSERT INTO t VALUES (1)"),
              query(b"COMMIT"), query(b"select 1"), query(b" end ; "),
              query(b"SELECT 'COMMIT'"), query(b"commit   work")]
    out = d.feed(b"".join(stream))
    assert flatten(out) == b"".join(stream)  # every byte passes, in order
    delayed = [chunk for wait, chunk in out if wait]
    assert delayed == [query(b"COMMIT"), query(b" end ; "), query(b"commit   work")]
    assert all(wait in (0.0, 0.3) for wait, _ in out)
    assert len(seen) == 3


def test_without_a_delay_commits_are_counted_and_nothing_waits() -> None:
    seen = []
    d = CommitDelay(0.0, lambda: seen.append(1))
    out = d.feed(startup() + query(b"BEGIN") + query(b"COMMIT") + query(b"END"))
    assert all(wait == 0.0 for wait, _ in out) and len(seen) == 2


def test_messages_split_across_reads_are_reassembled() -> None:
    d = CommitDelay(0.5)
    data = startup() + query(b"SELECT 1") + query(b"COMMIT")
    out = []
    for i in range(len(data)):  # one byte per recv
        out += d.feed(data[i:i + 1])
    assert flatten(out) == data
    assert [chunk for wait, chunk in out if wait] == [query(b"COMMIT")]


def test_a_startup_message_that_looks_like_a_query_is_not_parsed_as_one() -> None:
    # Before the startup message nothing has a type byte: a user named "COMMIT" is data.
    d = CommitDelay(0.5)
    out = d.feed(startup(b"COMMIT"))
    assert out == [(0.0, startup(b"COMMIT"))]


def test_after_the_server_accepts_ssl_bytes_pass_unparsed() -> None:
    d = CommitDelay(0.5)
    assert flatten(d.feed(SSL_REQUEST)) == SSL_REQUEST
    d.server_said(b"S")
    tls = b"\x16\x03\x01" + query(b"COMMIT")
    assert d.feed(tls) == [(0.0, tls)]
