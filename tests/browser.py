"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol, for page tests.

Why by hand and not Playwright or Selenium: the protocol over ``--remote-debugging-pipe``
is NUL-separated JSON on two file descriptors (3: commands in, 4: replies out), so a
page test needs no browser download, no driver binary and no websocket library; the
handful of commands used here (navigate, evaluate, screenshot) are the whole client.
Unlike ``--dump-dom`` it runs in real time, so a test can change the store while the page
is open and wait for the page to show it without a reload.

The launch flags are the ones this machine's closed network needs: without the
background-networking ones Chromium stalls on connections that are refused.
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from typing import Any

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--disable-default-apps", "--mute-audio",
         "--hide-scrollbars"]


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless Chromium with a fresh profile and one page; ``close()`` ends both."""

    def __init__(self, *, width: int = 1280, height: int = 900, timeout_s: float = 30.0):
        exe = shutil.which("chromium")
        if exe is None:
            raise BrowserError("chromium is not installed (Debian package chromium: "
                               "`make sysdeps` installs it)")
        self.timeout_s = timeout_s
        self.dir = tempfile.mkdtemp(prefix="shardline-chromium-")
        self.profile = os.path.join(self.dir, "profile")  # new and empty: no state carried over
        self.log_path = os.path.join(self.dir, "chromium.log")
        log = open(self.log_path, "wb")
        cmd_r, cmd_w = os.pipe()  # we write commands; Chromium reads them on fd 3
        out_r, out_w = os.pipe()  # Chromium writes replies on fd 4; we read them
        # Move the child's ends above 10 first so the dup2 onto 3 and 4 cannot clobber them.
        child_in = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10)
        child_out = fcntl.fcntl(out_w, fcntl.F_DUPFD, 10)
        for fd in (cmd_r, out_w):
            os.close(fd)

        def wire() -> None:
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        self.proc = subprocess.Popen(
            [exe, *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-pipe",
             f"--window-size={width},{height}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=wire, close_fds=False)
        log.close()
        os.close(child_in)
        os.close(child_out)
        self._w = os.fdopen(cmd_w, "wb", buffering=0)
        self._r = os.fdopen(out_r, "rb", buffering=0)
        self._next = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._eof = False
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self.session = self._attach(width, height)
        except BaseException:
            self.close()
            raise

    # -- protocol ------------------------------------------------------------------
    def _read(self) -> None:
        buf = b""
        while True:
            chunk = self._r.read(65536)
            if not chunk:
                break
            buf += chunk
            *msgs, buf = buf.split(b"\0")
            for raw in msgs:
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._replies[msg["id"]] = msg
                        self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def send(self, method: str, params: dict[str, Any] | None = None, *,
             session: str | None = None, timeout_s: float | None = None) -> dict[str, Any]:
        """One command; its ``result``, or ``BrowserError`` with the protocol's error."""
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._w.write(json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        with self._cond:
            while self._next not in self._replies:
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    why = "chromium exited" if self._eof else "timeout"
                    raise BrowserError(f"{method}: no reply ({why}); {self.log_tail()}")
                self._cond.wait(left)
            reply = self._replies.pop(self._next)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def _attach(self, width: int, height: int) -> str:
        deadline = time.monotonic() + self.timeout_s
        while True:
            pages = [t for t in self.send("Target.getTargets")["targetInfos"]
                     if t["type"] == "page"]
            if pages or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        target = pages[0]["targetId"] if pages else self.send(
            "Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget",
                            {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
                  session=session)
        return session

    # -- what tests use ----------------------------------------------------------------
    def open(self, url: str) -> None:
        result = self.send("Page.navigate", {"url": url}, session=self.session)
        if result.get("errorText"):
            raise BrowserError(f"navigate {url}: {result['errorText']}")
        self.wait_for(f"location.href === {json.dumps(url)} && "
                      f"document.readyState === 'complete'", timeout_s=self.timeout_s)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, session=self.session)
        if "exceptionDetails" in result:
            raise BrowserError(f"evaluate: {result['exceptionDetails'].get('text')}: "
                               f"{result['exceptionDetails'].get('exception', {})}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 15.0, poll_s: float = 0.1) -> Any:
        """Evaluate until the value is truthy; that value, or ``BrowserError`` with the last."""
        deadline = time.monotonic() + timeout_s
        value = None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(poll_s)
        raise BrowserError(f"waited {timeout_s}s for {expression!r}; last value {value!r}")

    def text(self, selector: str = "body") -> str:
        """The rendered text of the first element matching ``selector`` ('' if none)."""
        return self.evaluate(f"(document.querySelector({json.dumps(selector)}) || "
                             f"{{innerText: ''}}).innerText")

    def screenshot(self, path: str, *, full_page: bool = True) -> None:
        params: dict[str, Any] = {"format": "png", "captureBeyondViewport": full_page}
        if full_page:
            size = self.evaluate("[document.documentElement.scrollWidth, "
                                 "document.documentElement.scrollHeight]")
            params["clip"] = {"x": 0, "y": 0, "width": size[0], "height": size[1], "scale": 1}
        data = self.send("Page.captureScreenshot", params, session=self.session)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def log_tail(self, lines: int = 15) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return "chromium log: " + " | ".join(f.read().splitlines()[-lines:])
        except OSError:
            return "no chromium log"

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                try:
                    self.send("Browser.close", timeout_s=5)
                except (BrowserError, OSError):
                    pass
                try:
                    self.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
        finally:
            for f in (self._w, self._r):
                try:
                    f.close()
                except OSError:
                    pass
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
