"""An in-memory `TaskBackend` for testing the task server and simulated workers without
an operator or a database. It keeps every call and every accepted change, so a test can
check that rejected input changed nothing."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mephisto.data_model import packets
from mephisto.errors import (
    AlreadySubmitted,
    ForbiddenAction,
    MalformedRequest,
    UnknownAgent,
)
from mephisto.server.backend import AgentResponse, Caller, SendPacket, UploadedFile

__all__ = ["FakeAgent", "FakeBackend"]

DEFAULT_PAGE = (
    "<!doctype html><html><head><title>Fake task</title>"
    '<script src="/wrap_crowd_source.js"></script></head>'
    '<body><div id="mephisto-root"></div>'
    '<script src="/_mephisto/static-task.js"></script></body></html>'
)


@dataclass
class FakeAgent:
    agent_id: str
    worker_name: str
    registration_id: str
    unit_index: int | None  # None for an onboarding agent
    status: str = "in task"  # "onboarding", "in task", "completed", "returned", ...
    final_data: Any = None
    files: list[tuple[str, str, bytes]] = field(default_factory=list)  # field, name, data
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def onboarding(self) -> bool:
        return self.unit_index is None


class FakeBackend:
    """Hands out `units` units (None: unlimited) to whoever asks, one per registration.

    `onboarding=True` makes a worker pass onboarding first; `onboarding_data == {"pass":
    False}` fails it. Live updates are echoed back as `client_bound_live_update` when
    `echo_live_updates`. `raise_on[method_name] = exc` makes that method raise `exc`.
    """

    def __init__(
        self,
        units: int | None = None,
        *,
        onboarding: bool = False,
        static_dir: Path | None = None,
        page: str = DEFAULT_PAGE,
        provider_script: str = "function getWorkerName() { return null; }\n",
        task_config: dict[str, Any] | None = None,
        echo_live_updates: bool = True,
    ) -> None:
        self.units = units
        self.onboarding = onboarding
        self._static_dir = static_dir
        self.page = page
        self.script = provider_script
        self.config = task_config if task_config is not None else {
            "task_title": "Fake task", "block_mobile": False,
        }
        self.echo_live_updates = echo_live_updates
        self.raise_on: dict[str, BaseException] = {}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.agents: dict[str, FakeAgent] = {}
        self.by_registration: dict[str, str] = {}
        self.passed_onboarding: set[str] = set()
        self.next_unit = 0
        # (agent id, final data, [(field name, file name, content type, data), ...])
        self.submissions: list[tuple[str, Any, list[tuple[str, str, str, bytes]]]] = []
        self.errors: list[tuple[str | None, Any]] = []
        self.sockets: dict[str, SendPacket] = {}
        self.packets: list[tuple[str, dict[str, Any]]] = []
        self.closed_sockets: list[tuple[str, SendPacket]] = []

    def _call(self, name: str, *args: Any) -> None:
        self.calls.append((name, args))
        exc = self.raise_on.get(name)
        if exc is not None:
            raise exc

    def _agent(self, agent_id: str, caller: Caller | None = None) -> FakeAgent:
        """The agent, if the caller (when it names a worker) is its worker."""
        agent = self.agents.get(agent_id)
        if agent is None:
            raise UnknownAgent(f"no agent with id {agent_id!r}")
        claimed = (caller or {}).get("worker_id")
        if claimed is not None and claimed != agent.worker_name:
            raise ForbiddenAction("this agent belongs to another worker")
        return agent

    def _new_agent(self, worker: str, registration: str, unit: int | None) -> FakeAgent:
        prefix = "onboarding-" if unit is None else ""
        agent = FakeAgent(prefix + secrets.token_urlsafe(16), worker, registration, unit,
                          status="onboarding" if unit is None else "in task")
        self.agents[agent.agent_id] = agent
        self.by_registration[registration] = agent.agent_id
        return agent

    def _answer(self, agent: FakeAgent) -> AgentResponse:
        init: Any = {"onboarding": True} if agent.onboarding else {"unit": agent.unit_index}
        return {"agent_id": agent.agent_id, "worker_id": f"fake-{agent.worker_name}",
                "init_task_data": init}

    def _assign(self, worker: str, registration: str) -> AgentResponse:
        if self.units is not None and self.next_unit >= self.units:
            return {"agent_id": None, "worker_id": f"fake-{worker}",
                    "failure_reason": "There is no more work on this task."}
        self.next_unit += 1
        return self._answer(self._new_agent(worker, registration, self.next_unit - 1))

    # -- TaskBackend --------------------------------------------------------------------

    def task_page(self) -> str:
        return self.page

    def provider_script(self) -> str:
        return self.script

    def static_dir(self) -> Path | None:
        return self._static_dir

    async def task_config(self) -> dict[str, Any]:
        self._call("task_config")
        return self.config

    async def request_agent(self, provider_data: dict[str, Any], caller: Caller) -> AgentResponse:
        self._call("request_agent", provider_data)
        worker = provider_data.get("worker_name")
        registration = provider_data.get("agent_registration_id")
        if not isinstance(worker, str) or not isinstance(registration, str):
            raise MalformedRequest("provider_data needs worker_name and agent_registration_id")
        existing = self.by_registration.get(registration)
        if existing is not None:  # a reload: same agent again
            return self._answer(self.agents[existing])
        if self.onboarding and worker not in self.passed_onboarding:
            return self._answer(self._new_agent(worker, registration, None))
        return self._assign(worker, registration)

    async def submit_onboarding(
        self, agent_id: str, onboarding_data: Any, caller: Caller
    ) -> AgentResponse:
        self._call("submit_onboarding", agent_id, onboarding_data)
        agent = self._agent(agent_id, caller)
        if not agent.onboarding or agent.status != "onboarding":
            raise ForbiddenAction(f"agent {agent_id} is not onboarding")
        agent.final_data = onboarding_data
        if onboarding_data == {"pass": False}:
            agent.status = "rejected"
            return {"agent_id": None, "worker_id": f"fake-{agent.worker_name}",
                    "failure_reason": "You did not pass the qualification test."}
        agent.status = "approved"
        self.passed_onboarding.add(agent.worker_name)
        del self.by_registration[agent.registration_id]
        return self._assign(agent.worker_name, agent.registration_id)

    async def check_submit(self, agent_id: str, caller: Caller) -> None:
        self._call("check_submit", agent_id)
        agent = self._agent(agent_id, caller)
        if agent.onboarding:
            raise ForbiddenAction(f"agent {agent_id} is onboarding: use /submit_onboarding")
        if agent.status not in ("in task", "completed"):
            raise ForbiddenAction(f"agent {agent_id} is {agent.status}: it cannot submit")

    async def submit_task(
        self, agent_id: str, final_data: Any, files: list[UploadedFile], caller: Caller
    ) -> None:
        self._call("submit_task", agent_id, final_data, files)
        await self.check_submit(agent_id, caller)
        agent = self.agents[agent_id]
        if agent.status == "completed":
            if agent.final_data == final_data:
                return  # the same submission again: answered, nothing changes
            raise AlreadySubmitted(f"agent {agent_id} already submitted")
        agent.status = "completed"
        agent.final_data = final_data
        kept = [(f.field_name, f.filename, f.content_type, f.read_bytes()) for f in files]
        agent.files = [(name, filename, data) for name, filename, _t, data in kept]
        self.submissions.append((agent_id, final_data, kept))

    async def submit_metadata(
        self, agent_id: str, metadata: dict[str, Any], caller: Caller
    ) -> dict[str, Any]:
        self._call("submit_metadata", agent_id, metadata)
        agent = self._agent(agent_id, caller)
        agent.metadata.update(metadata)
        return {"status": "ok", "metadata": agent.metadata}

    async def log_error(self, agent_id: str | None, error_data: Any) -> None:
        self._call("log_error", agent_id, error_data)
        self.errors.append((agent_id, error_data))

    async def agent_alive(self, agent_id: str, send: SendPacket, caller: Caller) -> None:
        self._call("agent_alive", agent_id)
        self._agent(agent_id, caller)
        self.sockets[agent_id] = send

    async def agent_packet(self, agent_id: str, packet: dict[str, Any]) -> None:
        self._call("agent_packet", agent_id, packet)
        self._agent(agent_id)
        self.packets.append((agent_id, packet))
        send = self.sockets.get(agent_id)
        if self.echo_live_updates and send is not None:
            await send(packets.live_update(agent_id, {"echo": packet.get("data")}))

    async def agent_socket_closed(self, agent_id: str, send: SendPacket) -> None:
        self._call("agent_socket_closed", agent_id)
        self.closed_sockets.append((agent_id, send))
        if self.sockets.get(agent_id) is send:
            del self.sockets[agent_id]
