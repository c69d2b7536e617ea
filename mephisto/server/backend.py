"""The interface between the task server (browsers' side) and the operator.

The server (`mephisto.server.app`) parses and checks what browsers send, then calls a
`TaskBackend`; the operations layer implements it (`ClientIOHandler`). With the `local`
architect the call is in-process; a remote router would forward the same calls as
packets. Backend methods raise `mephisto.errors.RequestError` subclasses for bad input
(the server maps them to 4xx with `{"error": message}`) and return only once anything
they changed is committed.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from mephisto.data_model.packets import AgentResponse, Packet

__all__ = [
    "AGENT_ID", "AgentResponse", "Caller", "SendPacket", "ServerSettings", "TaskBackend",
    "UploadedFile",
]

SendPacket = Callable[[Packet], Awaitable[None]]

# What an agent id can look like (ours are URL-safe tokens, Mephisto's are integers).
# Anything else is refused as an unknown agent before it reaches a backend.
AGENT_ID = re.compile(r"[A-Za-z0-9_.:-]+")

Caller = Mapping[str, str]
"""Who a request says it comes from: its query parameters, where the provider's page
shim puts the worker's provider ids on every request (`getProviderURLParams`; the mock
shim sends `worker_id` and `assignment_id`). Empty when the client sent none. The
backend asks the provider which worker that names, and refuses to let one worker act on
another's agent."""


@dataclass
class UploadedFile:
    """A file of a multipart submit, already streamed to a temporary file at `path`
    (in `ServerSettings.upload_dir`). The backend moves what it keeps; the server
    removes what is left once the submit is answered."""

    field_name: str
    filename: str  # as the browser sent it (at most 255 characters)
    content_type: str
    path: Path
    size: int

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()


@dataclass
class ServerSettings:
    """Limits the server enforces before anything reaches the backend."""

    max_body_bytes: int = 1_000_000  # JSON bodies
    max_upload_bytes: int = 20_000_000  # multipart submits, all files together
    max_ws_message_bytes: int = 1_000_000
    max_id_chars: int = 128  # agent ids, worker names, assignment ids, ...
    extra_headers: dict[str, str] = field(default_factory=dict)
    # where multipart uploads are streamed to (None: a folder of the system's temp dir);
    # on the backend's file system, so keeping a file is a rename
    upload_dir: Path | None = None
    # `GET /metrics` needs `Authorization: Bearer <metrics_token>`; None: no /metrics
    metrics_token: str | None = None


class TaskBackend(Protocol):
    def task_page(self) -> str:
        """HTML of the task page (`GET /`)."""
        ...

    def provider_script(self) -> str:
        """JavaScript served as `/wrap_crowd_source.js`."""
        ...

    def static_dir(self) -> Path | None:
        """Directory whose files may be served by path (None: no static files)."""
        ...

    async def task_config(self) -> dict[str, Any]: ...

    async def request_agent(self, provider_data: dict[str, Any], caller: Caller) -> AgentResponse:
        ...

    async def submit_onboarding(
        self, agent_id: str, onboarding_data: Any, caller: Caller
    ) -> AgentResponse: ...

    async def check_submit(self, agent_id: str, caller: Caller) -> None:
        """Raise the `RequestError` a submit for this agent by this caller would get,
        before its files are read (a retry of a stored submit passes: `submit_task`
        answers it)."""
        ...

    async def submit_task(
        self, agent_id: str, final_data: Any, files: list[UploadedFile], caller: Caller
    ) -> None:
        """Store a submission; answered only once committed. The same submission again
        (a retry) succeeds and changes nothing; a different one is `AlreadySubmitted`."""
        ...

    async def submit_metadata(
        self, agent_id: str, metadata: dict[str, Any], caller: Caller
    ) -> dict[str, Any]: ...

    async def log_error(self, agent_id: str | None, error_data: Any) -> None: ...

    async def agent_alive(self, agent_id: str, send: SendPacket, caller: Caller) -> None:
        """Bind a websocket to an agent (raises `UnknownAgent`, or `ForbiddenAction` for
        another worker's agent); later packets for the agent go through `send`,
        replacing any earlier socket."""
        ...

    async def agent_packet(self, agent_id: str, packet: dict[str, Any]) -> None:
        """A `mephisto_bound_live_update` (deduplicated by the server on update_id)."""
        ...

    async def agent_socket_closed(self, agent_id: str, send: SendPacket) -> None: ...
