"""The relay's test parts: a ``shardline relay`` process, a real php-fpm pool (Debian's
``php-fpm``) and the smallest FastCGI client that can ask it for a page (the role a web
server plays in front of php-fpm), shared by tests/integration/test_relay.py and
bench/bench_relay.py."""
from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path

from shardline.devstack.fleet import wait_for
from tests.producer_kit import interpreter_env, python

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "examples" / "relay" / "pageview.php"


def php_fpm_binary() -> str:
    found = shutil.which("php-fpm") or next(iter(sorted(glob.glob("/usr/sbin/php-fpm*"))), None)
    assert found, "php-fpm is not installed: `make sysdeps` installs Debian's php-fpm"
    return found


def short_dir() -> str:
    """A directory for unix sockets: their path must stay under ~100 bytes."""
    return tempfile.mkdtemp(prefix="sl-relay-", dir="/tmp")


def relay_env(base: dict[str, str], stream: str, endpoint: str, state: str, sock: str,
              **extra: str) -> dict[str, str]:
    return {**base, **interpreter_env(), "SHARDLINE_KINESIS_STREAM": stream,
            "SHARDLINE_KINESIS_ENDPOINT_URL": endpoint, "SHARDLINE_RELAY_STATE_DIR": state,
            "SHARDLINE_RELAY_SOCKET_PATH": sock, "SHARDLINE_RELAY_SEGMENT_AGE_S": "0.2",
            "SHARDLINE_PRODUCER_LINGER_MS": "10", **extra}


class RelayProcess:
    def __init__(self, env: dict[str, str], log: Path):
        self.env, self.log = env, log
        self.sock = env["SHARDLINE_RELAY_SOCKET_PATH"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "RelayProcess":
        with self.log.open("ab") as err:
            self.proc = python("-m", "shardline.cli", "relay", env=self.env, stderr=err,
                               stdout=subprocess.DEVNULL)
        proc = self.proc
        wait_for(lambda: answers(self.sock) or proc.poll() is not None, 30,
                 "the relay listening", every=0.02)
        assert proc.poll() is None, self.log.read_text()[-3000:]
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 60) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(path)
        except OSError:
            return False
    return True


class PhpFpm:
    """A static pool of ``children`` php-fpm workers on a unix socket, the relay's socket
    in their environment."""

    def __init__(self, directory: str, relay_socket: str, children: int = 4):
        self.dir = directory
        self.sock = os.path.join(directory, "fpm.sock")
        root = "user = root\ngroup = root\n" if os.geteuid() == 0 else ""
        conf = os.path.join(directory, "fpm.conf")
        Path(conf).write_text(
            f"[global]\npid = {directory}/fpm.pid\nerror_log = {directory}/fpm.log\n"
            f"daemonize = no\n\n[relay]\n{root}listen = {self.sock}\npm = static\n"
            f"pm.max_children = {children}\nclear_env = yes\n"
            f"env[SHARDLINE_RELAY_SOCKET] = unix://{relay_socket}\n"
            f"env[SHARDLINE_RELAY_TIMEOUT_MS] = 50\ncatch_workers_output = yes\n"
            f"php_admin_value[error_log] = {directory}/php-errors.log\n")
        argv = [php_fpm_binary(), "--nodaemonize", "--fpm-config", conf, "-n"]
        if os.geteuid() == 0:
            argv.append("--allow-to-run-as-root")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(self.sock) or self.proc.poll() is not None, 30,
                 "php-fpm listening", every=0.02)
        assert self.proc.poll() is None, Path(directory, "fpm.log").read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)   # php-fpm: graceful
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# -- FastCGI (the web server's side), enough for one GET --------------------------------

_BEGIN, _PARAMS, _STDIN, _STDOUT, _STDERR, _END = 1, 4, 5, 6, 7, 3


def _record(kind: int, content: bytes, request_id: int = 1) -> bytes:
    return struct.pack("!BBHHBx", 1, kind, request_id, len(content), 0) + content


def _pair(name: bytes, value: bytes) -> bytes:
    def size(n: int) -> bytes:
        return bytes([n]) if n < 128 else struct.pack("!I", n | 0x80000000)
    return size(len(name)) + size(len(value)) + name + value


def fastcgi_get(sock: str, script: str, uri: str = "/", cookie: str = "",
                timeout: float = 10) -> bytes:
    """GET ``uri`` served by ``script`` through php-fpm's socket; the response (headers
    and body, as php-fpm writes them)."""
    params = {"GATEWAY_INTERFACE": "CGI/1.1", "REQUEST_METHOD": "GET",
              "SCRIPT_FILENAME": script, "SCRIPT_NAME": "/" + os.path.basename(script),
              "REQUEST_URI": uri, "QUERY_STRING": uri.partition("?")[2],
              "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "shop.example",
              "HTTP_HOST": "shop.example", "REMOTE_ADDR": "192.0.2.7",
              "HTTP_USER_AGENT": "relay-test", "HTTP_COOKIE": cookie}
    body = b"".join(_pair(k.encode(), v.encode()) for k, v in params.items())
    msg = (_record(_BEGIN, struct.pack("!HB5x", 1, 0)) + _record(_PARAMS, body) +
           _record(_PARAMS, b"") + _record(_STDIN, b""))
    out = bytearray()
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(sock)
        s.sendall(msg)
        data = b""
        while True:
            while len(data) >= 8:
                _, kind, _, length, pad = struct.unpack("!BBHHB", data[:7])
                if len(data) < 8 + length + pad:
                    break
                content, data = data[8:8 + length], data[8 + length + pad:]
                if kind == _STDOUT:
                    out += content
                elif kind == _END:
                    return bytes(out)
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError(f"php-fpm closed the connection: {bytes(out)!r}")
            data += chunk


def body(response: bytes) -> str:
    return response.partition(b"\r\n\r\n")[2].decode()


def wait_gone(path: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while answers(path) and time.monotonic() < deadline:
        time.sleep(0.02)
