"""Connection-level limits of the task server, and the uvicorn config that applies them.

One client must not slow or exhaust the server. `ServerSettings` limits what a request
may carry once it reaches the app; these limits act below the app, in uvicorn's
protocol objects, on every connection:

- a request head (request line and headers) is counted as it arrives: a URL longer
  than `max_request_line` is answered 414, a head longer than `max_request_line +
  max_header_bytes` or with more than `max_header_fields` fields 431, and the
  connection is closed without reading the rest; so is a chunked body whose chunk
  framing or trailer fields run past the same size;
- a connection must deliver a complete head within `header_timeout` seconds of
  connecting, or of the first byte of a later request (between requests the
  keep-alive timeout applies); a partial head past the deadline is answered 408;
- a request body that stops arriving for `body_timeout` seconds is cut off;
- a websocket that sends nothing for `ws_idle_timeout` seconds is closed (the real
  client sends a heartbeat every 6 s, so only a dead peer stays silent that long);
- past `max_connections` open connections (HTTP and websocket alike) a new connection
  is answered 503 with `Retry-After` as soon as it is accepted, and closed.

Every answer is `{"error": "..."}` with `Connection: close`, like the app's errors.
Use `task_server_config()` to build the uvicorn `Config`; it installs the protocols.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from dataclasses import dataclass, replace
from typing import Any, ClassVar, TypeVar

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

from mephisto.server.backend import ServerSettings

__all__ = [
    "ConnectionLimits",
    "LimitedHttpProtocol",
    "LimitedWebSocketProtocol",
    "default_max_connections",
    "raise_open_files_limit",
    "task_server_config",
]

logger = logging.getLogger(__name__)

# File descriptors kept for everything that is not a client connection: database files
# (SQLite's database, WAL and shared-memory files) or PostgreSQL sockets, log files,
# provider API clients, the listening socket, the event loop's own descriptors.
RESERVED_FILES = 256
# Beyond this many connections memory, not descriptors, is the limit (an open websocket
# with its app task costs tens of KiB); a larger machine can pass its own figure.
MAX_CONNECTIONS_CAP = 16_384


@dataclass(frozen=True)
class ConnectionLimits:
    """What one connection may cost the task server. Sizes in bytes, times in seconds."""

    max_request_line: int = 8 * 1024  # the request target (URL): past it, 414
    max_header_bytes: int = 64 * 1024  # headers; the whole head may be line + headers
    max_header_fields: int = 100  # header (and trailer) fields of one request
    header_timeout: float = 15.0  # a complete head after connecting / its first byte
    body_timeout: float = 30.0  # longest silence while a request body is incomplete
    keep_alive_timeout: int = 30  # idle time between requests on one connection
    ws_idle_timeout: float | None = 120.0  # longest silence from a websocket client
    max_connections: int | None = None  # None: default_max_connections()
    retry_after: int = 5  # seconds, in the 503 answered past max_connections


# After a refusal, what a client still sends is read and dropped for this long, or up to
# this many bytes, before the connection is closed (see `_refuse`).
LINGER_SECONDS = 2.0
LINGER_BYTES = 16 * 2**20


def listening_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A non-blocking TCP socket listening on host:port (0: a free port), for uvicorn's
    `serve(sockets=...)`. Raises OSError (the socket closed) when it cannot bind.

    IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the
    listening socket says TCP; without it every keep-alive response waits ~40 ms for
    the client's delayed ACK. Bound before uvicorn starts, so connections queue in the
    backlog and the address can be handed out at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def raise_open_files_limit() -> int | None:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; return the soft limit
    (None where there is no such limit, on Windows).

    Every connection holds a descriptor, and the soft limit is often 1024 while the
    hard one is far higher. Nothing in this process may use `select()`, which cannot
    watch descriptors above 1023 (asyncio and uvloop use epoll)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError):  # a sandbox may refuse; keep the soft limit
            logger.warning("could not raise the open files limit from %d to %d", soft, hard)
    return soft


def default_max_connections(open_files: int | None = None) -> int:
    """Connections the server holds at most: the open files limit (`open_files`, or
    this process's soft RLIMIT_NOFILE) less `RESERVED_FILES`, at most
    `MAX_CONNECTIONS_CAP`."""
    if open_files is None:
        try:
            import resource
        except ImportError:  # pragma: no cover - Windows
            return MAX_CONNECTIONS_CAP
        open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if open_files == resource.RLIM_INFINITY:
            return MAX_CONNECTIONS_CAP
    return max(16, min(open_files - RESERVED_FILES, MAX_CONNECTIONS_CAP))


def task_server_config(
    app: Any,
    limits: ConnectionLimits | None = None,
    *,
    ws_max_message_bytes: int = ServerSettings.max_ws_message_bytes,
    backlog: int = 2048,
) -> uvicorn.Config:
    """The uvicorn `Config` that serves the task server `app` under `limits`.

    `ws_max_message_bytes` should be the app's `ServerSettings.max_ws_message_bytes`:
    uvicorn then refuses a larger websocket message while reading it (close code 1009)
    instead of buffering up to its own 16 MiB default."""
    limits = limits or ConnectionLimits()
    if limits.max_connections is None:
        limits = replace(limits, max_connections=default_max_connections())
    return uvicorn.Config(
        app,
        http=_bound(LimitedHttpProtocol, limits),
        ws=_bound(LimitedWebSocketProtocol, limits),
        ws_max_size=ws_max_message_bytes,
        ws_ping_interval=None,  # the client has its own heartbeat (ws_idle_timeout)
        timeout_keep_alive=limits.keep_alive_timeout,
        proxy_headers=False,  # workers reach this server directly, not via a proxy
        log_level="warning",
        access_log=False,
        lifespan="off",
        backlog=backlog,
    )


_P = TypeVar("_P", "LimitedHttpProtocol", "LimitedWebSocketProtocol")


def _bound(protocol: type[_P], limits: ConnectionLimits) -> type[_P]:
    """A subclass of `protocol` enforcing `limits` (uvicorn makes one protocol object
    per connection from a class, with no other way in for settings of ours)."""
    return type(protocol.__name__, (protocol,), {"limits": limits})


class _Refusals:
    """Warns about refused connections at most every 10 s, with a count: a flood of
    refusals must not become a flood of log lines."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.last_warning = 0.0

    def __call__(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        now = time.monotonic()
        if now - self.last_warning >= 10.0:
            self.last_warning = now
            summary = ", ".join(f"{n} {why}" for why, n in sorted(self.counts.items()))
            logger.warning("task server refused or closed connections: %s", summary)
            self.counts.clear()


_refused = _Refusals()


class _Refused(Exception):
    """Raised from a parser callback: stops the parser at once; answered `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of `limits` (see the module).

    Bytes are counted before the parser sees them: `_head_left` is what the head being
    read may still take, None while a request body is being read. In a body, bytes that
    carry no body data (chunk sizes, trailers: httptools would buffer a trailer without
    end) are counted in `_framing`, which each completed chunk resets. The head timer
    runs only while a head is incomplete, the body timer while a body is, so a request
    that arrives in one read arms no timer."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = self.limits
        self._head_max = limits.max_request_line + limits.max_header_bytes
        self._head_left: int | None = self._head_max
        self._url_max = limits.max_request_line
        self._fields_max = limits.max_header_fields
        self._framing = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_seen = 0.0
        self._lingering: int | None = None  # after a refusal: bytes dropped since

    # -- connection -------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        max_connections = self.limits.max_connections
        if max_connections is not None and len(self.connections) >= max_connections:
            # Not counted, no timer, no parser work: the descriptor is back in a moment.
            self.transport = transport
            self._head_left = None
            _refused("past max_connections")
            transport.write(self._answer(
                503, "server busy: too many open connections, retry later",
                b"retry-after: %d\r\n" % self.limits.retry_after))
            transport.close()
            return
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes | memoryview) -> None:
        if self._lingering is not None:  # refused: dropped, up to a point
            self._lingering += len(data)
            if self._lingering > LINGER_BYTES:
                self.transport.close()
            return
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        left = self._head_left
        if left is None:
            self._framing += len(data)
        elif len(data) > left:
            self._receive_past_budget(data, left)
            return
        else:
            self._head_left = left - len(data)
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._parser_stopped(exc)
            return
        left = self._head_left
        if left is None:  # a body is incomplete
            if self._framing > self._head_max:
                self._refuse(431, "request trailer fields too large")
                return
            self._body_seen = self.loop.time()
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(self.limits.body_timeout, self._body_idle)
        elif left < self._head_max and self._head_timer is None:  # a head is incomplete
            self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_late)

    def _parser_stopped(self, exc: Exception) -> None:
        """The parser stopped before the end of the data: an upgrade, an invalid
        request or one of our refusals (raised from a callback)."""
        if isinstance(exc, httptools.HttpParserUpgrade):
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        refused = exc.__context__
        if isinstance(refused, _Refused):
            self._refuse(refused.status, refused.message)
        else:
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")

    def _receive_past_budget(self, data: bytes | memoryview, left: int) -> None:
        """`data` would take the head past its budget. Parse what fits: if the head
        ends there, go on with the rest (a body, the next request) as usual."""
        view = memoryview(data)
        self._head_left = 0
        try:
            self.parser.feed_data(view[:left])
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._parser_stopped(exc)
            return
        if self._head_left == 0:  # still in the same head: over the limit
            self._refuse(431, "request header fields too large")
            return
        self.data_received(view[left:])

    # -- parser callbacks -------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self._url_max:
            raise _Refused(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        # uvicorn's on_header, written out (not super()) to keep a call per header off
        # the hot path, with the count of fields (trailers included) added.
        headers = self.headers
        if len(headers) >= self._fields_max:
            raise _Refused(431, "too many header fields")
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        headers.append((name, value))

    # The base class is called by name, not through super(): a little cheaper, and these
    # run for every request.

    def on_headers_complete(self) -> None:
        self._head_left = None
        self._framing = 0
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        before = self.cycle
        HttpToolsProtocol.on_headers_complete(self)
        # a request to answer (not an upgrade) with a body: uvicorn writes nothing for
        # the body of an answer to HEAD, so that head is not held back
        if self.cycle is not before and self.scope["method"] != "HEAD":
            self.cycle.transport = _AnswerWriter(self.transport)

    def on_body(self, body: bytes) -> None:
        self._framing -= len(body)
        HttpToolsProtocol.on_body(self, body)

    def on_chunk_complete(self) -> None:
        self._framing = 0

    def on_message_complete(self) -> None:
        self._head_left = self._head_max
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        HttpToolsProtocol.on_message_complete(self)

    def handle_websocket_upgrade(self) -> None:
        self._cancel_timers()
        self._head_left = None
        super().handle_websocket_upgrade()

    # -- timers -----------------------------------------------------------------------

    def _head_late(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self._head_left is None:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head waits behind a response in progress: wait for it too.
            self._head_timer = self.loop.call_later(self.limits.header_timeout,
                                                    self._head_late)
            return
        if self._head_left < self._head_max:
            self._refuse(408, "request header timeout")
        else:  # nothing sent at all: nothing to answer
            _refused("silent past header_timeout")
            self.transport.close()

    def _body_idle(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self._head_left is not None:
            return
        now = self.loop.time()
        cycle = self.cycle
        if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
            self._body_seen = now  # the server is not reading: not the client's silence
        idle = now - self._body_seen
        timeout = self.limits.body_timeout
        if idle >= timeout:
            # The app is still waiting for this body: it sees a disconnect, and answers
            # nobody.
            _refused("request body idle past body_timeout")
            self.transport.close()
        else:
            self._body_timer = self.loop.call_later(timeout - idle, self._body_idle)

    def _cancel_timers(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    # -- answers ----------------------------------------------------------------------

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` with `{"error": message}` (unless the app already started an
        answer on this connection) and close. The close lingers: our side is shut for
        writing at once, and what the client still sends is read and dropped (for at most
        LINGER_SECONDS and LINGER_BYTES), because closing with unread data makes the
        kernel reset the connection, and a reset can destroy the answer before the
        client reads it."""
        _refused(message)
        self._cancel_timers()
        cycle = self.cycle
        if cycle is None or cycle.response_complete or not cycle.response_started:
            self.transport.write(self._answer(status, message))
        self._lingering = 0
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()

    def _answer(self, status: int, message: str, extra_headers: bytes = b"") -> bytes:
        body = json.dumps({"error": message}).encode()
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body),
                 extra_headers, b"connection: close\r\n\r\n", body]
        return b"".join(head)


