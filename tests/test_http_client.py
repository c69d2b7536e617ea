"""The load generator's keep-alive HTTP client, against raw sockets that misbehave."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from mephisto.testing.http_client import HTTPClient

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[str]:
    handlers: list[asyncio.Task[None]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    def start(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handlers.append(asyncio.ensure_future(serve(reader, writer)))

    server = await asyncio.start_server(start, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.close()
        await server.wait_closed()
        await asyncio.wait_for(asyncio.gather(*handlers, return_exceptions=True), 5)


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    length = 0
    for line in lines[1:]:
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    body = await reader.readexactly(length) if length else b""
    return lines[0], body


def _answer(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


async def test_keeps_one_connection_alive_and_echoes() -> None:
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        while True:
            try:
                line, body = await _read_request(reader)
            except asyncio.IncompleteReadError:
                break
            writer.write(_answer(line.encode() + b"|" + body))
            await writer.drain()
        writer.close()

    async with raw_server(handler) as url:
        client = HTTPClient(url)
        for i in range(3):
            status, body = await client.request("POST", f"/echo?i={i}", b'{"n": %d}' % i)
            assert status == 200
            assert body == b'POST /echo?i=%d HTTP/1.1|{"n": %d}' % (i, i)
        await client.close()
    assert connections == 1


async def test_reads_chunked_answers_and_error_statuses() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        await writer.drain()
        writer.close()

    async with raw_server(handler) as url:
        client = HTTPClient(url)
        assert await client.request("GET", "/missing") == (404, b"hello world")
        await client.close()


async def test_a_request_the_server_drops_unanswered_is_sent_again() -> None:
    """The race of keep-alive: the server closes an idle connection just as a request
    is sent on it. Nothing was answered, so the request goes again on a new one."""
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        first = connections == 1
        await _read_request(reader)
        writer.write(_answer(b"answer on connection %d" % connections))
        await writer.drain()
        if first:
            await _read_request(reader)  # the next request: dropped without an answer

    async with raw_server(handler) as url:
        client = HTTPClient(url)
        assert await client.request("GET", "/") == (200, b"answer on connection 1")
        assert await client.request("GET", "/") == (200, b"answer on connection 2")
        await client.close()
    assert connections == 2


async def test_connection_close_answers_are_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(_answer(b"bye", "Connection: close\r\n"))
        await writer.drain()
        writer.close()

    async with raw_server(handler) as url:
        client = HTTPClient(url)
        assert await client.request("GET", "/a") == (200, b"bye")
        assert await client.request("GET", "/b") == (200, b"bye")
        await client.close()


async def test_a_reset_mid_answer_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        writer.close()

    async with raw_server(handler) as url:
        client = HTTPClient(url)
        with pytest.raises(ConnectionError):
            await client.request("GET", "/")
        await client.close()


async def test_a_malformed_answer_is_an_error() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        await reader.read()  # until the client hangs up
        writer.close()

    async with raw_server(handler) as url:
        client = HTTPClient(url)
        with pytest.raises(ConnectionError, match="malformed"):
            await client.request("GET", "/")
        await client.close()


async def test_refused_connections_raise_oserror() -> None:
    async with raw_server(lambda r, w: asyncio.sleep(0)) as url:
        pass  # the port is free again
    client = HTTPClient(url)
    with pytest.raises(OSError):
        await client.request("GET", "/")


def test_only_plain_http() -> None:
    with pytest.raises(ValueError, match="http://"):
        HTTPClient("https://example.org/")
