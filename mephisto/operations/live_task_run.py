"""One task run while it is live: its parts, its lifecycle, and how it ends.

    LiveTaskRun (owner: progress counters, closing, timers, resume)
      ├── TaskLauncher     the units: created, launched, open; launches more as needed
      ├── WorkerPool       the workers and their agents: who may work, on which unit
      └── ClientIOHandler  the TaskBackend the task server calls (browsers' requests)

Each part is made with a `RunContext` (ids, config snapshots, writer, provider,
blueprint, metrics, the background door) and reports through `RunEvents`, which this
class implements; the pool takes units from the launcher through `UnitSupply`.

A run ends by itself when no unit is left open (every unit completed or expired);
`task_lifetime_in_seconds` and `no_submission_patience` close it early (open units are
expired; agents at work may still submit, for at most `submission_timeout` seconds); `shutdown()`
closes it at once (Ctrl-C): open units are expired on the provider and in the database,
and agents at work keep their units. A closed run that did not finish stays incomplete
in the database, so `resume_incomplete_run` picks it up, agents at work included.

Writes the run cannot carry on without (finishing, expiring, launching, freeing a
timed-out unit) are tried again while the database is unavailable (`until_saved`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mephisto.data_model.assignment import InitializationData
from mephisto.data_model.status import AgentState, AssignmentState
from mephisto.db import batch
from mephisto.db.writer import DBWriter
from mephisto.operations.client_io_handler import ClientIOHandler
from mephisto.operations.live_record import remove_live_record, write_live_record
from mephisto.operations.live_run import (
    CREATION_KEYS,
    AgentInfo,
    Background,
    RunContext,
    RunProgress,
    UnitInfo,
    until_saved,
)
from mephisto.operations.live_sessions import LiveSessions
from mephisto.operations.metrics import LIVE_RUNS, RunMetrics
from mephisto.operations.quality_checks import restore_counts
from mephisto.operations.task_launcher import TaskLauncher, unit_init_data
from mephisto.operations.worker_pool import WorkerPool
from mephisto.utils.dirs import get_run_dir
from mephisto.utils.files import write_private_file

logger = logging.getLogger(__name__)

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
        writer: DBWriter,
        task_run: Any,
        task_name: str,
        args: Any,
        blueprint: Any,
        architect: Any,
        provider: Any,
        shared_state: Any,
    ) -> None:
        self.task_run = task_run
        self.task_run_id: str = task_run.db_id
        self.task_name = task_name
        self.args = args
        self.architect = architect
        self.provider = provider
        self.shared_state = shared_state
        self.loop = asyncio.get_running_loop()
        self.background = Background(self.loop, f"task run {self.task_run_id}")
        provider_type: str = task_run.provider_type
        onboarding = blueprint.args.blueprint.get("onboarding_qualification") or (
            f"{task_name}-onboarding" if blueprint.use_onboarding else None)
        self.ctx = RunContext(
            task_run_id=self.task_run_id,
            task_id=task_run.task_id,
            requester_id=task_run.requester_id,
            task_type=task_run.task_type,
            provider_type=provider_type,
            task_name=task_name,
            task_args=args.task,
            blueprint_args=args.blueprint,
            writer=writer,
            provider=provider,
            blueprint=blueprint,
            shared_state=shared_state,
            metrics=RunMetrics(self.task_run_id),
            background=self.background,
            requirements=[
                r for r in shared_state.qualifications
                if not r.get("applicable_providers") or provider_type in r["applicable_providers"]
            ],
            onboarding_qualification=onboarding if blueprint.use_onboarding else None,
        )
        self.writer = writer
        self.blueprint = blueprint
        self.metrics = self.ctx.metrics
        self.closing = False
        self.interrupted = False  # stopped by shutdown() before finishing: resumable
        self.url = ""
        self.progress = RunProgress()
        self.launcher = TaskLauncher(self.ctx, self)
        self.pool = WorkerPool(self.ctx, self.launcher, self)
        # the blueprint's TaskRunner beside each live unit (static tasks: none runs)
        self.live_sessions = LiveSessions(self.ctx, blueprint.make_task_runner(),
                                          self.pool.drop_agent, self.pool.notify_status)
        self.client_io = ClientIOHandler(
            self.ctx, self.pool, self,
            self.live_sessions if self.live_sessions.live else None)
        self.done = asyncio.Event()
        self.done_sync = threading.Event()
        self._timers: list[asyncio.TimerHandle] = []
        self._finished = False
        self.last_request_at = 0.0
        self.metrics_token = ""
        self.metrics_token_file: Path | None = None

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
        data: Any = None
        if not resume:  # a launch over a budget is refused before anything is served
            data = self.blueprint.get_initialization_data()
            await self.launcher.preview(data)
        self.url = await self.architect.deploy(app)
        LIVE_RUNS.sources[self.task_run_id] = self._gauges
        try:
            await self.background.in_thread(
                self.provider.setup_resources_for_task_run, self.task_run, self.args,
                self.shared_state, self.url)
            if resume:
                await self._restore()
            else:
                await self.launcher.start(self.url, data)
        except BaseException:
            await self._abandon()
            raise
        self.client_io.ready.set()  # agent calls that came meanwhile go on now
        task_args = self.ctx.task_args
        if task_args.task_lifetime_in_seconds:
            self._timers.append(self.loop.call_later(
                task_args.task_lifetime_in_seconds,
                lambda: self.background.spawn(self.close("the task lifetime ended")),
            ))
        if task_args.no_submission_patience:
            self._schedule_patience()
        # for `mephisto metrics` (live_record.py), which reads the run's /metrics where
        # workers reach it (a router asks this process over its channel)
        if self.metrics_token_file is not None:
            write_live_record(self.task_run_id, self.task_name, self.url,
                              self.metrics_token_file, self.writer.db.url)
        self.check_done()

    async def _abandon(self) -> None:
        """A start that failed after the server was up: stop serving, so nothing is
        left listening for a run that never began."""
        LIVE_RUNS.sources.pop(self.task_run_id, None)
        try:
            await self.architect.shutdown()
        except Exception:
            logger.exception("task run %s: stopping its server failed", self.task_run_id)

    def _metrics_token(self, run_dir: Path) -> str:
        """The bearer token `/metrics` asks for: `MEPHISTO_METRICS_TOKEN`, or a new one
        written to `<run dir>/metrics_token` (readable by this user only)."""
        token = os.environ.get("MEPHISTO_METRICS_TOKEN") or secrets.token_urlsafe(24)
        self.metrics_token = token
        self.metrics_token_file = run_dir / "metrics_token"
        write_private_file(self.metrics_token_file, token + "\n")
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
        active = self.pool.working_count()
        p = self.progress
        counts = {
            "created": self.launcher.unlaunched,
            "launched": self.launcher.open_count,
            "assigned": active,
            "completed": p.completed,
            "expired": p.expired,
        }
        return counts, active

    # -- progress (RunEvents) -------------------------------------------------------------

    def units_created(self, count: int) -> None:
        self.progress.total += count

    def agent_started(self, agent: AgentInfo) -> None:
        self.live_sessions.start(agent)

    def agent_ended(self, agent: AgentInfo, status: str) -> None:
        self.live_sessions.ended(agent, status)

    def unit_completed(self, agent: AgentInfo) -> None:
        self.progress.completed += 1
        self.progress.last_submit_at = time.monotonic()
        self.launcher.unit_finished()
        callback = self.shared_state.on_unit_submitted
        if callback is not None and agent.unit is not None:
            checked: asyncio.Future[None] = self.loop.create_future()
            agent.worker.checks.add(checked)
            self.background.spawn(self._user_callback(callback, agent, agent.unit, checked))
        self.background.spawn(self.pool.notify_status(agent))
        self.check_done()

    async def _user_callback(self, callback: Callable[[Any], Any], agent: AgentInfo,
                             unit: UnitInfo, checked: asyncio.Future[None]) -> None:
        """`on_unit_submitted(unit)` (Mephisto's contract: the submitted `Unit`), in a
        thread; the worker's next unit waits for it (it may grant qualifications)."""
        from mephisto.data_model.unit import Unit

        try:
            entity = await self.writer.read(lambda db: Unit(db, unit.unit_id))
            await self.background.in_thread(callback, entity)
        except Exception:
            logger.exception("task run %s: on_unit_submitted failed for unit %s",
                             self.task_run_id, unit.unit_id)
        finally:
            agent.worker.checks.discard(checked)
            agent.worker.standing_at = 0.0  # re-read what the callback may have granted
            checked.set_result(None)

    def unit_freed(self, unit: UnitInfo) -> None:
        """An agent dropped out: the unit is open again (or expired if we are closing,
        if it was a screening or gold unit made for that worker, or if its assignment was
        worked live and partly submitted)."""
        if self.closing or unit.unit_index < 0 or self.live_sessions.retired(unit.unit_id):
            self.launcher.unit_finished()
            self.background.spawn(self._expire_units([unit], launched=unit.unit_index >= 0))
        else:
            self.launcher.give_back(unit)

    def check_done(self) -> None:
        if self._finished or self.launcher.has_more() and not self.closing:
            return
        if self.progress.pending > 0:
            return
        self._finished = True
        self.background.spawn(self._finish())

    async def _finish(self) -> None:
        if not self.interrupted:
            await until_saved(lambda: self.writer.run(batch.mark_completed, self.task_run_id))
        for timer in self._timers:
            timer.cancel()
        p = self.progress
        logger.info(
            "task run %s finished: %d units completed, %d expired", self.task_run_id, p.completed, p.expired
        )
        self.done.set()
        self.done_sync.set()

    def _schedule_patience(self) -> None:
        patience = self.ctx.task_args.no_submission_patience
        wait = self.progress.last_submit_at + patience - time.monotonic()
        self._timers.append(self.loop.call_later(max(wait, 0.0), self._patience_check))

    def _patience_check(self) -> None:
        if self.closing or self._finished:
            return
        patience = self.ctx.task_args.no_submission_patience
        if time.monotonic() - self.progress.last_submit_at >= patience:
            logger.warning(
                "task run %s: no submission for %d s (no_submission_patience); closing it",
                self.task_run_id, patience,
            )
            self.background.spawn(self.close("no submission within no_submission_patience"))
        else:
            self._schedule_patience()

    # -- closing ------------------------------------------------------------------------

    async def close(self, reason: str) -> None:
        """Stop handing out work; expire open units. Agents at work may still submit."""
        if self.closing:
            return
        self.closing = True
        self.pool.close()
        if not self._finished:
            logger.info("task run %s closing: %s", self.task_run_id, reason)
        open_units, unlaunched = self.launcher.close()
        await self._expire_units(open_units, launched=True)
        await self._expire_units(unlaunched, launched=False)
        grace = self.ctx.task_args.submission_timeout
        if grace and not self.interrupted:
            # agents at work get at most submission_timeout more seconds to submit
            for agent in self.pool.active_agents():
                self.pool.limit_deadline(agent, grace)
        self.check_done()

    async def _expire_units(self, units: list[UnitInfo], launched: bool) -> None:
        if not units:
            return
        if launched:
            await self.background.in_thread(self.provider.expire_units, units)
        ids = [u.unit_id for u in units]
        if self.interrupted:  # stopping now: one try (a resume relaunches what is left)
            await self.writer.run(batch.mark_expired, ids)
        else:
            await until_saved(lambda: self.writer.run(batch.mark_expired, ids))
        self.progress.expired += len(units)
        self.check_done()

    async def shutdown(self) -> None:
        """Close now: expire open units, stop the server. Stopped before it finished
        (Ctrl-C), the run is left resumable: agents at work keep their units, so their
        workers can submit once it is resumed (their deadline still holds)."""
        if not self._finished:
            self.interrupted = True
        await self.close("shutdown")
        if self.interrupted:
            self.pool.stop_timers()
        else:
            for agent in self.pool.active_agents():
                if not agent.busy:
                    await self.pool.drop_agent(agent, AgentState.EXPIRED)
        await self.live_sessions.shutdown()
        await self.background.wait(timeout=30)  # expiries and callbacks the drops started
        if not self.interrupted:
            await self._linger()
        await self.architect.shutdown()
        remove_live_record(self.task_run_id)
        await self.background.in_thread(
            self.provider.cleanup_resources_from_task_run, self.task_run, self.url)
        LIVE_RUNS.sources.pop(self.task_run_id, None)
        for timer in self._timers:
            timer.cancel()
        if not self._finished:
            self._finished = True
            await self._finish()

    # -- resume -------------------------------------------------------------------------

    async def _restore(self) -> None:
        """Load a run whose process died (or was stopped) and carry on from its state."""
        stored = await self.writer.read(batch.load_run, self.task_run_id)
        units, assignments, agents = stored.units, stored.assignments, stored.agents
        data = {a_id: InitializationData.from_dict(d) for a_id, d in assignments.items()}
        to_launch: list[UnitInfo] = []
        open_units: list[UnitInfo] = []
        left_by_worker: list[UnitInfo] = []  # screening/gold units nobody holds now
        assigned = 0
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
            elif info.unit_index < 0 and status != AssignmentState.ASSIGNED:
                if status != AssignmentState.EXPIRED:
                    left_by_worker.append(info)
                else:
                    self.progress.expired += 1
            elif status in (AssignmentState.CREATED, AssignmentState.EXPIRED):
                to_launch.append(info)
            elif status == AssignmentState.LAUNCHED:
                open_units.append(info)
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
                    # anything beyond what a run writes at creation must be merged
                    state_extended=not set(state) <= CREATION_KEYS,
                )
                self.pool.restore_agent(agent)
                assigned += 1
        self.progress.total = len(units)
        if left_by_worker:  # made for a worker who is gone: never offered to others
            await self.writer.run(batch.mark_expired, [u.unit_id for u in left_by_worker])
            self.progress.expired += len(left_by_worker)
        restore_counts(self.blueprint, [row["unit_index"] for row in units])
        await self.writer.run(batch.expire_stale_onboarding, self.task_run_id)
        if open_units:  # published before: publish again where the provider lost them
            await self.background.in_thread(self.provider.launch_units, open_units, self.url)
        # the blueprint's data made the assignments of units 0, 1, ...; screening and
        # gold units have their own assignments, not made from it
        from_data = len({row["assignment_id"] for row in units if row["unit_index"] >= 0})
        self.launcher.restore(self.url, self.blueprint.get_initialization_data(),
                              from_data, open_units, assigned, to_launch)
        logger.info(
            "resumed task run %s: %d units, %d completed, %d to launch, %d agents at work",
            self.task_run_id, len(units), self.progress.completed, len(to_launch),
            len(self.pool.active_agents()),
        )
        await self.launcher.fill()
