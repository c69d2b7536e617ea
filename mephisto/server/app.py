"""The ASGI app workers' browsers talk to (wire protocol: docs/wire-protocol.md).

Every request is checked here (method, size, JSON shape, field types) before anything
reaches the `TaskBackend`; bad input gets a 4xx `{"error": message}` and changes nothing.
All endpoints live at the origin root, as the mephisto-task 2.x client expects; the task
page `GET /` and the websocket share the path `/`.

This is the hot path of a run, so it stays thin: plain `json`, no middleware, one small
wrapper per endpoint that maps errors to answers.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import re
import tempfile
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from mephisto.data_model import packets
from mephisto.errors import (
    DatabaseUnavailable,
    MalformedRequest,
    NotEligible,
    OperatorUnavailable,
    PayloadTooLarge,
    ProviderError,
    RequestError,
    RouterError,
    ShutdownError,
    UnknownAgent,
)
from mephisto.server.backend import AGENT_ID, Caller, ServerSettings, TaskBackend
from mephisto.server.static_files import Encoded, StaticFiles, conditional, encode
from mephisto.server.uploads import MultipartSubmit

logger = logging.getLogger(__name__)

__all__ = ["create_app"]

OnRequest = Callable[[str, float, int], None]
Handler = Callable[[Request], Awaitable[Response]]

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
WS_CLOSE_UNKNOWN_AGENT = 4004
CLIENT_CLOSED_REQUEST = 499  # the status `on_request` sees when a client left mid-request
# A heartbeat's client_timestamp outside a JavaScript Date's range (±8.64e15 ms) cannot
# be a browser's clock (and 1e306 * 1000 is inf): it is answered with server time.
MAX_CLIENT_TIMESTAMP = 8.64e12
MAX_JSON_DEPTH = 64  # arrays and objects nested deeper are refused (400)
RECENT_UPDATE_IDS = 1024  # live-update ids remembered per socket and agent for dedupe
MAX_UPLOAD_FILES = 100
MAX_FORM_FIELDS = 1000
_DEFAULT_UPLOAD_DIR = Path(tempfile.gettempdir()) / "mephisto-uploads"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# what `on_request` names the endpoints it times (the metrics' `endpoint` label)
TIMED_ENDPOINTS = frozenset({
    "task_page", "task_config", "request_agent", "submit_onboarding", "submit_task",
    "submit_metadata", "log_error", "provider_script", "static",
})
_GET = frozenset({"GET", "HEAD"})
_POST = frozenset({"POST"})


def create_app(
    backend: TaskBackend,
    settings: ServerSettings | None = None,
    *,
    metrics_registry: Any = None,
    on_request: OnRequest | None = None,
) -> ASGIApp:
    """The task server for one backend (an ASGI app).

    `metrics_registry` (a prometheus_client registry) adds `GET /metrics`, guarded by
    `settings.metrics_token` (`Authorization: Bearer <token>`); without a token it is
    not served: workers' browsers have no business reading it.
    `on_request(endpoint, seconds, status)` is called after each worker request.
    """
    server = _TaskServer(backend, settings or ServerSettings(), on_request)
    ep = server.endpoint
    # HTTP endpoints by exact path: dispatched straight to our endpoint wrapper (which
    # checks the method, maps errors and times the request), not through Starlette's
    # router and middleware, which cost a tenth of the server's CPU per request.
    exact: dict[str, ASGIApp] = {
        "/": ep("task_page", _GET, server.task_page),
        "/task_config.json": ep("task_config", _GET, server.task_config),
        "/request_agent": ep("request_agent", _POST, server.request_agent, True),
        "/submit_onboarding": ep("submit_onboarding", _POST, server.submit_onboarding, True),
        "/submit_task": ep("submit_task", _POST, server.submit_task),
        "/submit_metadata": ep("submit_metadata", _POST, server.submit_metadata),
        "/log_error": ep("log_error", _POST, server.log_error),
        "/wrap_crowd_source.js": ep("provider_script", _GET, server.provider_script),
        "/_mephisto/static-task.js": ep("static", _GET, server.static_task_js),
        "/healthz": ep(None, _GET, server.healthz),
    }
    metrics: MetricsText | None = None
    if metrics_registry is not None and server.settings.metrics_token:
        metrics = _metrics_text(metrics_registry, server.settings.metrics_token)
        exact["/metrics"] = ep(None, _GET, server.metrics(metrics))
    # Starlette serves the rest: the websocket at "/" and any other path as a file of
    # the backend's static directory (or 404).
    rest = Starlette(routes=[
        WebSocketRoute("/", server.websocket),
        Route("/{path:path}", ep("static", _GET, server.static_file)),
    ])
    return _Dispatch(exact, rest, backend, server.settings, metrics, on_request)


# `GET /metrics` for an `Authorization` header: (status, body, content type)
MetricsText = Callable[[str], tuple[int, bytes, str]]
METRICS_UNAUTHORIZED = "metrics need the run's token: Authorization: Bearer <token>"


def _metrics_text(registry: Any, token: str) -> MetricsText:
    expected = f"Bearer {token}".encode()

    def answer(authorization: str) -> tuple[int, bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        if not hmac.compare_digest(authorization.encode("latin-1", "replace"), expected):
            return 401, json.dumps({"error": METRICS_UNAUTHORIZED}).encode(), "application/json"
        return 200, generate_latest(registry), CONTENT_TYPE_LATEST

    return answer


class _Dispatch:
    """The task server's ASGI app: exact HTTP paths first, then the Starlette app.

    `backend` and `settings` are what it serves with, `metrics` its `/metrics` (None
    when it serves none) and `on_request` what it tells of each request: an architect
    that does not serve the app in-process (`remote`) hands them to its router link
    instead."""

    __slots__ = ("backend", "exact", "metrics", "on_request", "rest", "settings")

    def __init__(self, exact: dict[str, ASGIApp], rest: Starlette, backend: TaskBackend,
                 settings: ServerSettings, metrics: MetricsText | None = None,
                 on_request: OnRequest | None = None) -> None:
        self.exact = exact
        self.rest = rest
        self.backend = backend
        self.settings = settings
        self.metrics = metrics
        self.on_request = on_request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            app = self.exact.get(scope["path"])
            if app is not None:
                await app(scope, receive, send)
                return
        await self.rest(scope, receive, send)


class _TaskServer:
    def __init__(
        self, backend: TaskBackend, settings: ServerSettings, on_request: OnRequest | None
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.on_request = on_request
        self.headers = dict(settings.extra_headers)
        self._static = StaticFiles()
        # the page and scripts the backend gives as text: (text, its encoded answer), so
        # each is encoded, hashed and gzipped once, not per worker
        self._encoded: dict[str, tuple[str, Encoded]] = {}

    # -- responses ------------------------------------------------------------------

    def json(self, content: Any, status: int = 200, headers: dict[str, str] | None = None
             ) -> Response:
        body = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return Response(body.encode(), status, headers or self.headers, "application/json")

    def error(self, status: int, message: str, extra: dict[str, str] | None = None) -> Response:
        return self.json({"error": message}, status, {**self.headers, **extra} if extra else None)

    def endpoint(
        self, name: str | None, methods: frozenset[str], handler: Handler,
        blocked_is_answer: bool = False,
    ) -> ASGIApp:
        """Wrap a handler as a plain ASGI app (so Starlette routes every method to it and
        the 405 is ours, in JSON): method check, error mapping, timing.

        `blocked_is_answer`: a `NotEligible`/`ShutdownError` escaping the backend is
        answered as a blocked agent (200, agent_id null), since mephisto-task hangs
        forever on a non-2xx request_agent answer.
        """
        allow = ", ".join(sorted(methods))
        assert name is None or name in TIMED_ENDPOINTS, name

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            request = Request(scope, receive)
            start = time.perf_counter()
            response: Response | None
            if request.method not in methods:
                response = self.error(
                    405, f"method {request.method} is not allowed here (use {allow})",
                    {"Allow": allow},
                )
            else:
                try:
                    response = await handler(request)
                except RequestError as exc:
                    response = self.error(exc.status_code, str(exc))
                except DatabaseUnavailable as exc:
                    # the writer logs an outage once; one line per request would flood
                    logger.debug("%s %s: database unavailable: %s", request.method,
                                 request.url.path, exc)
                    response = self.error(
                        503, "the server cannot save work right now; try again shortly",
                        {"Retry-After": str(exc.retry_after)},
                    )
                except OperatorUnavailable as exc:
                    # a router whose operator is (for now) out of reach
                    response = self.error(
                        503, "the task server cannot reach its operator right now; "
                        "try again shortly", {"Retry-After": str(exc.retry_after)},
                    )
                except RouterError as exc:
                    logger.warning("%s %s: %s", request.method, request.url.path, exc)
                    response = self.error(502, "the task's operator failed to answer")
                except ProviderError as exc:
                    # launching more units for this worker failed at the crowd provider;
                    # the units stay to be launched, the worker may try again
                    logger.warning("%s %s: %s", request.method, request.url.path, exc)
                    response = self.error(
                        503, "the task cannot take your work right now; try again shortly",
                        {"Retry-After": "30"},
                    )
                except (NotEligible, ShutdownError) as exc:
                    reason = (exc.reason if isinstance(exc, NotEligible)
                              else "This task is no longer accepting work.")
                    if blocked_is_answer:
                        response = self.json({"data": {"agent_id": None,
                                                       "failure_reason": reason}})
                    elif isinstance(exc, NotEligible):
                        response = self.error(403, reason)
                    else:
                        response = self.error(503, "the task is shutting down")
                except ClientDisconnect:
                    # the browser left mid-body (tab closed, network lost): no one to
                    # answer, nothing was changed
                    logger.debug("%s %s: the client disconnected before its request was "
                                 "read", request.method, request.url.path)
                    response = None
                except Exception:
                    logger.exception("error answering %s %s", request.method, request.url.path)
                    response = self.error(500, "internal server error")
            status = CLIENT_CLOSED_REQUEST if response is None else response.status_code
            if self.on_request is not None and name is not None:
                try:
                    self.on_request(name, time.perf_counter() - start, status)
                except Exception:
                    logger.exception("on_request hook failed")
            if response is not None:
                await response(scope, receive, send)

        return _ASGIEndpoint(app)

    # -- request bodies ---------------------------------------------------------------

    @staticmethod
    async def _limited_stream(request: Request, limit: int) -> AsyncGenerator[bytes, None]:
        """The request body, refused (413) once it passes `limit` bytes.

        Content-Length is checked first; the bytes are counted too, since a client
        may send a chunked body or lie about its length.
        """
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
            yield chunk

    async def read_json_object(self, request: Request) -> dict[str, Any]:
        chunks = [c async for c in self._limited_stream(request, self.settings.max_body_bytes)]
        return _parse_json_object(b"".join(chunks), "request body")

    # -- HTTP endpoints ---------------------------------------------------------------

    def _text(self, request: Request, name: str, text: str, content_type: str) -> Response:
        """A text the backend gives (the same object each time, or a new one when it
        changed), answered with an ETag and 304s."""
        known = self._encoded.get(name)
        if known is None or known[0] is not text:
            known = self._encoded[name] = (text, encode(text.encode(), content_type))
        return conditional(request, known[1], self.headers)

    async def task_page(self, request: Request) -> Response:
        return self._text(request, "page", self.backend.task_page(), "text/html; charset=utf-8")

    async def provider_script(self, request: Request) -> Response:
        return self._text(request, "provider", self.backend.provider_script(),
                          "application/javascript; charset=utf-8")

    async def static_task_js(self, request: Request) -> Response:
        known = self._encoded.get("static-task.js")
        if known is None:
            body = (ASSETS_DIR / "static-task.js").read_bytes()
            known = self._encoded["static-task.js"] = (
                "", encode(body, "application/javascript; charset=utf-8"))
        return conditional(request, known[1], self.headers)

    async def healthz(self, request: Request) -> Response:
        return self.json({"status": "ok"})

    def metrics(self, metrics: MetricsText) -> Handler:
        async def handler(request: Request) -> Response:
            status, body, content_type = metrics(request.headers.get("authorization", ""))
            if status == 401:
                return self.error(401, METRICS_UNAUTHORIZED, {"WWW-Authenticate": "Bearer"})
            return Response(body, status, self.headers, content_type)

        return handler

    async def task_config(self, request: Request) -> Response:
        config = dict(await self.backend.task_config())
        version = request.query_params.get("mephisto_task_version")
        if version is not None:
            config["mephisto_task_version"] = version  # echoed: the client warns on mismatch
        return self.json(config)

    def _agent_id(self, body: dict[str, Any], label: str) -> str:
        return _agent_id(body, label, self.settings.max_id_chars)

    async def request_agent(self, request: Request) -> Response:
        body = await self.read_json_object(request)
        provider_data = _field(body, "provider_data", dict)
        limit = self.settings.max_id_chars
        for key, value in provider_data.items():
            if isinstance(value, str):
                if len(value) > limit:
                    raise MalformedRequest(
                        f"field 'provider_data.{key}' is longer than {limit} characters")
                if not value.isprintable() and _CONTROL.search(value):
                    raise MalformedRequest(
                        f"field 'provider_data.{key}' contains a control character")
        answer = await self.backend.request_agent(provider_data, _caller(request))
        return self.json({"data": answer})

    async def submit_onboarding(self, request: Request) -> Response:
        body = await self.read_json_object(request)
        provider_data = _field(body, "provider_data", dict)
        agent_id = self._agent_id(provider_data, "provider_data.USED_AGENT_ID")
        onboarding_data = provider_data.get("onboarding_data")
        result = await self.backend.submit_onboarding(agent_id, onboarding_data,
                                                      _caller(request))
        return self.json({"data": result})

    async def submit_task(self, request: Request) -> Response:
        caller = _caller(request)
        content_type = request.headers.get("content-type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            body = await self.read_json_object(request)
            agent_id = self._agent_id(body, "USED_AGENT_ID")
            # mephisto-task's handleSubmit(undefined) drops the key: treat it as null.
            await self.backend.submit_task(agent_id, body.get("final_data"), [], caller)
            return self.json({"status": "Submitted!"})

        async def check_agent(agent_id: str) -> None:
            await self.backend.check_submit(agent_id, caller)

        upload = MultipartSubmit(
            content_type, self.settings.upload_dir or _DEFAULT_UPLOAD_DIR, check_agent,
            max_field_bytes=self.settings.max_body_bytes, max_files=MAX_UPLOAD_FILES,
            max_fields=MAX_FORM_FIELDS,
        )
        await upload.read(self._limited_stream(request, self.settings.max_upload_bytes))
        try:
            raw = upload.fields.get("final_string_data")
            if raw is None:
                raise MalformedRequest("missing field 'final_string_data'")
            final_data = _parse_json(raw, "field 'final_string_data'")
            agent_id = upload.fields["USED_AGENT_ID"]
            await self.backend.submit_task(agent_id, final_data, upload.files, caller)
        finally:
            upload.discard()  # what the backend did not keep
        return self.json({"status": "Submitted!"})

    async def submit_metadata(self, request: Request) -> Response:
        body = await self.read_json_object(request)
        agent_id = self._agent_id(body, "USED_AGENT_ID")
        metadata = _field(body, "metadata", dict)
        return self.json(await self.backend.submit_metadata(agent_id, metadata,
                                                            _caller(request)))

    async def log_error(self, request: Request) -> Response:
        body = await self.read_json_object(request)
        agent_id = body.get("USED_AGENT_ID")  # null before an agent exists
        if agent_id is not None and (not isinstance(agent_id, str) or not agent_id):
            raise MalformedRequest("field 'USED_AGENT_ID' must be a non-empty string or null")
        if agent_id is not None:  # only logged (escaped): any string will do
            agent_id = _agent_id(body, "USED_AGENT_ID", self.settings.max_id_chars, shaped=False)
        await self.backend.log_error(agent_id, body.get("error_data"))
        return self.json({"status": "ok"})

    async def static_file(self, request: Request) -> Response:
        path = self._static_path(request.path_params.get("path", ""))
        if path is None:
            return self.error(404, "not found")
        cached = self._static.get(path)
        if cached is None:  # too large to keep in memory (streamed from disk), or gone
            if not path.is_file():
                return self.error(404, "not found")
            return FileResponse(path, headers=self.headers)
        return conditional(request, cached.encoded, self.headers)

    def _static_path(self, relative: str) -> Path | None:
        """The file `relative` names inside the static directory, or None (see
        `StaticFiles.lookup` for what is refused)."""
        directory = self.backend.static_dir()
        if directory is None:
            return None
        return self._static.lookup(directory, relative)

    # -- websocket --------------------------------------------------------------------

    async def websocket(self, websocket: WebSocket) -> None:
        await websocket.accept()
        sender = _SocketSender(websocket)
        bound: dict[str, _RecentIds] = {}  # agent ids this socket did `alive` for
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                text = message.get("text")
                if text is None:
                    raw = message.get("bytes") or b""
                    if len(raw) > self.settings.max_ws_message_bytes:
                        logger.warning("websocket: dropped a %d-byte message (over the limit)",
                                       len(raw))
                        continue
                    try:
                        text = raw.decode()
                    except UnicodeDecodeError:
                        logger.warning("websocket: dropped a binary message that is not UTF-8")
                        continue
                if not await self._on_ws_text(websocket, sender, bound, text):
                    break
        finally:
            sender.closed = True
            for agent_id in bound:
                try:
                    await self.backend.agent_socket_closed(agent_id, sender)
                except Exception:
                    logger.exception("agent_socket_closed(%s) failed", agent_id)

    async def _on_ws_text(
        self, websocket: WebSocket, sender: _SocketSender, bound: dict[str, _RecentIds],
        text: str,
    ) -> bool:
        """Handle one client packet; False once the socket was closed by the server."""
        limit = self.settings.max_ws_message_bytes
        if len(text) > limit // 4 and len(text.encode()) > limit:
            logger.warning("websocket: dropped a %d-character message (over the limit)",
                           len(text))
            return True
        try:
            packet = _parse_json(text, "websocket message")
        except MalformedRequest:
            logger.warning("websocket: dropped a message that is not valid JSON")
            return True
        if not isinstance(packet, dict):
            logger.warning("websocket: dropped a message that is not a JSON object")
            return True
        packet_type = packet.get("packet_type")
        if packet_type == packets.HEARTBEAT:
            ts = packet.get("client_timestamp")
            if (isinstance(ts, bool) or not isinstance(ts, int | float)
                    or not -MAX_CLIENT_TIMESTAMP <= ts <= MAX_CLIENT_TIMESTAMP):
                ts = time.time()  # missing, not a number, or out of range
            await sender(packets.heartbeat(round(ts * 1000)))
            return True
        subject_id = packet.get("subject_id")
        if packet_type == packets.MEPHISTO_BOUND_LIVE_UPDATE:
            recent = bound.get(subject_id) if isinstance(subject_id, str) else None
            if recent is None:
                logger.warning("websocket: live update for agent %r on a socket that did not "
                               "send `alive` for it; ignored", subject_id)
                return True
            data = packet.get("data")
            if not isinstance(data, dict):
                logger.warning("websocket: live update without a data object; ignored")
                return True
            if recent.seen(data.get("update_id")):
                return True
            try:
                await self.backend.agent_packet(subject_id, packet)  # type: ignore[arg-type]
            except RequestError as exc:
                logger.warning("websocket: live update for agent %s refused: %s",
                               subject_id, exc)
            except Exception:
                logger.exception("agent_packet(%s) failed", subject_id)
            return True
        if packet_type == packets.ALIVE:
            if not isinstance(subject_id, str) or not subject_id:
                logger.warning("websocket: `alive` without a subject_id; ignored")
                return True
            if len(subject_id) > self.settings.max_id_chars or not AGENT_ID.fullmatch(subject_id):
                await self._close(websocket, sender, WS_CLOSE_UNKNOWN_AGENT)
                return False
            try:
                await self.backend.agent_alive(subject_id, sender, _caller(websocket))
            except UnknownAgent:
                await self._close(websocket, sender, WS_CLOSE_UNKNOWN_AGENT)
                return False
            except RequestError as exc:
                await self._close(websocket, sender, 4000 + exc.status_code)
                return False
            except Exception:
                logger.exception("agent_alive(%s) failed", subject_id)
                await self._close(websocket, sender, 1011)
                return False
            bound.setdefault(subject_id, _RecentIds())
            return True
        logger.warning("websocket: dropped a packet of unknown type %r", packet_type)
        return True

    @staticmethod
    async def _close(websocket: WebSocket, sender: _SocketSender, code: int) -> None:
        async with sender.lock:
            sender.closed = True
            try:
                await websocket.close(code)
            except Exception:  # the client went away first
                logger.debug("websocket close(%d): already closed", code, exc_info=True)


class _ASGIEndpoint:
    """An ASGI callable that is not a function, so `Route` leaves its methods open."""

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class _SocketSender:
    """`send(packet)` for one websocket: JSON, one send at a time, no-op once closed.

    The same object is given to `agent_alive` and `agent_socket_closed`, so a backend
    can tell whether the socket closing is still the agent's current one.
    """

    __slots__ = ("closed", "lock", "websocket")

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.lock = asyncio.Lock()
        self.closed = False

    async def __call__(self, packet: packets.Packet) -> None:
        if self.closed:
            return
        text = json.dumps(packet, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        async with self.lock:
            if self.closed:
                return
            try:
                await self.websocket.send_text(text)
            except Exception:
                self.closed = True
                logger.debug("websocket send failed: the socket is closed", exc_info=True)


class _RecentIds:
    """The last `RECENT_UPDATE_IDS` update ids seen (live updates are deduplicated)."""

    __slots__ = ("_order", "_seen")

    def __init__(self) -> None:
        self._seen: set[Any] = set()
        self._order: deque[Any] = deque()

    def seen(self, update_id: Any) -> bool:
        """True if `update_id` was seen before; records it otherwise. Ids that are not
        strings or numbers are never deduplicated."""
        if not isinstance(update_id, str | int | float):
            return False
        if update_id in self._seen:
            return True
        self._seen.add(update_id)
        self._order.append(update_id)
        if len(self._order) > RECENT_UPDATE_IDS:
            self._seen.discard(self._order.popleft())
        return False


class _Refused(ValueError):
    """A JSON value we refuse while parsing; the message follows `what`."""


def _reject_constant(name: str) -> Any:
    raise _Refused(f"is not valid JSON ({name} is not a JSON number)")


def _finite_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):  # 1e999: NaN and Infinity by the back door
        raise _Refused(f"has a number out of range ({literal[:30]})")
    return value


# what `json.loads(text, parse_constant=..., parse_float=...)` would build on each call
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)

# A lone surrogate can only come from a \uD800-\uDFFF escape once the bytes were decoded
# as strict UTF-8; a str given to _parse_json may carry one as is. These run over the
# raw text, so the parsed value is walked only when the text hints at a problem.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _parse_json(raw: str | bytes, what: str) -> Any:
    """Parse JSON from a client; MalformedRequest (400) for anything we cannot store.

    Refused beyond syntax: bytes that are not UTF-8, NaN/Infinity (also as 1e999),
    arrays/objects nested more than MAX_JSON_DEPTH deep (the database layer's encoder
    recurses), and strings holding a lone surrogate ("\\ud800": not valid unicode, no
    database can store it).
    """
    try:
        text = raw.decode() if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise MalformedRequest(f"{what} is not valid JSON (not UTF-8)") from None
    try:
        value = _DECODER.decode(text)
    except _Refused as exc:
        raise MalformedRequest(f"{what} {exc}") from None
    except RecursionError:
        raise MalformedRequest(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep"
                               ) from None
    except ValueError:  # JSONDecodeError; int literals over 4300 digits
        raise MalformedRequest(f"{what} is not valid JSON") from None
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _too_deep(value):
        raise MalformedRequest(f"{what} is nested more than {MAX_JSON_DEPTH} levels deep")
    if (("\\u" in text and _SURROGATE_ESCAPE.search(text) is not None)
            or (not isinstance(raw, bytes) and not text.isascii()
                and _SURROGATE.search(text) is not None)):
        _refuse_lone_surrogates(value, what)
    return value


def _too_deep(value: Any) -> bool:
    """Whether arrays/objects nest more than MAX_JSON_DEPTH deep (level by level, no
    recursion: cheaper than a walk that tracks each container's depth)."""
    level = [value] if type(value) is dict or type(value) is list else []
    for _ in range(MAX_JSON_DEPTH):
        level = [item for node in level
                 for item in (node.values() if type(node) is dict else node)
                 if type(item) is dict or type(item) is list]
        if not level:
            return False
    return True


def _refuse_lone_surrogates(value: Any, what: str) -> None:
    """MalformedRequest naming the first field (key or value) holding a lone surrogate."""
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise MalformedRequest(f"{what} has invalid unicode (a lone surrogate)")
        return
    # (container, path to it as nested (parent path, key) pairs)
    stack: list[tuple[Any, Any]] = [(value, None)] if isinstance(value, dict | list) else []
    while stack:
        node, path = stack.pop()
        for key, item in node.items() if isinstance(node, dict) else enumerate(node):
            if ((isinstance(key, str) and _SURROGATE.search(key))
                    or (isinstance(item, str) and _SURROGATE.search(item))):
                raise MalformedRequest(f"{what} has invalid unicode (a lone surrogate) in "
                                       f"field '{_path_name((path, key))}'")
            if isinstance(item, dict | list):
                stack.append((item, (path, key)))


def _path_name(path: Any) -> str:
    """`a.b[2].c` for a path of nested (parent, key) pairs; keys escaped and shortened."""
    keys: list[str | int] = []
    while path is not None:
        path, key = path
        keys.append(key)
    name = ""
    for key in reversed(keys):
        if isinstance(key, int):
            name += f"[{key}]"
        else:
            text = key.encode("utf-8", "backslashreplace").decode()  # \\ud800 as text
            text = text if len(text) <= 40 else text[:37] + "..."
            name += f".{text}" if name else text
    return name if len(name) <= 200 else "..." + name[-197:]


def _parse_json_object(raw: str | bytes, what: str) -> dict[str, Any]:
    value = _parse_json(raw, what)
    if not isinstance(value, dict):
        raise MalformedRequest(f"{what} must be a JSON object")
    return value


_TYPE_NAMES: dict[type, str] = {dict: "an object", str: "a string", list: "an array"}


def _field(body: dict[str, Any], name: str, kind: type) -> Any:
    if name not in body:
        raise MalformedRequest(f"missing field '{name}'")
    value = body[name]
    if not isinstance(value, kind):
        raise MalformedRequest(f"field '{name}' must be {_TYPE_NAMES.get(kind, kind.__name__)}")
    return value


def _agent_id(body: dict[str, Any], label: str, limit: int, shaped: bool = True) -> str:
    """The agent id a body names (400 when missing, not a string, or too long; 404 when
    it cannot be an agent id, unless `shaped` is False: then any string will do)."""
    name = label.rpartition(".")[2]
    if name not in body:
        raise MalformedRequest(f"missing field '{label}'")
    value = body[name]
    if not isinstance(value, str) or not value:
        raise MalformedRequest(f"field '{label}' must be a non-empty string")
    if len(value) > limit:
        raise MalformedRequest(f"field '{label}' is longer than {limit} characters")
    if shaped and not AGENT_ID.fullmatch(value):
        raise UnknownAgent("unknown agent id: request an agent first")
    return value


_NO_CALLER: Caller = MappingProxyType({})
_CALLERS: dict[bytes, Caller] = {}  # query strings seen lately, parsed (read-only)
_CALLERS_KEPT = 4096


def _caller(connection: Request | WebSocket) -> Caller:
    """The request's query parameters: the provider shim's identity of the worker. A
    worker sends the same ones on every request, so the parsed form of recent query
    strings is kept (a bounded map) rather than parsed again each time."""
    raw: bytes = connection.scope["query_string"]
    if not raw:
        return _NO_CALLER
    caller = _CALLERS.get(raw)
    if caller is None:
        if len(_CALLERS) >= _CALLERS_KEPT:
            _CALLERS.clear()
        caller = _CALLERS[raw] = MappingProxyType(
            dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=True)))
    return caller
