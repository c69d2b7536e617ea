"""`mephisto router`: the task server alone, for a host workers can reach.

It serves the same pages and wire protocol as the `local` architect's server; the
difference is its backend (`RemoteBackend`), which asks the operator that dialled in at
`/_mephisto/operator`. `GET /_mephisto/router` says whether an operator is connected
(for load balancer health checks and tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from mephisto.errors import ConfigError, OperatorUnavailable, RouterError, ShutdownError
from mephisto.router import channel
from mephisto.router.auth import MIN_SECRET_CHARS
from mephisto.router.remote_backend import RemoteBackend
from mephisto.server.backend import ServerSettings

logger = logging.getLogger(__name__)

SECRET_ENV = "MEPHISTO_ROUTER_SECRET"
# Browsers' websocket messages are limited by the app (ServerSettings); the operator's
# may carry a submission (up to max_body_bytes) inside its envelope.
ROUTER_WS_MAX_BYTES = 8 * 1024 * 1024


class RouterApp:
    """The router's ASGI app: the operator channel, its status, then the task server."""

    def __init__(self, secret: str, cache_dir: Path, settings: ServerSettings | None = None,
                 **backend_options: Any) -> None:
        from mephisto.server.app import create_app

        if len(secret) < MIN_SECRET_CHARS:
            raise ConfigError(f"the router secret needs at least {MIN_SECRET_CHARS} characters",
                              key=SECRET_ENV)
        settings = settings or ServerSettings()
        if settings.upload_dir is None:
            settings.upload_dir = cache_dir / "uploads"
        self.backend = RemoteBackend(secret, cache_dir, **backend_options)
        self.settings = settings
        self.task_app = create_app(self.backend, settings,
                                   on_request=self.backend.record_request)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path")
        if scope["type"] == "websocket" and path == channel.OPERATOR_PATH:
            await self.backend.operator_endpoint(WebSocket(scope, receive, send))
            return
        if scope["type"] == "http" and path == channel.STATUS_PATH:
            await _answer(send, 200, json.dumps(self.backend.status()).encode(),
                          "application/json")
            return
        if scope["type"] == "http" and path == "/metrics":
            await self._metrics(scope, send)
            return
        await self.task_app(scope, receive, send)

    async def _metrics(self, scope: Scope, send: Send) -> None:
        """The operator's `/metrics`, asked over the channel (the operator checks the
        token, which the router never holds)."""
        if scope["method"] not in ("GET", "HEAD"):
            await _answer(send, 405, b'{"error": "use GET"}', "application/json",
                          [(b"allow", b"GET, HEAD")])
            return
        authorization = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
        try:
            status, body, content_type = await self.backend.metrics(authorization)
        except (OperatorUnavailable, ShutdownError) as exc:
            retry = str(getattr(exc, "retry_after", 2)).encode()
            await _answer(send, 503, b'{"error": "the operator is out of reach"}',
                          "application/json", [(b"retry-after", retry)])
            return
        except RouterError as exc:
            logger.warning("GET /metrics: %s", exc)
            await _answer(send, 502, b'{"error": "the operator failed to answer"}',
                          "application/json")
            return
        extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
        await _answer(send, status, body, content_type, extra)


async def _answer(send: Send, status: int, body: bytes, content_type: str,
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()),
                            (b"cache-control", b"no-store"), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})


def create_router_app(secret: str, cache_dir: Path | None = None,
                      settings: ServerSettings | None = None, **backend_options: Any
                      ) -> RouterApp:
    """A router app holding `secret`; static files and uploads go under `cache_dir`."""
    if cache_dir is None:
        cache_dir = Path(tempfile.mkdtemp(prefix="mephisto-router-"))
    cache_dir.mkdir(parents=True, exist_ok=True)
    return RouterApp(secret, cache_dir, settings, **backend_options)


async def serve(app: ASGIApp, host: str, port: int,
                on_ready: Callable[[int], None] | None = None) -> None:
    """Serve the router on host:port (0: a free port) until cancelled."""
    import uvicorn

    from mephisto.server.http_limits import (
        listening_socket,
        raise_open_files_limit,
        task_server_config,
    )

    try:
        sock = listening_socket(host, port)
    except OSError as exc:
        raise ConfigError(f"cannot serve on {host}:{port}: {exc.strerror}", key="port") from None
    raise_open_files_limit()
    server = uvicorn.Server(task_server_config(app, ws_max_message_bytes=ROUTER_WS_MAX_BYTES))
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    if on_ready is not None:
        on_ready(sock.getsockname()[1])
    try:
        await server.serve(sockets=[sock])
    except asyncio.CancelledError:
        server.should_exit = True
        raise
    finally:
        sock.close()


def secret_from_env() -> str | None:
    value = os.environ.get(SECRET_ENV, "").strip()
    return value or None


__all__ = ["ROUTER_WS_MAX_BYTES", "SECRET_ENV", "RouterApp", "create_router_app", "serve"]
