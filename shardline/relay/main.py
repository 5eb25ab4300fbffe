"""``shardline relay [--stream S]``: the local daemon front ends that are not Python send
their events to (docs/producer.md, "The relay").

At start: the state directory (the journal) must be writable and no other relay may answer
on the socket, else one line and exit CONFIG. What a previous run journaled is shipped
again first. Stop: the first SIGTERM/SIGINT closes the listeners, answers every line
already read (``relay.drain_s`` at most), commits, gives the producer its close time and
exits 0; what Kinesis has not taken stays in the journal for the next start. A second
signal exits 130 at once: every acknowledged event is in the journal already.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import sys
import time
from typing import TYPE_CHECKING

from shardline.cli.kit import add_stream_option, command_parser, load_settings, \
    parse_command_args
from shardline.errors import ConfigError
from shardline.exitcodes import ExitCode
from shardline.kinesis import kinesis_client
from shardline.logs import get_logger
from shardline.producer import Producer
from shardline.relay.core import ProducerDropped, Relay
from shardline.relay.journal import Journal
from shardline.relay.metrics import Exporter
from shardline.relay.server import Listen, Server, committed
from shardline.settings import Settings

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

log = get_logger("relay")

EXPORT_S = 1.0
TICK_S = 0.02   # ship to the producer and release shipped segments this often


def paths(settings: Settings) -> tuple[str, str]:
    """(state directory, socket path) from the settings; ConfigError naming the key."""
    r = settings.relay
    state = r.state_dir or (os.path.join(settings.producer.spool_dir, "relay")
                            if settings.producer.spool_dir else "")
    if not state:
        settings.require("relay.state_dir")   # raises, naming the setting
    try:
        os.makedirs(state, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"relay.state_dir {state!r}: {exc.strerror}") from None
    if not os.access(state, os.W_OK | os.X_OK):
        raise ConfigError(f"relay.state_dir {state!r} is not writable by this user")
    _lock_state_dir(state)
    sock = r.socket_path or os.path.join(state, "relay.sock")
    if len(sock.encode()) > 100:
        raise ConfigError(f"relay.socket_path {sock!r} is too long for a unix socket "
                          f"(at most 100 bytes): set a shorter one")
    directory = os.path.dirname(os.path.abspath(sock))
    if not os.path.isdir(directory) or not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"relay.socket_path {sock!r}: directory {directory!r} is missing "
                          f"or not writable")
    if _answers(sock):
        raise ConfigError(f"relay.socket_path {sock!r}: another relay is listening there "
                          f"(stop it, or give this one another socket_path and state_dir)")
    return state, sock


_LOCKS: list[int] = []   # held for the life of the process; the kernel lets go at exit


def _lock_state_dir(state: str) -> None:
    """One relay per journal: two would ship and delete each other's segments."""
    fd = os.open(os.path.join(state, "lock"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConfigError(f"relay.state_dir {state!r} is in use by another relay (give each "
                          f"relay a state_dir of its own)") from None
    _LOCKS.append(fd)


def _answers(path: str) -> bool:
    if not os.path.exists(path):
        return False
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(0.5)
        try:
            s.connect(path)
        except OSError:
            return False
    return True


def listen_options(settings: Settings, sock: str) -> Listen:
    r = settings.relay
    host, port = None, 0
    if r.tcp_address:
        text, _, port_text = r.tcp_address.rpartition(":")
        host, port = ("127.0.0.1" if text == "localhost" else text), int(port_text)
    return Listen(socket_path=sock, socket_mode=int(r.socket_mode, 8), tcp_host=host,
                  tcp_port=port, max_event_bytes=r.max_event_bytes,
                  assign_ids=r.missing_event_id == "assign")


def main(argv: list[str]) -> int:
    parser = command_parser("relay", "Take newline-delimited JSON events on a unix socket "
                                     "(and 127.0.0.1), journal them, answer at once, and ship "
                                     "them through the producer.")
    add_stream_option(parser)
    args, code = parse_command_args(parser, argv)
    if args is None:
        return code
    settings = load_settings(args, **{"kinesis.stream": args.stream})
    settings.require("kinesis.stream")
    state, sock = paths(settings)
    listen = listen_options(settings, sock)
    # on_full=drop: the relay looks for room before each put and keeps what does not fit
    # in its journal; it must never wait inside put() (its sockets share the thread).
    # The client is made before the socket listens: building a botocore client holds the
    # GIL for ~0.3 s, which on the producer's thread would delay the first answers.
    producer = Producer(settings=settings, client=kinesis_client(settings), on_full="drop")
    # The producer's threads (botocore: signing, parsing) hold the GIL in stretches; a
    # shorter switch interval lets the answering threads in sooner (measured: the first
    # answers after a start went from ~30 ms to a few).
    sys.setswitchinterval(0.0005)
    return asyncio.run(_serve(settings, state, listen, producer))


async def _serve(settings: Settings, state: str, listen: Listen, producer: Producer) -> int:
    r = settings.relay
    journal = Journal(state, r.segment_bytes, r.segment_age_s)
    relay: Relay[asyncio.Future[None]] = Relay(journal, producer,
                                               max_pending_bytes=r.max_pending_bytes,
                                               on_commit=committed)
    again = relay.recover()
    if again:
        log.info("journal: %d event(s) acknowledged by a previous run are shipped again "
                 "(the loader's dedup keeps one row each)", again)
    loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    failure: list[Exception] = []

    def failed(exc: Exception) -> None:
        failure.append(exc)
        stopped.set()

    server = Server(relay, listen, failed)
    signals = 0

    def on_signal(signum: int) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            log.info("%s: stopping (closing the listeners, answering what was read)",
                     signal.Signals(signum).name)
            stopped.set()
        else:
            log.warning("second %s: exiting now (every acknowledged event is in the journal)",
                        signal.Signals(signum).name)
            os._exit(ExitCode.FORCED_STOP)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    await server.start()
    metrics_server = _serve_metrics(r.metrics_address)
    where = listen.socket_path + (f" and {server.tcp_bound[0]}:{server.tcp_bound[1]}"
                                  if server.tcp_bound else "")
    log.info("relaying to %s on %s (journal in %s)", settings.kinesis.stream, where, state)
    exporter = Exporter()
    tasks = [asyncio.create_task(server.tick(TICK_S)),
             asyncio.create_task(_export(exporter, relay, server))]
    await stopped.wait()
    await server.stop(r.drain_s)
    for task in tasks:
        task.cancel()
    server.step()   # the last commit: whatever was taken is answered or journaled
    if failure:
        exc = failure[0]
        log.error("%s", exc)
        return ExitCode.UNAVAILABLE if isinstance(exc, ProducerDropped) else ExitCode.CRASH
    t0 = time.monotonic()
    await asyncio.to_thread(relay.close)
    left = journal.held_bytes()
    log.info("stopped: %d event(s) acknowledged, %d shipped; %s left in the journal "
             "(close took %.1f s)", relay.counts.accepted, relay.counts.shipped,
             f"{left} bytes" if left else "nothing", time.monotonic() - t0)
    exporter.push(relay.counts, relay.depth_bytes(), server.connections)
    if metrics_server is not None:
        from shardline.metrics.multiproc import stop

        stop(metrics_server)
    return ExitCode.OK


def _serve_metrics(address: str) -> "WSGIServer | None":
    if not address:
        return None
    from shardline.metrics.multiproc import serve_quietly

    return serve_quietly(address, log)


async def _export(exporter: Exporter, relay: Relay[asyncio.Future[None]], server: Server
                  ) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        while True:
            exporter.push(relay.counts, relay.depth_bytes(), server.connections)
            await asyncio.sleep(EXPORT_S)
