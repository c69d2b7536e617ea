"""One task run while it is live: its parts, its lifecycle, and how it ends.

A run ends by itself when no unit is left open (every unit completed or expired);
`task_lifetime_in_seconds` and `no_submission_patience` close it early (open units are
expired; agents at work may still submit, for at most `submission_timeout` seconds); `shutdown()`
closes it at once (Ctrl-C): open units are expired on the provider and in the database
and active agents are marked expired. A closed run that did not finish stays
incomplete in the database, so `resume_incomplete_run` can pick it up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading
import time
from pathlib import Path
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from mephisto.data_model.assignment import InitializationData
from mephisto.data_model.status import AgentState, AssignmentState
from mephisto.operations.client_io_handler import ClientIOHandler
from mephisto.operations.db_writer import DBWriter
from mephisto.operations.live_run import AgentInfo, ArgsSnapshot, RunProgress, UnitInfo
from mephisto.operations.metrics import LIVE_RUNS, RunMetrics
from mephisto.operations.task_launcher import TaskLauncher, unit_init_data
from mephisto.operations.worker_pool import WorkerPool
from mephisto.utils.dirs import get_run_dir

logger = logging.getLogger(__name__)
T = TypeVar("T")

_DONE_UNIT = frozenset(str(s) for s in AssignmentState.completed())

# After a run finishes by itself the server stays up while workers are still talking to
# it, so their last "any more work?" is answered (no agent: the run is closed) instead
# of meeting a closed socket: until no request came for LINGER_QUIET seconds, at most
# LINGER_MAX seconds.
LINGER_QUIET = 0.3
LINGER_MAX = 5.0


class LiveTaskRun:
    def __init__(
        self,
        *,
        db: Any,
        writer: DBWriter,
        task_run: Any,
        task_name: str,
        args: Any,
        blueprint: Any,
        architect: Any,
        provider: Any,
        shared_state: Any,
    ) -> None:
        self.db = db
        self.writer = writer
        self.task_run = task_run
        self.task_run_id: str = task_run.db_id
        self.task_id: str = task_run.task_id
        self.requester_id: str = task_run.requester_id
        self.task_type: str = task_run.task_type
        self.provider_type: str = task_run.provider_type
        self.task_name = task_name
        self.args = args
        self.task_args = ArgsSnapshot.of(args.task)
        self.blueprint_args = ArgsSnapshot.of(args.blueprint)
        self.blueprint = blueprint
        self.architect = architect
        self.provider = provider
        self.shared_state = shared_state
        self.requirements = [
            r
            for r in shared_state.qualifications
            if not r.get("applicable_providers") or self.provider_type in r["applicable_providers"]
        ]
        self.onboarding_qualification: str | None = blueprint.args.blueprint.get(
            "onboarding_qualification"
        ) or (f"{task_name}-onboarding" if blueprint.use_onboarding else None)
        self.use_onboarding = bool(blueprint.use_onboarding and self.onboarding_qualification)
        self.closing = False
        self.interrupted = False  # stopped by shutdown() before finishing: resumable
        self.url = ""
        self.progress = RunProgress()
        self.metrics = RunMetrics(self.task_run_id)
        self.pool = WorkerPool(self)
        self.client_io = ClientIOHandler(self)
        self.launcher = TaskLauncher(self, [])
        self.done = asyncio.Event()
        self.done_sync = threading.Event()
        self.loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: list[asyncio.TimerHandle] = []
        self._finished = False
        self.last_request_at = 0.0
        self.metrics_token = ""
        self.metrics_token_file: Path | None = None

    # -- one door to the rest of the world --------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine in the background; its failure is logged, not lost."""
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("task run %s: background task failed", self.task_run_id,
                         exc_info=task.exception())

    async def in_thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking code (user callbacks, provider SDK calls) off the loop."""
        return await self.loop.run_in_executor(None, fn, *args)

    # -- start ------------------------------------------------------------------------

    async def start(self, resume: bool) -> None:
        from mephisto.operations.metrics import REGISTRY
        from mephisto.server.app import create_app
        from mephisto.server.backend import ServerSettings

        run_dir = get_run_dir(self.task_run_id)
        settings = ServerSettings(
            upload_dir=run_dir / ".uploads", metrics_token=self._metrics_token(run_dir)
        )
        app = create_app(self.client_io, settings, metrics_registry=REGISTRY,
                         on_request=self._on_request)
        self.url = await self.architect.deploy(app)
        LIVE_RUNS.sources[self.task_run_id] = self._gauges
        await self.in_thread(
            self.provider.setup_resources_for_task_run, self.task_run, self.args, self.shared_state, self.url
        )
        if resume:
            await self._restore()
        else:
            self.launcher = TaskLauncher(self, self.blueprint.get_initialization_data())
            await self.launcher.start()
        lifetime = self.task_args.task_lifetime_in_seconds
        if lifetime:
            self._timers.append(
                self.loop.call_later(lifetime, lambda: self.spawn(self.close("the task lifetime ended")))
            )
        if self.task_args.no_submission_patience:
            self._schedule_patience()
        self.check_done()

    def _metrics_token(self, run_dir: Path) -> str:
        """The bearer token `/metrics` asks for: `MEPHISTO_METRICS_TOKEN`, or a new one
        written to `<run dir>/metrics_token` (readable by this user only)."""
        token = os.environ.get("MEPHISTO_METRICS_TOKEN") or secrets.token_urlsafe(24)
        self.metrics_token = token
        self.metrics_token_file = run_dir / "metrics_token"
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.metrics_token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        return token

    def _on_request(self, endpoint: str, seconds: float, status: int) -> None:
        self.last_request_at = time.monotonic()
        self.metrics.request(endpoint, seconds, status)

    async def _linger(self) -> None:
        """Keep serving while workers are still asking (see LINGER_QUIET)."""
        deadline = time.monotonic() + LINGER_MAX
        while True:
            now = time.monotonic()
            quiet_until = self.last_request_at + LINGER_QUIET
            if now >= quiet_until or now >= deadline:
                return
            await asyncio.sleep(min(quiet_until, deadline) - now)

    def _gauges(self) -> tuple[dict[str, int], int]:
        active = sum(1 for a in self.pool.agents.values() if a.active and a.unit is not None)
        p = self.progress
        counts = {
            "created": self.launcher.unlaunched,
            "launched": len(self.pool.open),
            "assigned": active,
            "completed": p.completed,
            "expired": p.expired,
        }
        return counts, active

    # -- progress ---------------------------------------------------------------------

    def unit_completed(self, agent: AgentInfo) -> None:
        self.progress.completed += 1
        self.progress.last_submit_at = time.monotonic()
        self.launcher.unit_finished()
        callback = self.shared_state.on_unit_submitted
        if callback is not None:
            self.spawn(self._user_callback(callback, agent.agent_id))
        self.spawn(self.pool.notify_status(agent))
        self.check_done()

    async def _user_callback(self, callback: Callable[[Any], Any], agent_id: str) -> None:
        from mephisto.data_model.agent import Agent

        agent = await self.writer.read(lambda db: Agent(db, agent_id))
        await self.in_thread(callback, agent)

    def unit_freed(self, unit: UnitInfo) -> None:
        """An agent dropped out: the unit is open again (or expired if we are closing)."""
        if self.closing:
            self.spawn(self._expire_units([unit], launched=True))
        else:
            self.pool.open.add(unit)

    def check_done(self) -> None:
        if self._finished or self.launcher.has_more() and not self.closing:
            return
        if self.progress.pending > 0:
            return
        self._finished = True
        self.spawn(self._finish())

    async def _finish(self) -> None:
        if not self.interrupted:
            await self.writer.run(lambda db: db.update_task_run(self.task_run_id, is_completed=True))
        for timer in self._timers:
            timer.cancel()
        p = self.progress
        logger.info(
            "task run %s finished: %d units completed, %d expired", self.task_run_id, p.completed, p.expired
        )
        self.done.set()
        self.done_sync.set()

    def _schedule_patience(self) -> None:
        patience = self.task_args.no_submission_patience
        wait = self.progress.last_submit_at + patience - time.monotonic()
        self._timers.append(self.loop.call_later(max(wait, 0.0), self._patience_check))

    def _patience_check(self) -> None:
        if self.closing or self._finished:
            return
        patience = self.task_args.no_submission_patience
        if time.monotonic() - self.progress.last_submit_at >= patience:
            logger.warning(
                "task run %s: no submission for %d s (no_submission_patience); closing it",
                self.task_run_id, patience,
            )
            self.spawn(self.close("no submission within no_submission_patience"))
        else:
            self._schedule_patience()

    # -- closing ------------------------------------------------------------------------

    async def close(self, reason: str) -> None:
        """Stop handing out work; expire open units. Agents at work may still submit."""
        if self.closing:
            return
        self.closing = True
        if not self._finished:
            logger.info("task run %s closing: %s", self.task_run_id, reason)
        await self._expire_units(self.pool.open.drain(), launched=True)
        await self._expire_units(self.launcher.take_unlaunched(), launched=False)
        grace = self.task_args.submission_timeout
        if grace and not self.interrupted:
            # agents at work get at most submission_timeout more seconds to submit
            for agent in self.pool.active_agents():
                self.pool.limit_deadline(agent, grace)
        self.check_done()

    async def _expire_units(self, units: list[UnitInfo], launched: bool) -> None:
        if not units:
            return
        if launched:
            await self.in_thread(self.provider.expire_units, units)
        await self.writer.run(
            lambda db: db.update_units_status([u.unit_id for u in units], AssignmentState.EXPIRED)
        )
        self.progress.expired += len(units)
        if launched:
            self.launcher.live -= len(units)
        self.check_done()

    async def shutdown(self) -> None:
        """Close now: expire open units and active agents, stop the server."""
        if not self._finished:
            self.interrupted = True
        await self.close("shutdown")
        for agent in self.pool.active_agents():
            if not agent.busy:
                await self.pool.drop_agent(agent, AgentState.EXPIRED)
        if self._tasks:  # expiries and callbacks the drops started
            await asyncio.wait(list(self._tasks), timeout=30)
        if not self.interrupted:
            await self._linger()
        await self.architect.shutdown()
        await self.in_thread(self.provider.cleanup_resources_from_task_run, self.task_run, self.url)
        LIVE_RUNS.sources.pop(self.task_run_id, None)
        for timer in self._timers:
            timer.cancel()
        if not self._finished:
            self._finished = True
            await self._finish()

    # -- resume -------------------------------------------------------------------------

    async def _restore(self) -> None:
        """Load a run whose process died (or was stopped) and carry on from its state."""
        units, assignments, agents = await self.writer.read(_load_run, self.task_run_id)
        data = {a_id: InitializationData.from_dict(d) for a_id, d in assignments.items()}
        self.launcher = TaskLauncher(self, self.blueprint.get_initialization_data(), skip=len(assignments))
        to_launch: list[UnitInfo] = []
        by_unit_agent = {a["unit_id"]: a for a in agents}
        # the workers holding agents, loaded together (one batched write, not one each)
        names = sorted({a["worker_name"] for a in agents})
        workers = dict(zip(names, await asyncio.gather(*map(self.pool.get_worker, names)), strict=True))
        for row in units:
            info = UnitInfo(
                row["unit_id"], row["assignment_id"], row["unit_index"], row["pay_amount"],
                unit_init_data(data[row["assignment_id"]], row["unit_index"]),
            )
            status = row["status"]
            if status in _DONE_UNIT:
                self.progress.completed += 1
            elif status in (AssignmentState.CREATED, AssignmentState.EXPIRED):
                to_launch.append(info)
            elif status == AssignmentState.LAUNCHED:
                self.pool.open.add(info)
                self.launcher.live += 1
            elif status == AssignmentState.ASSIGNED:
                agent_row = by_unit_agent.get(row["unit_id"])
                if agent_row is None:  # pragma: no cover - the unit would be inconsistent
                    to_launch.append(info)
                    continue
                worker = workers[agent_row["worker_name"]]
                state = agent_row.get("state") or {}
                started = (state.get("times") or {}).get("task_start")
                agent = AgentInfo(
                    agent_id=agent_row["agent_id"], worker=worker, unit=info,
                    status=agent_row["status"], started=started or agent_row["creation_date"],
                    provider_assignment=state.get("provider_assignment_id"),
                )
                self.pool.restore_agent(agent)
                self.launcher.live += 1
        self.progress.total = len(units)
        await self.writer.run(_expire_stale_onboarding, self.task_run_id)
        self.launcher.add_created(to_launch)
        logger.info(
            "resumed task run %s: %d units, %d completed, %d to launch, %d agents at work",
            self.task_run_id, len(units), self.progress.completed, len(to_launch),
            sum(1 for a in self.pool.agents.values() if a.active),
        )
        await self.launcher.fill()


def _load_run(db: Any, task_run_id: str) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    units = [u._row | {"status": u.db_status} for u in db.find_units(task_run_id=task_run_id)]
    assignments = {a.db_id: a.data for a in db.find_assignments(task_run_id=task_run_id)}
    agents = []
    names = {}
    for agent in db.find_agents(task_run_id=task_run_id, status=[str(s) for s in AgentState.active()]):
        if agent.worker_id not in names:
            names[agent.worker_id] = db.get_worker(agent.worker_id)["worker_name"]
        agents.append(agent._row | {"status": agent.db_status, "worker_name": names[agent.worker_id]})
    return units, assignments, agents


def _expire_stale_onboarding(db: Any, task_run_id: str) -> None:
    for agent in db.find_onboarding_agents(task_run_id=task_run_id, status=[str(s) for s in AgentState.active()]):
        db.update_onboarding_agent(agent.db_id, status=AgentState.EXPIRED)
