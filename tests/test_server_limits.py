"""Connection-level limits (mephisto.server.http_limits) under real uvicorn, over real
sockets: one client must not slow or exhaust the task server for the others.

Limits are tiny here so that every deadline passes within a fraction of a second."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, replace
from pathlib import Path

import aiohttp
import pytest

from mephisto.server.app import create_app
from mephisto.server.backend import ServerSettings
from mephisto.server.http_limits import (
    RESERVED_FILES,
    ConnectionLimits,
    default_max_connections,
    task_server_config,
)
from mephisto.testing.fake_backend import FakeBackend
from mephisto.testing.http_client import HTTPClient
from mephisto.testing.server import fake_server_process, running_server
from mephisto.testing.worker import SimulatedWorker

WS_LIMIT = 2048
LIMITS = ConnectionLimits(
    max_request_line=1024,
    max_header_bytes=4096,
    header_timeout=0.3,
    body_timeout=0.3,
    keep_alive_timeout=5,
    ws_idle_timeout=0.5,
    max_connections=50,
    retry_after=3,
)
HEAD_BUDGET = LIMITS.max_request_line + LIMITS.max_header_bytes

Answer = tuple[int, dict[str, str], bytes]
Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def serve(limits: ConnectionLimits = LIMITS) -> AsyncIterator[str]:
    app = create_app(FakeBackend(), ServerSettings(max_ws_message_bytes=WS_LIMIT))
    async with running_server(app, limits=limits, ws_max_message_bytes=WS_LIMIT) as url:
        yield url


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with serve() as base_url:
        yield base_url


_open: list[asyncio.StreamWriter] = []


async def connect(url: str) -> Stream:
    """A raw connection to the server, closed at the end of the test."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    _open.append(writer)
    return reader, writer


@pytest.fixture(autouse=True)
async def _close_connections() -> AsyncIterator[None]:
    yield
    while _open:
        writer = _open.pop()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_answer(reader: asyncio.StreamReader, timeout: float = 2.0) -> Answer:
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return int(status_line.split()[1]), headers, body


async def closed_by_server(reader: asyncio.StreamReader, timeout: float = 2.0) -> bool:
    """True once the server closed the connection (EOF or reset) within `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def request(stream: Stream, head: bytes, body: bytes = b"") -> Answer:
    reader, writer = stream
    writer.write(head + body)
    await writer.drain()
    return await read_answer(reader)


def get(path: str = "/healthz", extra: bytes = b"") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: test\r\n".encode() + extra + b"\r\n"


async def healthz(url: str) -> int:
    client = HTTPClient(url)
    try:
        status, _ = await asyncio.wait_for(client.request("GET", "/healthz"), 2)
    finally:
        await client.close()
    return status


def error_of(body: bytes) -> str:
    error = json.loads(body)["error"]
    assert isinstance(error, str) and error
    return error


# -- sizes ----------------------------------------------------------------------------


async def stream_huge_header(url: str, megabytes: int, deadline: float) -> tuple[int, int]:
    """Send one request head whose header never ends, reading all along; (status of the
    answer or 0, bytes sent)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    answer = asyncio.ensure_future(read_answer(reader, timeout=30))
    chunk = b"a" * 65536
    sent = 0
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: test\r\nX-Big: ")
        while sent < megabytes * 2**20 and not answer.done() and time.monotonic() < deadline:
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(0)  # let the answer be read, as a browser would
            sent += len(chunk)
    except ConnectionError:
        pass  # the server stopped reading and closed: expected once it has answered
    try:
        status, _, body = await asyncio.wait_for(answer, 2)
        error_of(body)
    except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
        status = 0
    finally:
        answer.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return status, sent


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
async def test_huge_headers_get_431_at_once_and_others_stay_fast() -> None:
    # the server in a process of its own: its memory is measured apart from the clients'
    with fake_server_process({"max_ws_message_bytes": WS_LIMIT}, asdict(LIMITS)) as server:
        url = server.url
        await healthz(url)
        rss_before = server.rss_bytes()
        outcomes: list[tuple[int, int]] = []
        stop = time.monotonic() + 1.5

        async def attacker() -> None:  # one connection after another, each a 100 MB header
            while time.monotonic() < stop:
                outcomes.append(await stream_huge_header(url, 100, stop + 3))

        latencies: list[float] = []
        peak_rss = rss_before

        async def other_client() -> None:
            nonlocal peak_rss
            while time.monotonic() < stop:
                t = time.perf_counter()
                assert await healthz(url) == 200
                latencies.append(time.perf_counter() - t)
                peak_rss = max(peak_rss, server.rss_bytes())
                await asyncio.sleep(0.005)

        await asyncio.gather(attacker(), other_client())
    assert outcomes and all(status == 431 for status, _ in outcomes), outcomes
    # refused after the first bytes past the cap, not after 100 MB: what was sent before
    # the refusal arrived is whatever the kernel's socket buffers took
    assert max(sent for _, sent in outcomes) < 32 * 2**20
    # without the cap another client waits 2-4 s; 1 s leaves room for a loaded CI machine
    assert len(latencies) > 20 and max(latencies) < 1.0, sorted(latencies)[-5:]
    assert peak_rss - rss_before < 8 * 2**20


