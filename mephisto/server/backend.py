"""The interface between the task server (browsers' side) and the operator.

The server (`mephisto.server.app`) parses and checks what browsers send, then calls a
`TaskBackend`; the operations layer implements it (`ClientIOHandler`). With the `local`
architect the call is in-process; a remote router would forward the same calls as
packets. Backend methods raise `mephisto.errors.RequestError` subclasses for bad input
(the server maps them to 4xx with `{"error": message}`) and return only once anything
they changed is committed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypedDict

SendPacket = Callable[[dict[str, Any]], Awaitable[None]]


class AgentResponse(TypedDict, total=False):
    """`data` of a /request_agent or /submit_onboarding answer (mephisto-task 2.x).

    `agent_id` None means the worker is blocked; `failure_reason` says why.
    """

    agent_id: str | None
    worker_id: str | None
    init_task_data: Any
    failure_reason: str | None


@dataclass
class UploadedFile:
    field_name: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class ServerSettings:
    """Limits the server enforces before anything reaches the backend."""

    max_body_bytes: int = 1_000_000  # JSON bodies
    max_upload_bytes: int = 20_000_000  # multipart submits, all files together
    max_ws_message_bytes: int = 1_000_000
    extra_headers: dict[str, str] = field(default_factory=dict)


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

    async def request_agent(self, provider_data: dict[str, Any]) -> AgentResponse: ...

    async def submit_onboarding(self, agent_id: str, onboarding_data: Any) -> AgentResponse: ...

    async def submit_task(
        self, agent_id: str, final_data: Any, files: list[UploadedFile]
    ) -> None: ...

    async def submit_metadata(self, agent_id: str, metadata: dict[str, Any]) -> dict[str, Any]: ...

    async def log_error(self, agent_id: str | None, error_data: Any) -> None: ...

    async def agent_alive(self, agent_id: str, send: SendPacket) -> None:
        """Bind a websocket to an agent (raises `UnknownAgent`); later packets for the
        agent go through `send`, replacing any earlier socket."""
        ...

    async def agent_packet(self, agent_id: str, packet: dict[str, Any]) -> None:
        """A `mephisto_bound_live_update` (deduplicated by the server on update_id)."""
        ...

    async def agent_socket_closed(self, agent_id: str, send: SendPacket) -> None: ...
