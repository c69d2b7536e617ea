"""A small HTTP/1.1 keep-alive client for load generation.

Simulated workers share a machine with the server they load, so every microsecond the
client spends is taken from the server. aiohttp costs about 250 µs of CPU per request
here; this client writes each request as one bytes object and parses the answer with
httptools (the C parser uvicorn uses), for a fraction of that. It speaks plain
`http://` only, with Content-Length request bodies; answers may be chunked. Connections
are pooled per client and reused while the server keeps them alive.

    client = HTTPClient("http://localhost:3000/")
    status, body = await client.request("POST", "/request_agent", b'{"provider_data": {}}')
    await client.close()
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httptools

__all__ = ["HTTPClient"]


class _Connection(asyncio.Protocol):
    """One keep-alive connection; at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._answer: asyncio.Future[tuple[int, bytes]] | None = None
        self._got_bytes = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"malformed HTTP response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionResetError("the server closed the connection"))

    # httptools callbacks
    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        status = self._parser.get_status_code()
        if not self._parser.should_keep_alive():
            self.close()
        answer, body = self._answer, b"".join(self._body)
        self._answer, self._body = None, []
        if answer is not None and not answer.done():
            answer.set_result((status, body))

    # ours
    def _fail(self, exc: Exception) -> None:
        answer, self._answer = self._answer, None
        if answer is not None and not answer.done():
            answer.set_exception(exc)

    def send(self, data: bytes) -> asyncio.Future[tuple[int, bytes]]:
        assert self.transport is not None and self._answer is None
        self._answer = asyncio.get_running_loop().create_future()
        self._got_bytes = False
        self.transport.write(data)
        return self._answer

    @property
    def answered_nothing(self) -> bool:
        return not self._got_bytes

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class HTTPClient:
    """Requests to one `http://host:port`; idle connections are kept for reuse."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"HTTPClient speaks plain http:// only, not {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self._host_header = f"Host: {parts.netloc}\r\n".encode()
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        _transport, connection = await loop.create_connection(_Connection, self.host, self.port)
        self._all.add(connection)
        return connection

    async def request(
        self, method: str, target: str, body: bytes | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, bytes]:
        """Send one request (`target`: path and query); return (status, body bytes).
        Raises OSError (ConnectionError) when the connection fails."""
        head = [f"{method} {target} HTTP/1.1\r\n".encode(), self._host_header]
        if body is not None:
            head.append(f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n".encode())
        head.append(b"\r\n")
        data = b"".join(head) + (body or b"")
        while self._idle:
            connection = self._idle.pop()
            if connection.closed:
                self._all.discard(connection)
                continue
            try:
                return await self._exchange(connection, data)
            except ConnectionError:
                # a kept-alive connection the server closed before answering anything:
                # send the request again on a new connection (as browsers do)
                if not connection.answered_nothing:
                    raise
        return await self._exchange(await self._connect(), data)

    async def _exchange(self, connection: _Connection, data: bytes) -> tuple[int, bytes]:
        try:
            answer = await connection.send(data)
        except BaseException:
            connection.close()
            self._all.discard(connection)
            raise
        if connection.closed:
            self._all.discard(connection)
        else:
            self._idle.append(connection)
        return answer

    async def close(self) -> None:
        for connection in list(self._all):
            connection.close()
        self._all.clear()
        self._idle.clear()
        await asyncio.sleep(0)  # let the transports close
