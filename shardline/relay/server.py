"""The relay's sockets and protocol (asyncio, one thread).

In: one JSON object per line (UTF-8, ``\\n``-terminated; blank lines are ignored). Out: one
line per event line, in order: ``OK <event_id>`` once the event is in the journal (fsynced),
or ``ERR <reason> <text>`` at once (``invalid``, ``too_large``, ``full``, ``stopping``).
Lines may be pipelined; nothing here ever waits for Kinesis. On the TCP listener a
request that starts with ``POST`` is HTTP: the body is lines, the response body the answers.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass
from typing import Callable, TypeAlias

from shardline.logs import get_logger
from shardline.relay.core import Accepted, Relay

log = get_logger("relay")

READ_BYTES = 65536
HTTP_HEAD_BYTES = 8192
HTTP_BODY_BYTES = 16 * 1024 * 1024
# An answer line ready to send, an OK waiting for its commit, or the end of the connection.
Answer: TypeAlias = "bytes | tuple[str, asyncio.Future[None]] | None"


@dataclass(frozen=True)
class Listen:
    socket_path: str
    socket_mode: int
    tcp_host: str | None
    tcp_port: int
    max_event_bytes: int
    assign_ids: bool


class Server:
    """The sockets, and the relay's steps on the same thread: a commit is scheduled as soon
    as a line is taken (every line read in the meantime joins it: the group commit), and
    a tick ships and releases between commits. One thread, so an answer never waits for
    another thread to be scheduled or to get the GIL (measured: with a committing thread,
    a page's p99 on the loaded 2-core machine was several times higher)."""

    def __init__(self, relay: "Relay[asyncio.Future[None]]", listen: Listen,
                 on_failure: Callable[[Exception], None]):
        self.relay = relay
        self.o = listen
        self.on_failure = on_failure
        self.failed = False
        self._commit_soon = False
        self.loop = asyncio.get_running_loop()
        self.servers: list[asyncio.base_events.Server] = []
        self.readers: set[asyncio.Task[None]] = set()
        self.answering: set[asyncio.Task[None]] = set()
        self.tcp_bound: tuple[str, int] | None = None

    def step(self) -> None:
        """One step of the relay: commit, answer, ship, release."""
        self._commit_soon = False
        if self.failed:
            return
        try:
            self.relay.step(time.monotonic())
        except Exception as exc:  # noqa: BLE001 - the command ends on it, naming it
            self.failed = True
            self.on_failure(exc)

    async def tick(self, every_s: float) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                self.step()
                await asyncio.sleep(every_s)

    async def start(self) -> None:
        path = self.o.socket_path
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)   # main() made sure no relay answers there
        unix = await asyncio.start_unix_server(self._client, path)
        os.chmod(path, self.o.socket_mode)
        self.servers.append(unix)
        if self.o.tcp_host is not None:
            tcp = await asyncio.start_server(self._tcp_client, self.o.tcp_host, self.o.tcp_port)
            self.tcp_bound = tcp.sockets[0].getsockname()[:2]
            self.servers.append(tcp)

    @property
    def connections(self) -> int:
        return len(self.answering)

    async def stop(self, drain_s: float) -> None:
        """Take no new connection nor line; answer every line already taken (bounded)."""
        for server in self.servers:
            server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.o.socket_path)
        for task in list(self.readers):
            task.cancel()
        if self.answering:
            await asyncio.wait(list(self.answering), timeout=drain_s)
        for task in list(self.answering):
            task.cancel()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      http: bool = False) -> None:
        answers: asyncio.Queue[Answer] = asyncio.Queue()
        answering = asyncio.create_task(self._answer(answers, writer))
        self.answering.add(answering)
        answering.add_done_callback(self.answering.discard)
        current = asyncio.current_task()
        assert current is not None
        self.readers.add(current)
        try:
            first = await reader.read(READ_BYTES)
            if http and first.startswith(b"POST "):
                await self._http(first, reader, answers)
            else:
                await self._read(first, reader, answers)
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.readers.discard(current)
            answers.put_nowait(None)

    async def _tcp_client(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        await self._client(reader, writer, http=True)

    async def _read(self, chunk: bytes, reader: asyncio.StreamReader,
                    answers: "asyncio.Queue[Answer]") -> None:
        buf = b""
        skipping = False       # inside a line already answered too_large
        limit = self.o.max_event_bytes
        while True:
            if not chunk:
                return   # a last line without its newline was never complete: no answer
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if skipping:
                    skipping = False
                    continue
                if line.strip():
                    answers.put_nowait(self._offer(line))
            if len(buf) > limit and not skipping:
                answers.put_nowait(self._offer(buf))   # answered too_large
                skipping, buf = True, b""
            elif skipping:
                buf = b""
            # Let the commit and the other connections in between two chunks: a client
            # pipelining thousands of lines must not hold every other page's answer.
            await asyncio.sleep(0)
            chunk = await reader.read(READ_BYTES)

    async def _http(self, head: bytes, reader: asyncio.StreamReader,
                    answers: "asyncio.Queue[Answer]") -> None:
        """``POST`` on the TCP listener (``curl --data-binary @events.jsonl``): the body is
        lines as on the socket, the response body one answer line per event line, in
        order (status 200); the connection closes after it."""
        while b"\r\n\r\n" not in head:
            if len(head) > HTTP_HEAD_BYTES or not (more := await reader.read(READ_BYTES)):
                answers.put_nowait(_http_error(400, "bad request"))
                return
            head += more
        head, _, body = head.partition(b"\r\n\r\n")
        headers = dict((k.strip().lower(), v.strip()) for k, _, v in
                       (line.partition(b":") for line in head.split(b"\r\n")[1:]))
        length = headers.get(b"content-length", b"")
        if not length.isdigit():
            answers.put_nowait(_http_error(411, "Content-Length required"))
            return
        if int(length) > HTTP_BODY_BYTES:
            answers.put_nowait(_http_error(413, f"a body has at most {HTTP_BODY_BYTES} bytes"))
            return
        if headers.get(b"expect", b"").lower() == b"100-continue":
            answers.put_nowait(b"HTTP/1.1 100 Continue\r\n\r\n")
        if len(body) < int(length):
            body += await reader.readexactly(int(length) - len(body))
        answers.put_nowait(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                           b"Connection: close\r\n\r\n")
        for line in body[:int(length)].split(b"\n"):
            if line.strip():
                answers.put_nowait(self._offer(line))

    def _offer(self, line: bytes) -> bytes | tuple[str, asyncio.Future[None]]:
        ack: asyncio.Future[None] = self.loop.create_future()
        got = self.relay.offer(line, ack, self.o.max_event_bytes, self.o.assign_ids)
        if isinstance(got, Accepted):
            if not self._commit_soon:
                self._commit_soon = True
                self.loop.call_soon(self.step)
            return got.event_id, ack
        return f"ERR {got.reason} {got.text}\n".encode()

    async def _answer(self, answers: "asyncio.Queue[Answer]",
                      writer: asyncio.StreamWriter) -> None:
        try:
            while (item := await answers.get()) is not None:
                if isinstance(item, tuple):
                    event_id, ack = item
                    await ack
                    writer.write(f"OK {event_id}\n".encode())
                else:
                    writer.write(item)
                if answers.empty():
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


def _http_error(status: int, text: str) -> bytes:
    reason = {400: "Bad Request", 411: "Length Required", 413: "Payload Too Large"}[status]
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
            f"Connection: close\r\n\r\n{text}\n").encode()


def committed(acks: "list[asyncio.Future[None]]") -> None:
    """The relay's ``on_commit``: the lines are on disk, their OKs may go."""
    for ack in acks:
        if not ack.done():
            ack.set_result(None)