_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class _AnswerWriter(asyncio.Transport):
    """The connection as one request's response cycle writes to it: the response head
    is held back and written together with the first piece of the body (uvicorn writes
    the body of every answer but to HEAD, if only b""). uvicorn writes them separately:
    two sends, two packets, and the client wakes twice per answer."""

    def __init__(self, transport: asyncio.Transport) -> None:
        super().__init__()
        self._transport = transport
        self._head: bytes | None = None
        self._head_seen = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._head_seen:
            if data == _CONTINUE:  # an interim answer, before the head
                self._transport.write(data)
                return
            self._head_seen = True
            self._head = bytes(data)
            return
        if self._head is not None:
            data, self._head = self._head + data, None
        self._transport.write(data)

    def close(self) -> None:
        if self._head is not None:  # an answer cut short: what uvicorn would have sent
            self._transport.write(self._head)
            self._head = None
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)


class LimitedWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websocket protocol, closing a connection silent for `ws_idle_timeout`
    seconds (while the app has not read the last message, the client is not silent)."""

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._seen = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._seen = self.loop.time()
        if self.limits.ws_idle_timeout is not None:
            self._idle_timer = self.loop.call_later(self.limits.ws_idle_timeout, self._idle)

    def data_received(self, data: bytes) -> None:
        self._seen = self.loop.time()
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        super().connection_lost(exc)

    def _idle(self) -> None:
        self._idle_timer = None
        timeout = self.limits.ws_idle_timeout
        if timeout is None or self.transport.is_closing():
            return
        now = self.loop.time()
        if self.read_paused:
            self._seen = now
        idle = now - self._seen
        if idle < timeout:
            self._idle_timer = self.loop.call_later(timeout - idle, self._idle)
            return
        _refused("websocket idle past ws_idle_timeout")
        if self.handshake_complete and not self.close_sent:
            # A close frame for a live client; the app learns of the end from
            # connection_lost, like any disconnect.
            with contextlib.suppress(InvalidState):
                self.conn.send_close(1001, "idle timeout")
                self.transport.write(b"".join(self.conn.data_to_send()))
        self.transport.close()
