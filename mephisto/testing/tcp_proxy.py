"""A TCP proxy on its own thread, for tests and benchmarks: a link that can be cut, or a
round-robin load balancer in front of several routers.

    with TcpProxy([("127.0.0.1", 8001), ("127.0.0.1", 8002)]) as proxy:
        url = proxy.url          # each new connection goes to the next target
        proxy.cut()              # drop every open connection (both ends see a reset)
        proxy.refuse(True)       # new connections are closed at once, until refuse(False)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import threading
from typing import Self


class TcpProxy:
    def __init__(self, targets: list[tuple[str, int]], host: str = "127.0.0.1") -> None:
        if not targets:
            raise ValueError("a proxy needs at least one target")
        self.targets = targets
        self.host = host
        self.port = 0
        self.connections = 0  # accepted so far
        self.per_target = [0] * len(targets)
        self._next = itertools.cycle(range(len(targets)))
        self._refusing = False
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="tcp-proxy")
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> Self:
        self._thread.start()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, sock=sock, backlog=1024), self._loop
        ).result(10)
        return self

    def cut(self) -> int:
        """Close every open connection; how many there were."""
        return asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(10)

    async def _cut(self) -> int:
        writers = list(self._open)
        for writer in writers:
            writer.transport.abort()
        self._open.clear()
        return len(writers)

    def refuse(self, refusing: bool) -> None:
        """While refusing, new connections are closed as soon as they are accepted."""
        self._refusing = refusing

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            async def stop() -> None:
                server.close()  # on the proxy's loop: asyncio servers are not thread-safe
                await self._cut()

            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.transport.abort()
            return
        index = next(self._next)
        self.connections += 1
        self.per_target[index] += 1
        host, port = self.targets[index]
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.transport.abort()
            return
        for sock_writer in (writer, up_writer):
            sock = sock_writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._open.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._open.discard(writer)
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()


__all__ = ["TcpProxy"]
