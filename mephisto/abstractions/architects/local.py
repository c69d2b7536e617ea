"""`local`: the task server runs inside the operator's process, on the operator's event
loop, served by uvicorn at `hostname:port`. Port 0 picks a free port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from dataclasses import dataclass, field
from typing import Any

from mephisto.abstractions.architect import Architect, ArchitectArgs
from mephisto.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass
class LocalArchitectArgs(ArchitectArgs):
    _architect_type: str = "local"
    hostname: str = field(default="localhost", metadata={"help": "Host name workers use."})
    port: str = field(default="3000", metadata={"help": "Port to serve on (0: any free port)."})
    bind_host: str = field(
        default="127.0.0.1", metadata={"help": "Interface to listen on (0.0.0.0 for all)."}
    )


class LocalArchitect(Architect):
    ARCHITECT_TYPE = "local"
    ArgsClass = LocalArchitectArgs

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self._server: Any = None
        self._serve_task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None

    @classmethod
    def assert_task_args(cls, args: Any, shared_state: Any) -> None:
        port = args.architect.get("port", "3000")
        try:
            value = int(port)
        except (TypeError, ValueError):
            raise ConfigError(f"mephisto.architect.port must be a number, got {port!r}",
                              key="mephisto.architect.port") from None
        if not 0 <= value <= 65535:
            raise ConfigError(f"mephisto.architect.port out of range: {value}",
                              key="mephisto.architect.port")

    async def deploy(self, app: Any) -> str:
        import uvicorn

        from mephisto.server.http_limits import (
            listening_socket,
            raise_open_files_limit,
            task_server_config,
        )

        arch = self.args.architect
        host = str(arch.get("bind_host", "127.0.0.1"))
        port = int(arch.get("port", 3000))
        try:
            sock = listening_socket(host, port)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve on {host}:{port}: {exc.strerror}. Pick another port with "
                "mephisto.architect.port=<n> (0 picks a free one)",
                key="mephisto.architect.port",
            ) from None
        self._sock = sock
        bound_port = sock.getsockname()[1]
        # Every connection holds a file descriptor: take all the process may have, so
        # the default connection limit (derived from it) is as high as the machine allows.
        raise_open_files_limit()
        # The live run builds its app with the default ServerSettings, whose websocket
        # message limit task_server_config applies by default.
        config = task_server_config(app, backlog=2048)
        self._server = uvicorn.Server(config)
        # Ctrl-C belongs to the run script (task_script / the operator), not uvicorn.
        self._server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
        self._serve_task = asyncio.get_running_loop().create_task(
            self._server.serve(sockets=[sock]), name="mephisto-local-server"
        )
        # The socket is bound and listening: connections queue in its backlog until
        # uvicorn accepts them, so workers can be sent the URL right away.
        hostname = str(arch.get("hostname", "localhost"))
        return f"http://{hostname}:{bound_port}/"

    async def shutdown(self) -> None:
        if self._server is None:
            return
        self._server.should_exit = True
        if self._serve_task is not None:
            try:
                await asyncio.wait_for(self._serve_task, timeout=10)
            except TimeoutError:
                self._server.force_exit = True
                self._serve_task.cancel()
        if self._sock is not None:
            self._sock.close()
        self._server = None
