"""gearman_admin: parsing the admin `status` reply; a dead or silent server shows as down."""
from __future__ import annotations

import socket
import threading

import pytest

from shardline.ops import gearman_admin as ga


def test_parse_status_lines():
    text = "shardline_stage\t7\t2\t4\nother\t0\t0\t1\n.\n"
    assert ga.parse_status(text) == [ga.FunctionStatus("other", 0, 0, 1),
                                     ga.FunctionStatus("shardline_stage", 7, 2, 4)]
    assert ga.parse_status(text)[1].queued == 5


def test_parse_empty_and_crlf():
    assert ga.parse_status(".\n") == []
    assert ga.parse_status("f\t1\t0\t0\r\n.\r\n") == [ga.FunctionStatus("f", 1, 0, 0)]


def test_parse_errors():
    with pytest.raises(ga.AdminProtocolError, match="UNKNOWN_COMMAND"):
        ga.parse_status("ERR UNKNOWN_COMMAND Unknown+server+command\n")
    with pytest.raises(ga.AdminProtocolError):
        ga.parse_status("f\t1\tx\t0\n.\n")
    with pytest.raises(ga.AdminProtocolError):
        ga.parse_status("just text\n.\n")


def test_totals_across_servers():
    a = ga.ServerStatus("a:1", True, (ga.FunctionStatus("f", 3, 1, 2),))
    b = ga.ServerStatus("b:1", True, (ga.FunctionStatus("f", 1, 1, 2),
                                      ga.FunctionStatus("g", 0, 0, 0)))
    c = ga.ServerStatus("c:1", False, error="connection refused")
    assert ga.totals([a, b, c]) == {"f": {"total": 4, "running": 2, "queued": 2, "workers": 4},
                                    "g": {"total": 0, "running": 0, "queued": 0, "workers": 0}}


def _fake_server(reply_chunks, hold=False):
    """A one-shot TCP server sending the reply in chunks (or nothing, if hold)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    done = threading.Event()

    def run():
        conn, _ = srv.accept()
        with conn:
            conn.recv(100)
            for chunk in reply_chunks:
                conn.sendall(chunk)
            if hold:
                done.wait(5)
        srv.close()

    threading.Thread(target=run, daemon=True).start()
    return f"127.0.0.1:{port}", done


def test_server_status_reads_until_terminator():
    addr, _ = _fake_server([b"f\t2\t1\t", b"3\n", b"g\t0\t0\t0\n.", b"\n"])
    st = ga.server_status(addr, timeout=2)
    assert st.up and st.functions == (ga.FunctionStatus("f", 2, 1, 3),
                                      ga.FunctionStatus("g", 0, 0, 0))


def test_silent_server_is_down_not_a_hang():
    addr, done = _fake_server([b"f\t2\t1\t3\n"], hold=True)  # never sends "."
    try:
        st = ga.server_status(addr, timeout=0.3)
    finally:
        done.set()
    assert not st.up and "timed out" in st.error


def test_refused_and_bad_address_are_down():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    st = ga.server_status(f"127.0.0.1:{port}", timeout=1)
    assert not st.up and st.error == "connection refused"
    assert not ga.server_status("host:notaport").up
    out = ga.cluster_status([f"127.0.0.1:{port}"], timeout=0.5)
    assert out[0].to_dict()["up"] is False
