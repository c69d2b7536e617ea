"""Serve an ASGI app with real uvicorn on a free local port, for tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

from mephisto.server.backend import ServerSettings
from mephisto.server.http_limits import ConnectionLimits, task_server_config


@contextlib.asynccontextmanager
async def running_server(
    app: Any,
    host: str = "127.0.0.1",
    *,
    limits: ConnectionLimits | None = None,
    ws_max_message_bytes: int = ServerSettings.max_ws_message_bytes,
) -> AsyncIterator[str]:
    """Run `app` under uvicorn on the current event loop, configured as the task server
    is deployed (`task_server_config`: `limits`, and `ws_max_message_bytes` from the
    app's `ServerSettings`); yields its base URL (`http://host:port`, no trailing
    slash). The socket is bound before uvicorn starts, so the URL works as soon as it
    is yielded."""
    import uvicorn

    # IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # is TCP, and with proto 0 every keep-alive response waits ~40 ms (Nagle + delayed ACK).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(1024)
    sock.setblocking(False)
    config = task_server_config(app, limits, ws_max_message_bytes=ws_max_message_bytes,
                                backlog=1024)
    server = uvicorn.Server(config)
    # Leave Ctrl+C to pytest: uvicorn would take SIGINT/SIGTERM while it serves.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, timeout=10)
        except TimeoutError:
            server.force_exit = True
            task.cancel()
        sock.close()
