"""Serve an ASGI app with real uvicorn on a free local port, for tests and benchmarks:
in this process (`running_server`), or a fake task server in a child process whose
memory a test can watch apart from its own (`fake_server_process`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

from mephisto.server.backend import ServerSettings
from mephisto.server.http_limits import ConnectionLimits, listening_socket, task_server_config


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

    sock = listening_socket(host, 0, backlog=1024)
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


class ServerProcess:
    """A task server over a `FakeBackend` in a child process (see `fake_server_process`):
    its `url`, and its resident memory, which a test can watch apart from its own."""

    def __init__(self, process: subprocess.Popen[str], url: str) -> None:
        self.process = process
        self.url = url

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.process.pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def fake_server_process(
    settings: dict[str, Any] | None = None, limits: dict[str, Any] | None = None
) -> Iterator[ServerProcess]:
    """Serve `create_app(FakeBackend(), ServerSettings(**settings))` with `limits` (the
    fields of `ConnectionLimits`) in a new Python process, until the block ends."""
    spec = json.dumps({"settings": settings or {}, "limits": limits})
    process = subprocess.Popen(
        [sys.executable, "-m", "mephisto.testing.server", spec],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url.startswith("http://"):
            raise RuntimeError(f"the server process did not start (said {url!r})")
        yield ServerProcess(process, url)
    finally:
        process.communicate("", timeout=10)  # its stdin closing stops it


async def _serve_until_stdin_closes(spec: dict[str, Any]) -> None:
    from pathlib import Path

    from mephisto.server.app import create_app
    from mephisto.testing.fake_backend import FakeBackend

    settings = dict(spec["settings"])
    if settings.get("upload_dir") is not None:
        settings["upload_dir"] = Path(settings["upload_dir"])
    server_settings = ServerSettings(**settings)
    limits = ConnectionLimits(**spec["limits"]) if spec.get("limits") else None
    app = create_app(FakeBackend(), server_settings)
    async with running_server(app, limits=limits,
                              ws_max_message_bytes=server_settings.max_ws_message_bytes) as url:
        print(url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(_serve_until_stdin_closes(json.loads(sys.argv[1])))
