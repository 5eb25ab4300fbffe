"""supervisord's XML-RPC interface, as the agent uses it: what ``supervisorctl update`` does.

``reload()`` is ``supervisor.reloadConfig`` (re-read the config and its include files; the
answer lists the process groups added, changed and removed since); ``add`` / ``remove``
are ``addProcessGroup`` / ``removeProcessGroup``; ``start`` / ``stop`` the group calls with
``wait=False``, so a consumer's graceful stop (SIGTERM: drain, checkpoint, release the
lease; up to stopwaitsecs) never blocks the agent's loop and its heartbeat. Each consumer
stays its own supervisord program with its own log.

Faults that only say "already so" (added, started, not running, gone) are not errors; any
other fault, and a socket or protocol failure, is ``ServiceUnavailable`` (the connection is
rebuilt), so the agent logs it and tries again at its next step. No answer at all (the
socket refused or gone, a timeout) is ``Unreachable``, its subclass: the agent counts those,
since supervisord dying alone leaves its programs running without it.
"""
from __future__ import annotations

import os
import socket
import xmlrpc.client
from dataclasses import dataclass
from typing import Any

from shardline.errors import ConfigError, ServiceUnavailable

RUNNING_STATES = frozenset({"STARTING", "RUNNING", "BACKOFF", "STOPPING"})
RPC_TIMEOUT_S = 30.0

# supervisor.xmlrpc.Faults (fixed numbers of the protocol)
BAD_NAME, ALREADY_STARTED, NOT_RUNNING = 10, 60, 70
ALREADY_ADDED, STILL_RUNNING, SHUTDOWN_STATE = 90, 91, 6


class Unreachable(ServiceUnavailable):
    """supervisord did not answer at all: not running, or not listening on its socket."""


@dataclass(frozen=True)
class Proc:
    """One process of a group, as ``getAllProcessInfo`` reports it."""

    group: str
    name: str
    state: str  # statename: STOPPED, STARTING, RUNNING, BACKOFF, STOPPING, EXITED, FATAL
    started: bool  # has supervisord started it since the group was added?
    pid: int = 0

    @property
    def running(self) -> bool:
        return self.state in RUNNING_STATES


def server_url(configured: str) -> str:
    """The setting, else ``$SUPERVISOR_SERVER_URL`` (supervisord sets it for its programs)."""
    url = configured or os.environ.get("SUPERVISOR_SERVER_URL", "")
    if not url:
        raise ConfigError("agent.serverurl is required outside supervisord: set [agent] "
                          "serverurl = unix:///path/to/supervisor.sock or "
                          "SHARDLINE_AGENT_SERVERURL")
    if not url.startswith(("unix://", "http://")):
        raise ConfigError(f"agent.serverurl {url!r} must start with unix:// or http://")
    return url


class Supervisor:
    """One supervisord over its socket (``unix://...``) or HTTP port (``http://...``)."""

    def __init__(self, url: str, timeout_s: float = RPC_TIMEOUT_S):
        from supervisor.xmlrpc import SupervisorTransport

        self.url = url
        self._transport = SupervisorTransport(None, None, url)
        make = self._transport._get_connection

        def connection() -> Any:
            conn = make()
            conn.timeout = timeout_s
            if url.startswith("unix://"):
                path = conn.socketfile

                def connect() -> None:
                    conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    conn.sock.settimeout(timeout_s)
                    conn.sock.connect(path)

                conn.connect = connect
            return conn

        self._transport._get_connection = connection
        self._rpc = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=self._transport)

    def _call(self, method: str, *args: Any, ok: tuple[int, ...] = ()) -> Any:
        """The call's result, or the ``Fault`` itself when its code is in ``ok``."""
        try:
            return getattr(self._rpc.supervisor, method)(*args)
        except xmlrpc.client.Fault as fault:
            if fault.faultCode in ok:
                return fault
            # SHUTDOWN_STATE, CANT_REREAD (a config file does not parse) and the rest:
            # nothing this call can fix; the agent tries again at its next step.
            raise ServiceUnavailable(f"supervisord {method}{args!r}: {fault.faultString}") \
                from None
        except (OSError, xmlrpc.client.ProtocolError) as exc:
            self._transport.close()
            # a ProtocolError is an HTTP answer (supervisord is there); an OSError is none
            error = Unreachable if isinstance(exc, OSError) else ServiceUnavailable
            raise error(f"supervisord at {self.url}: {method}: {exc}") from None

    def state(self) -> str:
        """RUNNING, RESTARTING, SHUTDOWN ..."""
        result = self._call("getState", ok=(SHUTDOWN_STATE,))
        return "SHUTDOWN" if isinstance(result, xmlrpc.client.Fault) else result["statename"]

    def processes(self) -> dict[str, Proc]:
        """group name -> its (first) process: the agent's groups have one process each."""
        out: dict[str, Proc] = {}
        for info in self._call("getAllProcessInfo"):
            out.setdefault(info["group"], Proc(info["group"], info["name"], info["statename"],
                                               bool(info["start"]), int(info["pid"] or 0)))
        return out

    def reload(self) -> tuple[list[str], list[str], list[str]]:
        """(added, changed, removed) group names after re-reading the config files."""
        added, changed, removed = self._call("reloadConfig")[0]
        return list(added), list(changed), list(removed)

    def add(self, group: str) -> None:
        self._call("addProcessGroup", group, ok=(ALREADY_ADDED,))

    def remove(self, group: str) -> bool:
        """False while a process of the group still runs (stop it first)."""
        result = self._call("removeProcessGroup", group, ok=(BAD_NAME, STILL_RUNNING))
        return not (isinstance(result, xmlrpc.client.Fault) and result.faultCode == STILL_RUNNING)

    def start(self, group: str) -> None:
        self._call("startProcessGroup", group, False, ok=(ALREADY_STARTED, BAD_NAME))

    def stop(self, group: str) -> None:
        """Ask for a stop (SIGTERM) and return at once; poll ``processes()`` for the end."""
        self._call("stopProcessGroup", group, False, ok=(NOT_RUNNING, BAD_NAME))
