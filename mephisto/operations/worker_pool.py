"""Workers of a live run: who may work, which unit they get, and their agents.

Rules enforced here (all in memory; each change is committed before it is answered):
- a worker never gets two units of one assignment (also held by a unique index);
- `maximum_units_per_worker` counts the worker's units across every run of the task;
- `allowed_concurrent` caps the units a worker has open at once in this run;
- blocked workers, holders of the `block_qualification`, and workers who do not meet
  `shared_state.qualifications` get no unit, with a reason the page shows;
- with onboarding configured, a worker without the onboarding qualification gets an
  onboarding agent first (one at a time: asking again returns the same one); passing
  grants it (value 1), failing records value 0, and a failure stays until a requester
  clears it (revokes the qualification): a later pass does not overturn it;
- a worker who asks again for the same provider assignment while their agent is still
  working gets that agent back (reload, reconnect), also when the requests race: one
  worker's requests are decided one at a time (`WorkerInfo.lock`);
- a request naming one worker (the provider shim's query parameters) cannot act on
  another worker's agent;
- an agent that passes `assignment_duration_in_seconds` times out and its unit goes
  back to other workers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

from mephisto.data_model import packets
from mephisto.data_model.status import AgentState
from mephisto.db import batch
from mephisto.db.rows import new_agent_id
from mephisto.errors import (
    AlreadySubmitted,
    DatabaseUnavailable,
    EntryAlreadyExists,
    EntryDoesNotExist,
    ForbiddenAction,
    InvalidTransition,
    MalformedRequest,
    NotEligible,
    UnknownAgent,
)
from mephisto.operations.live_run import (
    RETRY_DELAYS,
    AgentInfo,
    RunContext,
    RunEvents,
    UnitInfo,
    UnitSupply,
    WorkerInfo,
    agent_state,
    until_saved,
)
from mephisto.operations.quality_checks import evaluation_unit, uses_evaluation_units
from mephisto.server.backend import AgentResponse, Caller
from mephisto.utils.qualifications import worker_meets_requirements

logger = logging.getLogger(__name__)

STANDING_TTL = 10.0  # seconds a worker's qualifications/block status are trusted
CHECKS_WAIT = 15.0  # seconds a request waits for the checks of the worker's last submits
# pauses between asking whether an agent whose commit was cut at COMMIT exists
CREATION_CHECK_PAUSES = (0.05, 0.1, 0.25, 0.5, 1.0, 1.0)

NO_MORE_WORK = "There is no more work available for you on this task right now. Thank you!"
RUN_CLOSED = "This task is closed and accepts no more work."
BLOCKED = "You are blocked from working on this task."
UNQUALIFIED = "You do not have the qualifications required for this task."
FAILED_ONBOARDING = "You did not pass the qualification step of this task."
AT_MAXIMUM = "You have done the maximum number of units allowed for this task. Thank you!"
AT_CONCURRENT = "Please finish the unit you have open before starting another."
NOT_ALLOWED = "You cannot work on the units left in this task."


class WorkerPool:
    def __init__(self, ctx: RunContext, units: UnitSupply, events: RunEvents) -> None:
        self.ctx = ctx
        self.units = units
        self.events = events
        self.closed = False  # the run accepts no more work (agents at work may submit)
        self.workers: dict[str, WorkerInfo] = {}  # by worker name
        self.agents: dict[str, AgentInfo] = {}
        self._by_provider_assignment: dict[tuple[str, str], AgentInfo] = {}
        self._onboarding_by_worker: dict[str, AgentInfo] = {}
        self._worker_locks: dict[str, asyncio.Lock] = {}
        # workers whose standing is being re-read, by id: (worker, read done)
        self._standing_due: dict[str, tuple[WorkerInfo, asyncio.Future[None]]] = {}

    # -- workers -------------------------------------------------------------------

    async def get_worker(self, name: str) -> WorkerInfo:
        worker = self.workers.get(name)
        if worker is not None:
            return worker
        lock = self._worker_locks.setdefault(name, asyncio.Lock())
        async with lock:
            worker = self.workers.get(name)
            if worker is None:
                ctx = self.ctx
                record = await ctx.writer.run_batched(batch.LOAD_WORKERS, self._load_item(name))
                worker = self._add_worker(_worker_from(record))
        return worker

    def _load_item(self, name: str) -> batch.LoadItem:
        ctx = self.ctx
        return (name, ctx.provider_type, ctx.task_run_id, ctx.task_id, ctx.requester_id)

    def _add_worker(self, worker: WorkerInfo) -> WorkerInfo:
        self.workers[worker.worker_name] = worker
        # only first sight needs the lock: later requests find the worker in `workers`
        self._worker_locks.pop(worker.worker_name, None)
        return worker

    async def _first_request(
        self, name: str, provider_assignment: str | None
    ) -> WorkerInfo | AgentResponse:
        """A request from a worker this run has not seen yet. Its unit is chosen before
        the commit that finds or creates the worker, and that one commit creates its
        agent too (`batch.FIRST_AGENTS`): one commit instead of two. A worker new to the
        database has no past agents, qualifications or blocks, so the unit stands; for
        a worker found there (a returning worker) the writer checks, from what it read
        of them, that the unit still stands (`_stands_for`). Returns that agent's
        answer, or the worker, for the usual path, when the unit did not stand for the
        worker found or what a worker gets depends on more than their record
        (`_newcomer_agent`)."""
        lock = self._worker_locks.setdefault(name, asyncio.Lock())
        async with lock:
            worker = self.workers.get(name)
            if worker is not None:
                return worker
            ctx = self.ctx
            newcomer = WorkerInfo("", name, standing_at=time.monotonic())
            agent = await self._newcomer_agent(newcomer, provider_assignment)
            if agent is None:
                record = await ctx.writer.run_batched(batch.LOAD_WORKERS, self._load_item(name))
                return self._add_worker(_worker_from(record))
            try:
                sight = await ctx.writer.run_batched(batch.FIRST_AGENTS, (
                    self._load_item(name), self._agent_row(agent), self._stands_for(agent)))
            except DatabaseUnavailable as exc:
                # one transaction: the worker and its agent were both saved, or neither
                await self._stored_despite(agent, exc, self._settle_first)
                await self._settle_first(agent)
                return self._response(agent)
            except BaseException:
                self._unreserve(agent)
                raise
            if not sight.created:  # known from before
                worker = _worker_from(sight.record)
                if not sight.agent_made:  # its unit is decided from its record
                    self._unreserve(agent)
                    return self._add_worker(worker)
                self._move_reservation(agent, worker)  # the record holds it already
                self._add_worker(worker)
                return self._started(agent)
            newcomer.worker_id = sight.record.worker_id
            self._add_worker(newcomer)
            if sight.agent_error is not None:
                self._refuse_agent(agent, sight.agent_error)
            return self._started(agent)

    async def _newcomer_agent(
        self, newcomer: WorkerInfo, provider_assignment: str | None
    ) -> AgentInfo | None:
        """An agent, with its unit reserved, for a worker with an empty record; None
        when the usual path decides: the run is closed, what a worker gets depends on
        its standing or on a check (onboarding, evaluation units, `worker_can_do_unit`,
        qualification requirements), or no unit is open."""
        ctx = self.ctx
        if (self.closed or ctx.onboarding_qualification is not None
                or ctx.shared_state.worker_can_do_unit is not None
                or uses_evaluation_units(ctx.blueprint) or self._refusal(newcomer) is not None):
            return None
        unit = await self.units.take(_any_unit)
        return None if unit is None else self._reserve(newcomer, unit, provider_assignment)

    def _stands_for(self, agent: AgentInfo) -> Callable[[batch.WorkerRecord], bool]:
        """Whether the unit reserved for a worker new to this run stands for the worker
        the database holds under that name, from its record: not on an assignment they
        worked on, and nothing refuses them (`_refusal`; `_newcomer_agent` ruled out the
        checks a record does not answer). Runs on the writer's thread: it reads only the
        record and the run's fixed settings."""
        assert agent.unit is not None
        assignment_id = agent.unit.assignment_id

        def stands(record: batch.WorkerRecord) -> bool:
            if assignment_id in record.assignments:
                return False
            return self._refusal(_worker_from(record)) is None

        return stands

    @staticmethod
    def _move_reservation(agent: AgentInfo, worker: WorkerInfo) -> None:
        """Count a reserved agent on `worker` (read from the database just before the
        agent was stored, in the same commit) instead of the placeholder it was reserved
        on."""
        assert agent.unit is not None
        worker.assignments.add(agent.unit.assignment_id)
        worker.active += 1
        worker.task_units += 1
        agent.worker = worker

    async def _settle_first(self, agent: AgentInfo) -> None:
        """A worker's first commit whose outcome was unknown, once the database answers:
        if it was saved, the agent joins the worker as read from the database now (or as
        a retry loaded them meanwhile) and is tracked; else its unit is freed."""
        assert agent.unit is not None
        name = agent.worker.worker_name
        worker_id = await until_saved(
            lambda: self.ctx.writer.read(batch.agent_worker, agent.agent_id))
        if worker_id is None:
            self._unreserve(agent)
            return
        loaded = self.workers.get(name)
        if loaded is None:  # the worker may have had a record before: read it
            record = await until_saved(
                lambda: self.ctx.writer.run_batched(batch.LOAD_WORKERS, self._load_item(name)))
            loaded = self.workers.get(name) or self._add_worker(_worker_from(record))
        # read from the database after the commit: it holds this agent
        agent.worker = loaded
        loaded.assignments.add(agent.unit.assignment_id)
        loaded.active += 1
        self._started(agent)

    async def _refresh_standing(self, worker: WorkerInfo) -> None:
        """Re-read a worker's qualifications and block once they are STANDING_TTL old.
        The workers due in one turn of the loop are read together, in one query set."""
        if time.monotonic() - worker.standing_at < STANDING_TTL:
            return
        waiting = self._standing_due.get(worker.worker_id)
        if waiting is None:
            loop = asyncio.get_running_loop()
            if not self._standing_due:
                loop.call_soon(lambda: self.ctx.background.spawn(self._read_standing()))
            waiting = self._standing_due[worker.worker_id] = (worker, loop.create_future())
        await asyncio.shield(waiting[1])

    async def _read_standing(self) -> None:
        due, self._standing_due = self._standing_due, {}
        try:
            standing = await self.ctx.writer.read(
                batch.workers_standing, list(due), self.ctx.requester_id
            )
        except Exception as exc:
            for _worker, future in due.values():
                if not future.done():
                    future.set_exception(exc)
            return
        for worker_id, (worker, future) in due.items():
            _set_standing(worker, *standing[worker_id])
            if not future.done():
                future.set_result(None)

    def _refusal(self, worker: WorkerInfo) -> str | None:
        """Why this worker may not take a unit now (None: they may)."""
        ctx = self.ctx
        block_qual = ctx.blueprint_args.get("block_qualification")
        if worker.blocked or (block_qual and block_qual in worker.granted):
            return BLOCKED
        if ctx.requirements and not worker_meets_requirements(worker.granted, ctx.requirements):
            return UNQUALIFIED
        maximum = ctx.task_args.maximum_units_per_worker
        if maximum and worker.task_units >= maximum:
            return AT_MAXIMUM
        concurrent = ctx.task_args.allowed_concurrent
        if concurrent and worker.active >= concurrent:
            return AT_CONCURRENT
        return None

    # -- request_agent ------------------------------------------------------------

    async def request_agent(self, provider_data: dict[str, Any], caller: Caller) -> AgentResponse:
        provider = self.ctx.provider
        name = provider.worker_name_from_registration(provider_data)
        provider_assignment = provider_data.get("assignment_id")
        if provider_assignment is not None and not isinstance(provider_assignment, str):
            raise MalformedRequest("provider_data.assignment_id must be a string")
        claimed = provider.worker_name_from_request(caller) if caller else None
        if claimed is not None and claimed != name:
            raise ForbiddenAction("the request names another worker than its registration")
        worker = self.workers.get(name)
        if worker is None:
            first = await self._first_request(name, provider_assignment)
            if not isinstance(first, WorkerInfo):
                return first
            worker = first
        async with worker.lock:
            return await self._request_agent(worker, provider_assignment)

    async def _request_agent(
        self, worker: WorkerInfo, provider_assignment: str | None
    ) -> AgentResponse:
        # a reload or reconnect gets the agent it already has
        existing = self._find_active(worker, provider_assignment)
        if existing is not None:
            return self._response(existing)
        if self.closed:
            raise NotEligible(RUN_CLOSED, worker.worker_id)

        if worker.checks:  # what they submitted may change what they get next
            await asyncio.wait(list(worker.checks), timeout=CHECKS_WAIT)
            worker.standing_at = 0.0
        await self._refresh_standing(worker)
        onboarding = self.ctx.onboarding_qualification
        if onboarding is not None:
            value = worker.granted.get(onboarding)
            if value is not None and not value:
                raise NotEligible(FAILED_ONBOARDING, worker.worker_id)
            if value is None:
                reason = self._refusal(worker)
                if reason is not None:
                    raise NotEligible(reason, worker.worker_id)
                return self._response(await self._new_onboarding_agent(worker, provider_assignment))
        return await self._assign(worker, provider_assignment)

    def _find_active(self, worker: WorkerInfo, provider_assignment: str | None) -> AgentInfo | None:
        onboarding = self._onboarding_by_worker.get(worker.worker_id)
        if onboarding is not None and onboarding.active:
            return onboarding
        if provider_assignment is None:
            return None
        agent = self._by_provider_assignment.get((worker.worker_id, provider_assignment))
        return agent if agent is not None and agent.active else None

    async def _assign(self, worker: WorkerInfo, provider_assignment: str | None) -> AgentResponse:
        ctx = self.ctx
        reason = self._refusal(worker)
        if reason is not None:
            raise NotEligible(reason, worker.worker_id)
        check = ctx.shared_state.worker_can_do_unit

        def acceptable(unit: UnitInfo) -> bool:
            if unit.assignment_id in worker.assignments:
                return False
            return check is None or bool(check(worker, unit))

        unit = None
        if uses_evaluation_units(ctx.blueprint):
            unit = await evaluation_unit(ctx, self.units, worker)
        if unit is None:
            unit = await self.units.take(acceptable)
        if unit is None:
            reason = NOT_ALLOWED if self.units.has_open() else NO_MORE_WORK
            raise NotEligible(reason, worker.worker_id)
        agent = self._reserve(worker, unit, provider_assignment)
        try:
            await ctx.writer.run_batched(batch.CREATE_AGENTS, self._agent_row(agent))
        except NotEligible:  # at the maximum, counting other processes' runs of the task
            self._unreserve(agent)
            worker.task_units = max(worker.task_units, ctx.task_args.maximum_units_per_worker)
            raise NotEligible(AT_MAXIMUM, worker.worker_id) from None
        except (EntryAlreadyExists, InvalidTransition, EntryDoesNotExist) as exc:
            self._refuse_agent(agent, exc)
        except DatabaseUnavailable as exc:
            await self._stored_despite(agent, exc, self._settle_creation)
        except BaseException:
            self._unreserve(agent)
            raise
        return self._started(agent)

    def _reserve(
        self, worker: WorkerInfo, unit: UnitInfo, provider_assignment: str | None
    ) -> AgentInfo:
        """The agent `worker` gets for `unit`, reserved in memory before it is committed:
        the loop is single-threaded, so no one else takes the unit meanwhile."""
        worker.assignments.add(unit.assignment_id)
        worker.active += 1
        worker.task_units += 1
        started = time.time()
        return AgentInfo(
            agent_id=new_agent_id(),
            worker=worker,
            unit=unit,
            status=str(AgentState.IN_TASK),
            started=started,
            provider_assignment=provider_assignment,
        )

    def _agent_row(self, agent: AgentInfo) -> dict[str, Any]:
        """What `batch.create_agents` stores for a reserved agent."""
        ctx = self.ctx
        unit = agent.unit
        assert unit is not None
        return {
            "agent_id": agent.agent_id,
            "worker_id": agent.worker.worker_id,
            "unit_id": unit.unit_id,
            "task_id": ctx.task_id,
            "task_run_id": ctx.task_run_id,
            "assignment_id": unit.assignment_id,
            "task_type": ctx.task_type,
            "provider_type": ctx.provider_type,
            "status": AgentState.IN_TASK,
            "state": agent_state(unit.init_data, agent.started, agent.provider_assignment),
            "task_maximum": ctx.task_args.maximum_units_per_worker or None,
        }

    def _refuse_agent(self, agent: AgentInfo, error: Exception) -> NoReturn:
        """The database refused a reserved agent (its unit is no longer launched, the
        worker already has one on that assignment): the worker cannot have that unit."""
        assert agent.unit is not None
        self._unreserve(agent, keep_assignment=True)
        logger.error("could not assign unit %s to worker %s", agent.unit.unit_id,
                     agent.worker.worker_name, exc_info=error)
        raise NotEligible(NOT_ALLOWED, agent.worker.worker_id) from None

    def _started(self, agent: AgentInfo) -> AgentResponse:
        self._track(agent)
        self.ctx.metrics.agent_started()
        self.events.agent_started(agent)
        return self._response(agent)

    def _unreserve(self, agent: AgentInfo, keep_assignment: bool = False) -> None:
        """Undo `_assign`'s reservation of a unit whose agent was not created."""
        assert agent.unit is not None
        if not keep_assignment:
            agent.worker.assignments.discard(agent.unit.assignment_id)
        agent.worker.active -= 1
        agent.worker.task_units -= 1
        if agent.unit.unit_index < 0:  # made for this worker: not offered to others
            self.events.unit_freed(agent.unit)
        else:
            self.units.give_back(agent.unit)

    async def _stored_despite(
        self, agent: AgentInfo, error: DatabaseUnavailable,
        settle: Callable[[AgentInfo], Coroutine[Any, Any, None]],
    ) -> None:
        """The commit creating `agent` failed with `error`, but may have gone through
        (the connection dropped at COMMIT): returns once the database says the agent is
        stored. Otherwise `error` is raised again, the unit offered again only once the
        database says the agent is not there: at once when it says so, or, while it
        does not answer, by `settle(agent)` in the background."""
        created = await self._agent_created(agent.agent_id)
        if created is None:
            self.ctx.background.spawn(settle(agent))
            raise error
        if not created:
            self._unreserve(agent)
            raise error

    async def _agent_created(self, agent_id: str) -> bool | None:
        """Whether the agent is in the database; asked for a few seconds while the
        database is unavailable (an outage is often a moment), then None: unknown."""
        for pause in CREATION_CHECK_PAUSES:
            try:
                return await self.ctx.writer.read(batch.agent_exists, agent_id)
            except DatabaseUnavailable:
                await asyncio.sleep(pause)
        return None

    async def _settle_creation(self, agent: AgentInfo) -> None:
        """Once the database answers again: track the agent if its creation was saved
        (a reload then gets it back), else free its unit."""
        if await until_saved(lambda: self.ctx.writer.read(batch.agent_exists, agent.agent_id)):
            self._started(agent)
        else:
            self._unreserve(agent)

    def _track(self, agent: AgentInfo) -> None:
        self.agents[agent.agent_id] = agent
        if agent.provider_assignment is not None:
            self._by_provider_assignment[(agent.worker.worker_id, agent.provider_assignment)] = agent
        if agent.is_onboarding:
            self._onboarding_by_worker[agent.worker.worker_id] = agent
        self._schedule_timeout(agent)

    def _response(self, agent: AgentInfo) -> AgentResponse:
        data = self.ctx.blueprint.onboarding_init_data() if agent.unit is None else agent.unit.init_data
        return {
            "agent_id": agent.agent_id,
            "worker_id": agent.worker.worker_id,
            "init_task_data": data,
            "failure_reason": None,
        }

    # -- onboarding ------------------------------------------------------------------

    async def _new_onboarding_agent(
        self, worker: WorkerInfo, provider_assignment: str | None
    ) -> AgentInfo:
        ctx = self.ctx
        agent_id = await ctx.writer.run(
            batch.create_onboarding_agent, worker.worker_id, ctx.task_id, ctx.task_run_id,
            ctx.task_type,
        )
        agent = AgentInfo(
            agent_id=agent_id,
            worker=worker,
            unit=None,
            status=str(AgentState.ONBOARDING),
            started=time.time(),
            provider_assignment=provider_assignment,
        )
        self._track(agent)
        return agent

    async def submit_onboarding(
        self, agent_id: str, onboarding_data: Any, caller: Caller
    ) -> AgentResponse:
        agent = self.agents.get(agent_id)
        if agent is None:
            raise UnknownAgent("unknown agent id")
        claimed = self.ctx.provider.worker_name_from_request(caller) if caller else None
        if claimed is not None and claimed != agent.worker.worker_name:
            raise ForbiddenAction("this agent belongs to another worker")
        if not agent.is_onboarding:
            raise ForbiddenAction("this agent is not doing onboarding: submit through /submit_task")
        async with agent.worker.lock:
            return await self._submit_onboarding(agent, onboarding_data)

    async def _submit_onboarding(self, agent: AgentInfo, onboarding_data: Any) -> AgentResponse:
        ctx = self.ctx
        if agent.status in (AgentState.APPROVED, AgentState.REJECTED):
            raise AlreadySubmitted("this onboarding was already submitted")
        if not agent.active:
            raise ForbiddenAction(f"this onboarding can no longer be submitted (status: {agent.status})")
        with agent.saving():
            data = {
                "inputs": ctx.blueprint.onboarding_init_data(),
                "outputs": onboarding_data,
                "times": {"task_start": agent.started, "task_end": time.time()},
            }
            passed = await ctx.background.in_thread(ctx.blueprint.validate_onboarding, data)
            qualification = ctx.onboarding_qualification
            assert qualification is not None  # onboarding agents exist only with onboarding
            qualified = await ctx.writer.run(
                batch.finish_onboarding, agent.agent_id, agent.worker.worker_id, qualification,
                passed, data,
            )
        agent.status = str(AgentState.APPROVED if passed else AgentState.REJECTED)
        self._cancel_timeout(agent)
        agent.worker.granted[qualification] = 1 if qualified else 0
        if not qualified:
            raise NotEligible(FAILED_ONBOARDING, agent.worker.worker_id)
        if self.closed:
            raise NotEligible(RUN_CLOSED, agent.worker.worker_id)
        return await self._assign(agent.worker, agent.provider_assignment)

    # -- agents ending ----------------------------------------------------------------

    def agent_finished(self, agent: AgentInfo, status: str) -> None:
        """Bookkeeping once an agent's final status is committed."""
        agent.status = status
        self._cancel_timeout(agent)
        if agent.unit is None:
            return
        self.events.agent_ended(agent, status)
        agent.worker.active -= 1
        if status in _DROPPED:
            agent.worker.task_units -= 1

    def _schedule_timeout(self, agent: AgentInfo) -> None:
        duration = self.ctx.task_args.assignment_duration_in_seconds
        if not duration:
            return
        self._time_out_in(agent, max(0.0, agent.started + duration - time.time()))

    def _time_out_in(self, agent: AgentInfo, seconds: float) -> None:
        spawn = self.ctx.background.spawn
        loop = asyncio.get_running_loop()
        agent.timer = loop.call_later(seconds, lambda: spawn(self._time_out(agent)))

    def limit_deadline(self, agent: AgentInfo, seconds: float) -> None:
        """Bring an agent's deadline forward to at most `seconds` from now."""
        duration = self.ctx.task_args.assignment_duration_in_seconds
        remaining = agent.started + duration - time.time() if duration else seconds
        self._cancel_timeout(agent)
        self._time_out_in(agent, max(0.0, min(remaining, seconds)))

    def _cancel_timeout(self, agent: AgentInfo) -> None:
        if agent.timer is not None:
            agent.timer.cancel()
            agent.timer = None

    async def _time_out(self, agent: AgentInfo) -> None:
        agent.timer = None
        if not agent.active or agent.busy:
            return
        try:
            await self.drop_agent(agent, AgentState.TIMEOUT)
        except DatabaseUnavailable:  # not saved: try again, or the unit is held for good
            self._time_out_in(agent, RETRY_DELAYS[0])

    async def drop_agent(self, agent: AgentInfo, status: AgentState) -> None:
        """End an agent that did not submit; its unit goes back to other workers."""
        with agent.saving():
            await self.ctx.writer.run(batch.update_agent_status, agent.agent_id, status)
        self.agent_finished(agent, str(status))
        if agent.unit is not None:
            logger.info("agent %s (%s) ended: %s", agent.agent_id, agent.worker.worker_name, status)
            self.events.unit_freed(agent.unit)
            await self.notify_status(agent)

    async def notify_status(self, agent: AgentInfo) -> None:
        if agent.send is None:
            return
        status = "done" if agent.status == AgentState.COMPLETED else agent.status
        try:
            await agent.send(packets.update_status(status))
        except Exception:  # the socket went away; the agent's state is already saved
            agent.send = None

    def restore_agent(self, agent: AgentInfo) -> None:
        """Track an agent loaded from the database when a run is resumed."""
        if agent.unit is not None:
            agent.worker.assignments.add(agent.unit.assignment_id)
        agent.worker.active += 1
        self._track(agent)
        if agent.unit is not None:
            self.events.agent_started(agent)

    def agent(self, agent_id: str) -> AgentInfo | None:
        """The agent with this id, if this run has it in memory."""
        return self.agents.get(agent_id)

    def active_agents(self) -> list[AgentInfo]:
        return [a for a in self.agents.values() if a.active]

    def working_count(self) -> int:
        """Agents at work on a unit (onboarding agents not counted)."""
        return sum(1 for a in self.agents.values() if a.active and a.unit is not None)

    def close(self) -> None:
        """The run takes no more work: requests for agents are refused from now on
        (agents at work may still submit)."""
        self.closed = True

    def stop_timers(self) -> None:
        """The run stops without ending (Ctrl-C): no agent times out in this process;
        a resumed run sets their deadlines again."""
        for agent in self.agents.values():
            self._cancel_timeout(agent)


_DROPPED = frozenset(str(s) for s in AgentState.dropped())


def _any_unit(unit: UnitInfo) -> bool:
    return True


def _worker_from(record: batch.WorkerRecord) -> WorkerInfo:
    return WorkerInfo(
        record.worker_id, record.worker_name, assignments=record.assignments,
        task_units=record.task_units, granted=record.granted, blocked=record.blocked,
        standing_at=time.monotonic(),
    )


def _set_standing(worker: WorkerInfo, granted: dict[str, int], blocked: bool) -> None:
    worker.granted, worker.blocked = granted, blocked
    worker.standing_at = time.monotonic()
