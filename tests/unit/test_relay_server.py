"""The relay's protocol on a real unix socket (asyncio server, the engine, a producer on an
in-memory Kinesis): answers in order for pipelined lines, an over-long line answered once
and skipped across reads, a line cut by the client's close never answered nor journaled,
and a stop that sends the answers of lines read before it, closes, and refuses."""
from __future__ import annotations

import asyncio
import json
import os
import tempfile

from shardline.producer.producer import Producer
from shardline.relay.core import Relay
from shardline.relay.journal import Journal
from shardline.relay.server import Listen, Server, committed
from tests.fakes import FakeKinesis


async def started(tmp: str, fake: FakeKinesis) -> tuple[Server, Relay[asyncio.Future[None]]]:
    producer = Producer("s", client=fake, linger_ms=2, on_full="drop")
    relay: Relay[asyncio.Future[None]] = Relay(Journal(tmp, 1 << 20, 0.05), producer,
                                               max_pending_bytes=1 << 20,
                                               on_commit=committed)
    failures: list[Exception] = []
    server = Server(relay, Listen(os.path.join(tmp, "r.sock"), 0o600, None, 0, 300, True),
                    failures.append)
    await server.start()
    return server, relay


async def exchange(path: str, chunks: list[bytes], answers: int) -> list[str]:
    reader, writer = await asyncio.open_unix_connection(path)
    for chunk in chunks:
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(0.01)     # separate reads on the relay's side
    got = [(await asyncio.wait_for(reader.readline(), 5)).decode().rstrip("\n")
           for _ in range(answers)]
    writer.close()
    return got


def test_pipelined_lines_answers_in_order_and_long_lines_skipped_across_reads():
    async def main() -> None:
        with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
            server, relay = await started(tmp, FakeKinesis(shards=1))
            lines = [json.dumps({"event_id": f"e{i}"}).encode() + b"\n" for i in range(50)]
            got = await exchange(server.o.socket_path, [
                b"".join(lines[:25]),
                b'{"event_id":"long","pad":"' + b"x" * 400,   # over 300 bytes, no newline yet
                b"y" * 400 + b'"}\n' + b"".join(lines[25:]) + b"[]\n",
            ], 52)
            assert got[:25] == [f"OK e{i}" for i in range(25)]
            assert got[25].startswith("ERR too_large")
            assert got[26:51] == [f"OK e{i}" for i in range(25, 50)]
            assert got[51] == "ERR invalid not a JSON object"
            # a last line cut by the close: no answer, not journaled
            _, writer = await asyncio.open_unix_connection(server.o.socket_path)
            writer.write(b'{"event_id":"cut"}')
            await writer.drain()
            writer.close()
            await asyncio.sleep(0.05)
            server.step()
            assert relay.counts.accepted == 50
            assert relay.counts.refused == {"too_large": 1, "invalid": 1}
            journaled = b"".join(open(os.path.join(tmp, n), "rb").read()
                                 for n in sorted(os.listdir(tmp)) if n.endswith(".jsonl"))
            assert b"cut" not in journaled and journaled.count(b"\n") <= 50
            await server.stop(1.0)
            assert not os.path.exists(server.o.socket_path)
            relay.close()

    asyncio.run(main())


def test_a_stop_keeps_the_answers_then_closes_and_refuses_connections():
    async def main() -> None:
        with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
            server, relay = await started(tmp, FakeKinesis(shards=1))
            reader, writer = await asyncio.open_unix_connection(server.o.socket_path)
            writer.write(b'{"event_id":"a"}\n{"event_id":"b"}\n')
            await writer.drain()
            await asyncio.sleep(0.02)          # read by the relay, not yet answered by us
            await server.stop(2.0)
            assert [await reader.readline() for _ in range(2)] == [b"OK a\n", b"OK b\n"]
            assert await reader.readline() == b""          # then closed
            try:
                await asyncio.open_unix_connection(server.o.socket_path)
                raise AssertionError("connected to a stopped relay")
            except OSError:
                pass
            relay.close()

    asyncio.run(main())


def test_tcp_lines_and_http_post_on_the_loopback_listener():
    async def main() -> None:
        with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
            producer = Producer("s", client=FakeKinesis(shards=1), linger_ms=2, on_full="drop")
            relay: Relay[asyncio.Future[None]] = Relay(Journal(tmp, 1 << 20, 0.05), producer,
                                                       max_pending_bytes=1 << 20,
                                                       on_commit=committed)
            server = Server(relay, Listen(os.path.join(tmp, "r.sock"), 0o600, "127.0.0.1", 0,
                                          300, True), lambda exc: None)
            await server.start()
            assert server.tcp_bound is not None
            host, port = server.tcp_bound
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b'{"event_id":"t1"}\n')
            assert await reader.readline() == b"OK t1\n"
            writer.close()
            body = b'{"event_id":"h1"}\nnope\n{"event_id":"h2"}'   # last line: no newline
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"POST /events HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                         b"Content-Length: %d\r\n\r\n" % len(body))
            await writer.drain()
            assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(body)
            response = await asyncio.wait_for(reader.read(), 5)    # until the close
            head, _, text = response.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK")
            assert text.decode().splitlines() == ["OK h1", "ERR invalid not JSON", "OK h2"]
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"POST / HTTP/1.1\r\n\r\n")
            assert (await reader.read()).startswith(b"HTTP/1.1 411")
            await server.stop(1.0)
            relay.close()

    asyncio.run(main())
