"""Route what browsers send (through the server) to the live run, and back.

Implements `mephisto.server.backend.TaskBackend` for one live task run. A submit is
checked against the agent's in-memory state (exists, belongs to a unit, still working,
not already submitting), then committed through the group-commit writer, and only then
answered.
"""

from __future__ import annotations

import json
import logging
import re
import time
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mephisto.data_model.status import AgentState
from mephisto.errors import AlreadySubmitted, ForbiddenAction, UnknownAgent
from mephisto.server.backend import AgentResponse, SendPacket, UploadedFile
from mephisto.utils.dirs import get_run_dir

if TYPE_CHECKING:
    from mephisto.operations.live_run import AgentInfo
    from mephisto.operations.live_task_run import LiveTaskRun

logger = logging.getLogger(__name__)

_REVIEWED = frozenset(str(s) for s in (AgentState.COMPLETED, *AgentState.reviewed()))
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
MAX_LOGGED_ERRORS_PER_AGENT = 20


class ClientIOHandler:
    def __init__(self, run: LiveTaskRun) -> None:
        self.run = run
        self._errors_logged: dict[str | None, int] = {}

    # -- static parts, computed once ----------------------------------------------------

    @cached_property
    def _page(self) -> str:
        return self.run.blueprint.task_page()

    @cached_property
    def _script(self) -> str:
        return self.run.provider.wrap_crowd_source_js()

    @cached_property
    def _config(self) -> dict[str, Any]:
        return self.run.blueprint.get_frontend_args()

    def task_page(self) -> str:
        return self._page

    def provider_script(self) -> str:
        return self._script

    def static_dir(self) -> Path | None:
        return self.run.blueprint.static_dir()

    async def task_config(self) -> dict[str, Any]:
        return dict(self._config)

    # -- agents --------------------------------------------------------------------------

    async def request_agent(self, provider_data: dict[str, Any]) -> AgentResponse:
        return await self.run.pool.request_agent(provider_data)

    async def submit_onboarding(self, agent_id: str, onboarding_data: Any) -> AgentResponse:
        return await self.run.pool.submit_onboarding(agent_id, onboarding_data)

    def _agent(self, agent_id: str) -> AgentInfo:
        agent = self.run.pool.agents.get(agent_id)
        if agent is None:
            raise UnknownAgent("unknown agent id: request an agent first")
        return agent

    async def submit_task(self, agent_id: str, final_data: Any, files: list[UploadedFile]) -> None:
        run = self.run
        agent = self._agent(agent_id)
        if agent.unit is None:
            raise ForbiddenAction("this agent is doing onboarding: submit through /submit_onboarding")
        if agent.status in _REVIEWED:
            raise AlreadySubmitted("this unit was already submitted")
        if agent.busy:
            raise AlreadySubmitted("a submission for this unit is already being saved")
        if not agent.active:
            raise ForbiddenAction(f"this unit can no longer be submitted (status: {agent.status})")
        agent.busy = True
        started = time.perf_counter()
        try:
            run.blueprint.validate_submission(final_data)
            if files:
                saved = await run.writer.read(_save_files, run.task_run_id, agent_id, files)
                final_data = {**final_data, "files": saved} if isinstance(final_data, dict) else {
                    "data": final_data, "files": saved}
            state = {
                "inputs": agent.unit.init_data,
                "outputs": final_data,
                "times": {"task_start": agent.started, "task_end": time.time()},
                "provider_assignment_id": agent.provider_assignment,
            }
            await run.writer.run_batched(COMPLETE_AGENTS, (agent_id, agent.unit.unit_id, state))
        except Exception:
            run.metrics.submit_failed()
            raise
        finally:
            agent.busy = False
        run.metrics.submit_committed(time.perf_counter() - started)
        run.pool.agent_finished(agent, str(AgentState.COMPLETED))
        run.unit_completed(agent)

    async def submit_metadata(self, agent_id: str, metadata: dict[str, Any]) -> dict[str, Any]:
        agent = self._agent(agent_id)
        await self.run.writer.run(_merge_metadata, agent.agent_id, agent.is_onboarding, metadata)
        return {"status": "Metadata received", "agent_id": agent_id}

    async def log_error(self, agent_id: str | None, error_data: Any) -> None:
        count = self._errors_logged.get(agent_id, 0)
        if count >= MAX_LOGGED_ERRORS_PER_AGENT:
            return
        self._errors_logged[agent_id] = count + 1
        text = json.dumps(error_data)[:2000]
        logger.warning("browser error (agent %s): %s", agent_id, text)

    # -- websockets ---------------------------------------------------------------------

    async def agent_alive(self, agent_id: str, send: SendPacket) -> None:
        agent = self._agent(agent_id)
        agent.send = send
        await self.run.pool.notify_status(agent)

    async def agent_packet(self, agent_id: str, packet: dict[str, Any]) -> None:
        self._agent(agent_id)
        handler = getattr(self.run.blueprint, "on_live_update", None)
        if handler is not None:
            await self.run.in_thread(handler, agent_id, packet.get("data"))

    async def agent_socket_closed(self, agent_id: str, send: SendPacket) -> None:
        agent = self.run.pool.agents.get(agent_id)
        if agent is not None and agent.send is send:
            agent.send = None


# -- database operations (run on the writer thread) ------------------------------------


class _CompleteAgents:
    """Submissions, batched: a commit's submits in two statements."""

    def run_many(self, db: Any, items: list[tuple[str, str, Any]]) -> list[None]:
        db.complete_agents(items)
        return [None] * len(items)

    def run_one(self, db: Any, item: tuple[str, str, Any]) -> None:
        agent_id, _unit_id, state = item
        db.update_agent(agent_id, status=AgentState.COMPLETED, state=state)


COMPLETE_AGENTS = _CompleteAgents()


def _merge_metadata(db: Any, agent_id: str, onboarding: bool, metadata: dict[str, Any]) -> None:
    row = db.get_onboarding_agent(agent_id) if onboarding else db.get_agent(agent_id)
    state = dict(row.get("state") or {})
    state["metadata"] = {**state.get("metadata", {}), **metadata}
    if onboarding:
        db.update_onboarding_agent(agent_id, state=state)
    else:
        db.update_agent(agent_id, state=state)


def _save_files(db: Any, task_run_id: str, agent_id: str, files: list[UploadedFile]) -> list[dict[str, Any]]:
    folder = get_run_dir(task_run_id) / agent_id
    folder.mkdir(parents=True, exist_ok=True)
    saved = []
    for i, f in enumerate(files):
        name = _SAFE_NAME.sub("_", Path(f.filename).name).strip("._") or f"file{i}"
        target = folder / f"{i}-{name}"
        target.write_bytes(f.data)
        saved.append(
            {"field": f.field_name, "filename": f.filename, "content_type": f.content_type,
             "size": len(f.data), "path": str(target)}
        )
    return saved