async def test_head_limit_counts_request_line_and_headers_exactly(url: str) -> None:
    def head_of_size(size: int) -> bytes:
        start = get(extra=b"X-Pad: ")
        return start[:-2] + b"p" * (size - len(start) - 2) + b"\r\n\r\n"

    fits, too_big = head_of_size(HEAD_BUDGET), head_of_size(HEAD_BUDGET + 1)
    assert len(fits) == HEAD_BUDGET
    stream = await connect(url)
    # In one write, and in many small reads, the largest head is served: twice on the
    # same connection, so the count starts again for each request.
    assert (await request(stream, fits))[0] == 200
    for i in range(0, len(fits) - 1, 64):
        stream[1].write(fits[i:min(i + 64, len(fits) - 1)])
        await asyncio.sleep(0)
    assert (await request(stream, fits[-1:]))[0] == 200
    # A head in the same read as its body and the next request: each counted as its own.
    body = json.dumps({"USED_AGENT_ID": None, "error_data": "x" * 3000}).encode()
    post = (b"POST /log_error HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    stream[1].write(post + body + fits)
    assert (await read_answer(stream[0]))[0] == 200
    assert (await read_answer(stream[0]))[0] == 200
    # One byte more is refused, and the connection closed.
    status, headers, answer = await request(stream, too_big)
    assert status == 431 and headers["connection"] == "close"
    assert "header" in error_of(answer)
    assert await closed_by_server(stream[0])


async def test_header_fields_and_trailers_are_limited_too(url: str) -> None:
    fields = LIMITS.max_header_fields
    # Many small fields: in budget, but each a Python object. 100 pass, 101 do not.
    stream = await connect(url)
    many = b"".join(b"X-%d: v\r\n" % i for i in range(fields - 1))  # + Host
    assert (await request(stream, get(extra=many)))[0] == 200
    status, _, body = await request(stream, get(extra=many + b"X-One-More: v\r\n"))
    assert status == 431 and "fields" in error_of(body)
    # A chunked body in small chunks, with a trailer, is served.
    payload = json.dumps({"USED_AGENT_ID": None, "error_data": "x" * 3000}).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(payload[i:i + 7]), payload[i:i + 7])
                      for i in range(0, len(payload), 7))
    chunked = (b"POST /log_error HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n")
    stream = await connect(url)
    assert (await request(stream, chunked, chunks + b"0\r\nX-Trailer: t\r\n\r\n"))[0] == 200
    # A trailer without end is refused like a header without end (httptools would
    # keep it all in memory).
    answer = asyncio.ensure_future(read_answer(stream[0]))
    stream[1].write(chunked + chunks + b"0\r\nX-Trailer: ")
    with contextlib.suppress(ConnectionError):
        for _ in range(2 * HEAD_BUDGET // 1024):
            stream[1].write(b"t" * 1024)
            await stream[1].drain()
            await asyncio.sleep(0)  # let the answer in before a write fails
    status, _, body = await answer
    assert status == 431 and "trailer" in error_of(body)
    assert await closed_by_server(stream[0])


async def test_long_url_gets_414(url: str) -> None:
    longest = "/healthz?q=".ljust(LIMITS.max_request_line, "x")
    stream = await connect(url)
    assert (await request(stream, get(longest)))[0] == 200
    status, _, body = await request(stream, get(longest + "x"))
    assert status == 414 and "request line" in error_of(body)
    assert await closed_by_server(stream[0])
    assert await healthz(url) == 200


# -- time -----------------------------------------------------------------------------


async def test_connections_without_a_complete_head_are_closed(url: str) -> None:
    silent = [await connect(url) for _ in range(10)]
    partial = await connect(url)
    partial[1].write(b"GET /healthz HTTP/1.1\r\nHost: te")
    trickle = await connect(url)  # slowloris: a byte of header every 50 ms, never done

    async def drip() -> None:
        with contextlib.suppress(ConnectionError):
            for byte in b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"s" * 100:
                trickle[1].write(bytes([byte]))
                await trickle[1].drain()
                await asyncio.sleep(0.05)

    dripping = asyncio.ensure_future(drip())
    t = time.monotonic()
    # Nothing sent: closed without an answer. Part of a head: 408.
    for reader, _ in silent:
        assert await closed_by_server(reader)
        assert await reader.read() == b""
    for reader, _ in (partial, trickle):
        status, _, body = await read_answer(reader)
        assert status == 408 and "timeout" in error_of(body)
        assert await closed_by_server(reader)
    elapsed = time.monotonic() - t
    assert LIMITS.header_timeout * 0.8 < elapsed < 1.5
    dripping.cancel()
    assert await healthz(url) == 200


async def test_keep_alive_outlives_the_header_deadline(url: str) -> None:
    """The header deadline runs from connecting, or from a request's first byte; a
    kept-alive connection idle between requests is the keep-alive timeout's."""
    silent = await connect(url)
    stream = await connect(url)
    for _ in range(200):
        assert (await request(stream, get()))[0] == 200
    await asyncio.sleep(LIMITS.header_timeout * 2)
    for _ in range(200):
        assert (await request(stream, get()))[0] == 200
    assert await closed_by_server(silent[0], timeout=0.1)
    assert not stream[0].at_eof()


async def test_stalled_request_body_is_cut_off_a_slow_one_is_not(url: str) -> None:
    body = json.dumps({"USED_AGENT_ID": None, "error_data": "x" * 200}).encode()
    head = (b"POST /log_error HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body))
    stalled = await connect(url)
    stalled[1].write(head + body[:50])
    slow = await connect(url)
    slow[1].write(head)
    t = time.monotonic()
    for i in range(0, len(body), 20):  # a piece every 0.1 s: 1.2 s in all, never idle 0.3 s
        slow[1].write(body[i:i + 20])
        await asyncio.sleep(0.1)
    assert time.monotonic() - t > 3 * LIMITS.body_timeout
    assert (await read_answer(slow[0]))[0] == 200
    assert await closed_by_server(stalled[0], timeout=0.1)


# -- number ---------------------------------------------------------------------------


async def test_past_max_connections_new_ones_get_503_right_away() -> None:
    limits = replace(LIMITS, max_connections=6, header_timeout=10.0, ws_idle_timeout=10.0)
    async with serve(limits) as url, aiohttp.ClientSession() as session:
        held = [await connect(url) for _ in range(5)]
        ws = await session.ws_connect(url.replace("http", "ws") + "/")  # counts too
        t = time.monotonic()
        refused = await connect(url)
        status, headers, body = await read_answer(refused[0])
        assert time.monotonic() - t < 0.5
        assert status == 503 and headers["retry-after"] == "3"
        assert headers["connection"] == "close" and "too many" in error_of(body)
        assert await closed_by_server(refused[0])
        client = HTTPClient(url)
        assert (await client.request("GET", "/healthz"))[0] == 503
        await client.close()
        # one closes: there is room again
        held.pop()[1].close()
        async with asyncio.timeout(2):
            while (status := await healthz(url)) != 200:
                assert status == 503
                await asyncio.sleep(0.01)
        await ws.close()


def test_default_connection_limit_leaves_descriptors_for_the_rest() -> None:
    assert default_max_connections(1024) == 1024 - RESERVED_FILES
    assert default_max_connections(100) == 16
    assert default_max_connections(10**6) == 16_384
    config = task_server_config(create_app(FakeBackend()))
    config.load()
    limits = config.http_protocol_class.limits  # type: ignore[attr-defined]
    assert limits.max_connections == default_max_connections()
    assert config.ws_max_size == ServerSettings().max_ws_message_bytes


def test_open_files_limit_is_raised_to_the_hard_limit() -> None:
    code = (
        "import resource\n"
        "from mephisto.server.http_limits import raise_open_files_limit\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))\n"
        "assert raise_open_files_limit() == resource.getrlimit(resource.RLIMIT_NOFILE)[0]\n"
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard or hard < 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=os.environ, timeout=30, check=True)
    assert result.stdout.strip() == "True"


# -- websockets -----------------------------------------------------------------------


async def test_heartbeating_websocket_stays_a_silent_one_is_closed(url: str) -> None:
    async with SimulatedWorker(url, "w1") as worker, aiohttp.ClientSession() as session:
        worker.heartbeat_interval = 0.1
        await worker.request_agent()
        await worker.connect()
        silent = await session.ws_connect(url.replace("http", "ws") + "/")
        await asyncio.sleep(1.5)  # past every timeout of LIMITS
        assert worker.ws is not None and not worker.ws.closed
        since = len(worker.received)
        await worker.wait_for_packet("heartbeat", since=since, timeout=1)
        message = await asyncio.wait_for(silent.receive(), 1)
        assert message.type == aiohttp.WSMsgType.CLOSE and message.data == 1001
        assert silent.closed


async def test_websocket_message_over_the_limit_closes_with_1009(url: str) -> None:
    async with SimulatedWorker(url, "w1") as worker:
        await worker.request_agent()
        await worker.connect()
        await worker.send_raw(json.dumps({"packet_type": "heartbeat",
                                          "pad": "x" * (WS_LIMIT - 100)}))
        await worker.wait_for_packet("heartbeat")  # under the limit: answered
        await worker.send_raw("x" * (WS_LIMIT + 1))
        assert await worker.wait_closed(timeout=2) == 1009


class _Recorder(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True


def test_an_answers_head_goes_out_with_its_body_in_one_write() -> None:
    from mephisto.server.http_limits import _AnswerWriter

    sent = _Recorder()
    answer = _AnswerWriter(sent)
    answer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # interim: at once
    answer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n")
    assert sent.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    answer.write(b"ab")
    answer.write(memoryview(b"cd"))
    assert sent.writes[1:] == [b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nab", b"cd"]

    cut = _Recorder()
    answer = _AnswerWriter(cut)
    answer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
    answer.close()  # the app failed after starting its answer: the head, then the close
    assert cut.writes == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"] and cut.closed
