"""A TCP forwarder on a fixed loopback port, in a thread with its own event loop.

The benchmark uses it to put its fakes on ports that a Parley started elsewhere was told
about; the fault tests use it as a cable to pull: `unplug()` stops listening and cuts every
open connection (new ones are refused, streams in flight break, as when a server dies),
`plug()` listens again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
_CHUNK = 64 * 1024


class Forwarder:
    def __init__(self, port: int, target_port: int, *, host: str = "127.0.0.1") -> None:
        self.port = port
        self.target_port = target_port
        self.host = host
        self.connections = 0  # accepted in all, for tests and reports
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def plugged(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        self._thread.start()
        self.plug()

    def stop(self) -> None:
        if self._thread.is_alive():
            self.unplug()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        self._loop.close()

    def plug(self) -> None:
        """Listen (again) on `port`; raises OSError if the port is taken."""
        self._call(self._listen())

    def unplug(self) -> None:
        """Refuse new connections and reset the open ones."""
        self._call(self._cut())

    def __enter__(self) -> Forwarder:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._pipe, self.host, self.port, reuse_address=True
            )

    async def _cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._open):
            writer.transport.abort()  # RST: the peer sees a reset, not a clean end
        self._open.clear()

    async def _pipe(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        if self._server is None:  # accepted just as the cable was pulled
            client_w.transport.abort()
            return
        self.connections += 1
        try:
            target_r, target_w = await asyncio.open_connection(self.host, self.target_port)
        except OSError:
            client_w.transport.abort()
            return
        pair = {client_w, target_w}
        self._open |= pair
        try:
            await asyncio.gather(_copy(client_r, target_w), _copy(target_r, client_w))
        finally:
            self._open -= pair
            for writer in pair:
                writer.close()


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await source.read(_CHUNK):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
