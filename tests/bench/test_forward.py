"""The forwarder the benchmark and the fault tests use: a cable that can be pulled."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest

from bench.forward import Forwarder
from tests.fakes.tgi import FakeTGI
from tests.support.processes import free_port


def _health(url: str) -> int:
    with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
        status: int = resp.status
        return status


def test_forwards_refuses_when_unplugged_and_cuts_open_connections() -> None:
    with FakeTGI() as tgi, Forwarder(free_port(), int(tgi.url.rsplit(":", 1)[1])) as cable:
        assert _health(cable.url) == 200
        held = socket.create_connection(("127.0.0.1", cable.port), timeout=5)
        held.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert held.recv(1024).startswith(b"HTTP/1.1 200")

        cable.unplug()
        assert not cable.plugged
        with pytest.raises(urllib.error.URLError) as refused:
            _health(cable.url)
        assert isinstance(refused.value.reason, ConnectionRefusedError)
        # The connection that was open is cut: reset, or closed without another byte.
        try:
            held.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert held.recv(1024) == b""
        except ConnectionError:
            pass
        held.close()

        cable.plug()  # the same port again
        assert _health(cable.url) == 200
        assert cable.connections >= 3


def test_a_target_that_is_down_looks_like_a_refused_connection() -> None:
    with (
        Forwarder(free_port(), free_port()) as cable,
        pytest.raises((urllib.error.URLError, ConnectionError)),
    ):
        _health(cable.url)
