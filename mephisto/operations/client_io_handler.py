"""Route what browsers send (through the server) to the live run, and back.

Implements `mephisto.server.backend.TaskBackend` for one live task run. A submit is
checked against the agent's in-memory state (exists, is the caller's, belongs to a unit,
still working), then committed through the group-commit writer, and only then answered.

Submits are idempotent: the same data for an agent that already submitted is answered
with success again and changes nothing (a browser retrying a submit whose answer it
never got, also after the operator restarted: stored submits are looked up in the
database then); different data is `AlreadySubmitted`. A submit arriving while another
for the same agent is being saved waits for that one's outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mephisto.data_model.status import AgentState
from mephisto.db import batch
from mephisto.errors import (
    AlreadySubmitted,
    ForbiddenAction,
    InvalidTransition,
    UnknownAgent,
)
from mephisto.operations.live_run import agent_state
from mephisto.server.backend import AgentResponse, Caller, SendPacket, UploadedFile
from mephisto.utils.dirs import get_run_dir

if TYPE_CHECKING:
    from mephisto.operations.live_run import AgentInfo, RunContext, RunEvents
    from mephisto.operations.live_sessions import LiveSessions
    from mephisto.operations.worker_pool import WorkerPool

logger = logging.getLogger(__name__)

_SUBMITTED = frozenset(str(s) for s in (AgentState.COMPLETED, *AgentState.reviewed()))
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
MAX_SAVED_NAME = 100  # characters of an uploaded file's name kept in the saved file's name
MAX_LOGGED_ERRORS_PER_AGENT = 20
# browser errors from no agent (or an unknown one) share one budget per minute
MAX_LOGGED_ANONYMOUS_ERRORS_PER_MINUTE = 30
NOT_YOURS = "this agent belongs to another worker"
_CHECK_ONLY = object()
ONBOARDING_SUBMIT = "this agent is doing onboarding: submit through /submit_onboarding"


class ClientIOHandler:
    def __init__(self, ctx: RunContext, pool: WorkerPool, events: RunEvents,
                 live: LiveSessions | None = None) -> None:
        self.ctx = ctx
        self.pool = pool
        self.events = events
        self.live = live
        # set once the run has started (units launched, or a resumed run's state loaded):
        # until then agent calls wait, so none is answered from a half-loaded run
        self.ready = asyncio.Event()
        self._errors_logged: dict[str, int] = {}  # by known agent id
        self._anonymous_errors = (0.0, 0)  # (minute started at, errors logged in it)

    # -- static parts, computed once ----------------------------------------------------

    @cached_property
    def _page(self) -> str:
        return self.ctx.blueprint.task_page()

    @cached_property
    def _script(self) -> str:
        return self.ctx.provider.wrap_crowd_source_js()

    @cached_property
    def _config(self) -> dict[str, Any]:
        return self.ctx.blueprint.get_frontend_args()

    def task_page(self) -> str:
        return self._page

    def provider_script(self) -> str:
        return self._script

    def static_dir(self) -> Path | None:
        return self.ctx.blueprint.static_dir()

    async def task_config(self) -> dict[str, Any]:
        return dict(self._config)

    # -- agents --------------------------------------------------------------------------

    async def request_agent(self, provider_data: dict[str, Any], caller: Caller) -> AgentResponse:
        await self.ready.wait()
        return await self.pool.request_agent(provider_data, caller)

    async def submit_onboarding(
        self, agent_id: str, onboarding_data: Any, caller: Caller
    ) -> AgentResponse:
        await self.ready.wait()
        return await self.pool.submit_onboarding(agent_id, onboarding_data, caller)

    def _check_caller(self, worker_name: str, caller: Caller) -> None:
        if caller:
            claimed = self.ctx.provider.worker_name_from_request(caller)
            if claimed is not None and claimed != worker_name:
                raise ForbiddenAction(NOT_YOURS)

    def _agent(self, agent_id: str, caller: Caller) -> AgentInfo | None:
        """The live agent (None when it is not in memory: it may be stored, from before
        a restart), once the caller is known to be its worker."""
        agent = self.pool.agent(agent_id)
        if agent is not None:
            self._check_caller(agent.worker.worker_name, caller)
        return agent

    async def _stored(self, agent_id: str, caller: Caller) -> dict[str, Any]:
        """An agent of this run read from the database (`UnknownAgent` if none), once
        the caller is known to be its worker."""
        row = await self.ctx.writer.read(batch.stored_agent, agent_id, self.ctx.task_run_id)
        if row is None:
            raise UnknownAgent("unknown agent id: request an agent first")
        self._check_caller(row["worker_name"], caller)
        return row

    async def check_submit(self, agent_id: str, caller: Caller) -> None:
        await self.ready.wait()
        agent = self._agent(agent_id, caller)
        if agent is None:
            _check_resubmission(await self._stored(agent_id, caller), _CHECK_ONLY)
            return
        if agent.unit is None:
            raise ForbiddenAction(ONBOARDING_SUBMIT)
        if not agent.active and agent.status not in _SUBMITTED:
            raise ForbiddenAction(f"this unit can no longer be submitted (status: {agent.status})")

    async def submit_task(
        self, agent_id: str, final_data: Any, files: list[UploadedFile], caller: Caller
    ) -> None:
        await self.ready.wait()
        ctx = self.ctx
        agent = self._agent(agent_id, caller)
        if agent is None:  # submitted before a restart, maybe: a retry is answered again
            _check_resubmission(await self._stored(agent_id, caller), final_data)
            return
        if agent.unit is None:
            raise ForbiddenAction(ONBOARDING_SUBMIT)
        while agent.pending is not None:  # another submit for it is being saved
            await agent.pending
        if agent.status in _SUBMITTED:
            _check_resubmission(await self._stored(agent_id, caller), final_data)
            return
        if not agent.active:
            raise ForbiddenAction(f"this unit can no longer be submitted (status: {agent.status})")
        started = time.perf_counter()
        with agent.saving():
            try:
                ctx.blueprint.validate_submission(final_data)
                if files:
                    saved = await ctx.background.in_thread(
                        _save_files, ctx.task_run_id, agent_id, files)
                    final_data = {**final_data, "files": saved} if isinstance(final_data, dict) \
                        else {"data": final_data, "files": saved}
                state = agent_state(agent.unit.init_data, agent.started,
                                    agent.provider_assignment, final_data, time.time())
                recorded = self.live.packets_of(agent_id) if self.live is not None else None
                if recorded:
                    state["live_updates"] = recorded
                await ctx.writer.run_batched(
                    batch.COMPLETE_AGENTS,
                    (agent_id, agent.unit.unit_id, state, not agent.state_extended))
            except InvalidTransition:
                # the database says this agent is no longer at work: an earlier commit
                # whose answer was lost (connection dropped at COMMIT) may have stored it
                row = await self._stored(agent_id, caller)
                if row["status"] not in _SUBMITTED:
                    ctx.metrics.submit_failed()
                    raise
                self._finished(agent)
                _check_resubmission(row, final_data)
                return
            except Exception:
                ctx.metrics.submit_failed()
                raise
        ctx.metrics.submit_committed(time.perf_counter() - started)
        self._finished(agent)

    def _finished(self, agent: AgentInfo) -> None:
        self.pool.agent_finished(agent, str(AgentState.COMPLETED))
        self.events.unit_completed(agent)

    async def submit_metadata(
        self, agent_id: str, metadata: dict[str, Any], caller: Caller
    ) -> dict[str, Any]:
        await self.ready.wait()
        agent = self._agent(agent_id, caller)
        if agent is None:
            await self._stored(agent_id, caller)  # an agent of this run, from before a restart
        else:
            agent.state_extended = True  # before the write: a submit queued after merges
        await self.ctx.writer.run(batch.merge_metadata, agent_id, metadata)
        return {"status": "Metadata received", "agent_id": agent_id}

    async def log_error(self, agent_id: str | None, error_data: Any) -> None:
        if agent_id is not None and self.pool.agent(agent_id) is not None:
            count = self._errors_logged.get(agent_id, 0)
            if count >= MAX_LOGGED_ERRORS_PER_AGENT:
                return
            self._errors_logged[agent_id] = count + 1
        else:  # no agent, or one we do not know: one shared budget
            minute, count = self._anonymous_errors
            now = time.monotonic()
            if now - minute >= 60:
                minute, count = now, 0
            if count >= MAX_LOGGED_ANONYMOUS_ERRORS_PER_MINUTE:
                return
            self._anonymous_errors = (minute, count + 1)
        # JSON escapes control characters: nothing a browser sends can forge a log line
        text = json.dumps(error_data, ensure_ascii=True)[:2000]
        logger.warning("browser error (agent %s): %s", json.dumps(agent_id)[:200], text)

    # -- websockets ---------------------------------------------------------------------

    async def agent_alive(self, agent_id: str, send: SendPacket, caller: Caller) -> None:
        await self.ready.wait()
        agent = self._agent(agent_id, caller)
        if agent is None:
            raise UnknownAgent("unknown agent id: request an agent first")
        agent.send = send
        await self.pool.notify_status(agent)
        if self.live is not None:
            self.live.connected(agent)

    async def agent_packet(self, agent_id: str, packet: dict[str, Any]) -> None:
        await self.ready.wait()
        agent = self.pool.agent(agent_id)
        if agent is None:
            raise UnknownAgent("unknown agent id: request an agent first")
        if self.live is not None and agent.active:
            self.live.deliver(agent_id, packet.get("data"))

    async def agent_socket_closed(self, agent_id: str, send: SendPacket) -> None:
        await self.ready.wait()
        agent = self.pool.agent(agent_id)
        if agent is not None and agent.send is send:
            agent.send = None
            if self.live is not None:
                self.live.disconnected(agent)


def _check_resubmission(stored: dict[str, Any], final_data: Any) -> None:
    """Answer a submit for an agent whose submission is stored: the same data again is a
    retry (success, nothing changes); anything else is refused. With `_CHECK_ONLY`, only
    the agent is checked (before a multipart submit's files are read)."""
    if stored["onboarding"]:
        raise ForbiddenAction(ONBOARDING_SUBMIT)
    if stored["status"] not in _SUBMITTED:
        raise ForbiddenAction(f"this unit can no longer be submitted (status: {stored['status']})")
    if final_data is not _CHECK_ONLY and not _same_submission(stored["outputs"], final_data):
        raise AlreadySubmitted("this unit was already submitted")


def _same_submission(stored: Any, final_data: Any) -> bool:
    """Whether `final_data` is what was stored as a submission's outputs (a multipart
    submit's outputs also list the files saved with it)."""
    if stored == final_data:
        return True
    if isinstance(stored, dict) and "files" in stored:
        rest = {k: v for k, v in stored.items() if k != "files"}
        return rest == final_data or rest == {"data": final_data}
    return False


# -- files ---------------------------------------------------------------------------------


def _save_files(task_run_id: str, agent_id: str, files: list[UploadedFile]) -> list[dict[str, Any]]:
    """Move a submit's uploaded files into the agent's folder of the run directory."""
    folder = get_run_dir(task_run_id) / agent_id
    folder.mkdir(parents=True, exist_ok=True)
    saved: list[dict[str, Any]] = []
    try:
        for i, f in enumerate(files):
            name = _SAFE_NAME.sub("_", Path(f.filename).name).strip("._")[:MAX_SAVED_NAME]
            target = folder / f"{i}-{name or f'file{i}'}"
            os.replace(f.path, target)
            saved.append(
                {"field": f.field_name, "filename": f.filename, "content_type": f.content_type,
                 "size": f.size, "path": str(target)}
            )
    except BaseException:
        for entry in saved:
            with contextlib.suppress(OSError):
                os.unlink(entry["path"])
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if nothing else is in it
        raise
    return saved
