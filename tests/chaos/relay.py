"""A relay source beside the producer: a client sends page views as JSON lines to a
``shardline relay`` on a unix socket, a few per connection, and keeps what the relay
acknowledged (``OK <event_id>``); the plan SIGKILLs the relay (kind ``relay``) and the
campaign starts it again at once. A client refused while it is down moves on.

The verdict: every acknowledged event is exactly one page_views row. An event sent but
not acknowledged (the relay died before answering) may be a row or not, but never two.
The relay reaches Kinesis through the campaign's fault proxy (see ``tests.chaos.tail``).
"""
from __future__ import annotations

import json
import logging
import shutil
import socket
import threading
import time
from pathlib import Path

from shardline.sample import events
from tests.relay_kit import RelayProcess, relay_env, short_dir

log = logging.getLogger("chaos")
KIND = "relay"
PER_CONNECTION = 10


class RelaySource(threading.Thread):
    def __init__(self, work: Path, env: dict[str, str], stream: str, kinesis_url: str,
                 count: int, rate: float, seed: int):
        super().__init__(daemon=True)
        self.sock_dir = short_dir()
        self.env = relay_env(env, stream, kinesis_url, str(work / "relay-journal"),
                             f"{self.sock_dir}/relay.sock")
        self.relay = RelayProcess(self.env, work / "relay.log")
        self.count, self.rate, self.seed = count, rate, seed
        self.acked: set[str] = set()
        self.sent: set[str] = set()  # sent, whatever the answer
        self.refused = 0  # connections refused or cut (the relay was down or died)
        self.kills = 0
        self.stopping = threading.Event()
        self.lock = threading.Lock()  # the client never talks to a relay being restarted

    def start_all(self) -> None:
        self.relay.start()
        self.start()

    def kill(self) -> bool:
        with self.lock:
            if self.relay.proc is None or self.relay.proc.poll() is not None:
                self.relay.start()
                return False
            self.relay.kill()
            self.kills += 1
            log.info("SIGKILL relay (pid %d)", self.relay.proc.pid)
        time.sleep(0.3)  # down for a moment: clients are refused
        with self.lock:
            self.relay.start()
        return True

    def run(self) -> None:
        gen = (data for kind, _, data in events.generate(self.count, 0.0, self.seed)
               if kind == events.GOOD)
        pause = PER_CONNECTION / max(self.rate, 1.0)
        batch: list[bytes] = []
        for data in gen:
            if self.stopping.is_set():
                break
            batch.append(data)
            if len(batch) < PER_CONNECTION:
                continue
            self._send(batch)
            batch = []
            time.sleep(pause)
        if batch:
            self._send(batch)

    def _send(self, batch: list[bytes]) -> None:
        ids = [json.loads(d)["event_id"] for d in batch]
        got = b""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(5)
                s.connect(self.relay.sock)
                self.sent.update(ids)
                s.sendall(b"".join(d.rstrip(b"\n") + b"\n" for d in batch))
                while got.count(b"\n") < len(batch):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += chunk
        except OSError:
            self.refused += 1
        for line in got.decode(errors="replace").splitlines():
            if line.startswith("OK "):
                self.acked.add(line[3:])

    def finish(self) -> None:
        """The client has sent everything; a relay is running to ship the journal."""
        self.join()
        with self.lock:
            if self.relay.proc is None or self.relay.proc.poll() is not None:
                self.relay.start()

    def stop(self) -> None:
        self.stopping.set()
        self.relay.stop()
        shutil.rmtree(self.sock_dir, ignore_errors=True)

    def check(self, v: object, rows: dict[str, int]) -> None:
        """``rows``: page_views' event_ids with their counts."""
        v.relay, v.relay_sent, v.relay_acked = True, len(self.sent), len(self.acked)
        v.relay_kills, v.relay_refused = self.kills, self.refused
        v.relay_missing = len(self.acked - rows.keys())
        v.relay_duplicated = sum(rows.get(i, 0) - 1 for i in self.sent if rows.get(i, 0) > 1)
        v.relay_unacked_landed = sum(1 for i in self.sent - self.acked if i in rows)
        if v.relay_missing or v.relay_duplicated:
            v.problems.append(f"relay: acknowledged but missing {v.relay_missing} (e.g. "
                              f"{sorted(self.acked - rows.keys())[:2]}), duplicated "
                              f"{v.relay_duplicated}")
