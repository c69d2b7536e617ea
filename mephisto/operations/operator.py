"""The Operator: launch task runs, watch them, shut them down.

The synchronous methods are what run scripts call; the live machinery of every run
runs on one asyncio event loop in a background thread owned by the operator. Typical
use (what `task_script` wraps):

    operator = Operator(db)
    operator.launch_task_run(cfg.mephisto, shared_state)
    operator.wait_for_runs_then_shutdown(skip_input=True, log_rate=30)
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from mephisto.db.writer import DBWriter
from mephisto.errors import ConfigError, MephistoError, ProviderError
from mephisto.operations.hydra_config import resolve_run_config
from mephisto.operations.live_task_run import LiveTaskRun
from mephisto.utils.args import Args
from mephisto.utils.memory import gc_paused

if TYPE_CHECKING:
    from mephisto.db.database import MephistoDB

logger = logging.getLogger(__name__)


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        return asyncio.new_event_loop()


# Python's default GC thresholds (700, 10, 10)
_DEFAULT_GC_THRESHOLDS = (700, 10, 10)
_SERVING_GC_THRESHOLDS = (10_000, 20, 20)


def _tune_gc_for_serving() -> None:
    """A live run keeps a long-lived heap (modules, config, every unit's info) and makes
    short-lived garbage per request. With Python's defaults a full collection rescans
    the long-lived heap every few hundred requests: pauses of 50-100 ms that land in the
    latency tail. Freeze what exists after a launch (it is never collected, so never
    scanned) and collect the young generation less often. A process that set its own
    thresholds keeps them."""
    if gc.get_threshold() == _DEFAULT_GC_THRESHOLDS:
        gc.set_threshold(*_SERVING_GC_THRESHOLDS)
    gc.freeze()


def _check_requester(provider: Any, requester: Any) -> None:
    """Refuse to launch, before anything is created, when the requester cannot work
    (credentials missing or refused): the provider's message says what to do."""
    try:
        check = provider.check_requester(requester)
    except NotImplementedError:  # a third-party provider without the check
        logger.debug("%s cannot check requesters; launching unchecked", provider.PROVIDER_TYPE)
        return
    if not check.ready:
        raise ProviderError(str(provider.PROVIDER_TYPE),
                            f"requester {requester.requester_name!r} is not ready: "
                            f"{check.message}")


class Operator:
    def __init__(self, db: MephistoDB | None = None) -> None:
        if db is None:
            from mephisto.db import MephistoDB

            db = MephistoDB()
        self.db = db
        self.writer = DBWriter(db)
        self._runs: dict[str, LiveTaskRun] = {}
        self._loop = _new_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="mephisto-operator-loop", daemon=True
        )
        self._thread.start()
        self._shut_down = False

    # -- running coroutines on the operator's loop ----------------------------------------

    def _call(self, coro: Any, timeout: float | None = None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    # -- launching --------------------------------------------------------------------------

    def launch_task_run(self, run_config: Any, shared_state: Any = None) -> str:
        """Validate the configuration, create (or resume) the task run, start serving it
        and launch its units. Returns the task run id. Nothing is created if the
        configuration is wrong."""
        if self._shut_down:
            raise MephistoError("this operator was shut down; create a new one")
        resolved = resolve_run_config(run_config)
        cfg = resolved.args
        blueprint_cls = resolved.blueprint
        if shared_state is None:
            shared_state = blueprint_cls.SharedStateClass()  # type: ignore[attr-defined]
        for cls in (blueprint_cls, resolved.architect, resolved.provider):
            cls.assert_task_args(cfg, shared_state)  # type: ignore[attr-defined]

        task_type = cfg.blueprint._blueprint_type
        task_name = cfg.task.task_name or task_type
        provider = resolved.provider(self.db, cfg)
        requester = provider.get_requester(self.db, cfg)
        _check_requester(provider, requester)
        task_run, resume = self._get_task_run(cfg, task_name, task_type, requester)
        self._apply_budgets(cfg, task_run)

        async def start(blueprint: Any, architect: Any) -> LiveTaskRun:
            self.writer.start()
            run = LiveTaskRun(
                writer=self.writer, task_run=task_run, task_name=task_name, args=cfg,
                blueprint=blueprint, architect=architect, provider=provider, shared_state=shared_state,
            )
            await run.start(resume=resume)
            return run

        try:  # whatever fails from here on closes the new run
            with gc_paused():  # a launch makes a few long-lived objects per unit
                blueprint = blueprint_cls(task_run, cfg, shared_state)
                architect = resolved.architect(cfg)
                run = self._call(start(blueprint, architect))
        except BaseException:
            if not resume:
                self.db.update_task_run(task_run.db_id, is_completed=True)
            raise
        self._runs[task_run.db_id] = run
        _tune_gc_for_serving()
        logger.info("task run %s (%s) is live at %s", task_run.db_id, task_name, run.url)
        logger.info("its metrics: %smetrics with the bearer token in %s (or `mephisto "
                    "metrics --run %s`)", run.url, run.metrics_token_file, task_run.db_id)
        if cfg.provider._provider_type == "mock":
            logger.info("work on it as a mock worker: %s?worker_id=alice&assignment_id=a1", run.url)
        return task_run.db_id

    validate_and_run_config = launch_task_run

    def _apply_budgets(self, cfg: Args, task_run: Any) -> None:
        """`mephisto.task.project_name` puts the task in that project (made if new);
        `mephisto.task.budget` caps the run (a resumed run takes the new value)."""
        from mephisto.errors import EntryAlreadyExists

        db = self.db
        project_name = cfg.task.get("project_name")
        if project_name:
            projects = db.find_projects(project_name=project_name)
            if projects:
                project_id = projects[0].db_id
            else:
                try:
                    project_id = db.new_project(project_name)
                except EntryAlreadyExists:  # made by another process meanwhile
                    project_id = db.find_projects(project_name=project_name)[0].db_id
            if db.get_task(task_run.task_id)["project_id"] != project_id:
                db.update_task(task_run.task_id, project_id=project_id)
        budget = cfg.task.get("budget")
        if budget is not None:
            db.set_task_run_budget(task_run.db_id, float(budget))

    def _get_task_run(self, cfg: Args, task_name: str, task_type: str, requester: Any) -> tuple[Any, bool]:
        import yaml

        from mephisto.data_model.task_run import TaskRun
        from mephisto.errors import EntryAlreadyExists

        db = self.db
        tasks = db.find_tasks(task_name=task_name)
        if tasks:
            task = tasks[0]
            if task.task_type != task_type:
                raise ConfigError(
                    f"task_name {task_name!r} is already used by a {task.task_type} task; "
                    f"pick another mephisto.task.task_name for this {task_type} task",
                    key="mephisto.task.task_name",
                )
            task_id = task.db_id
        else:
            try:
                task_id = db.new_task(task_name, task_type)
            except EntryAlreadyExists:
                task_id = db.find_tasks(task_name=task_name)[0].db_id
        if cfg.task.resume_incomplete_run:
            incomplete = [
                r for r in db.find_task_runs(task_id=task_id, is_completed=False)
                if r.db_id not in self._runs
            ]
            if incomplete:
                logger.info("resuming task run %s of %s", incomplete[-1].db_id, task_name)
                return incomplete[-1], True
        task_run_id = db.new_task_run(
            task_id,
            requester.db_id,
            yaml.safe_dump(cfg.to_dict(), sort_keys=False),
            cfg.provider._provider_type,
            task_type,
            requester.is_sandbox(),
        )
        return TaskRun(db, task_run_id), False

    # -- watching --------------------------------------------------------------------------

    def get_running_task_runs(self) -> dict[str, LiveTaskRun]:
        """Live runs that have not finished, by task run id."""
        return {k: r for k, r in self._runs.items() if not r.done_sync.is_set()}

    def get_progress(self) -> dict[str, dict[str, Any]]:
        out = {}
        for task_run_id, run in self._runs.items():
            p = run.progress
            out[task_run_id] = {
                "task_name": run.task_name,
                "url": run.url,
                "total": p.total,
                "completed": p.completed,
                "expired": p.expired,
                "units_per_second": round(p.rate(), 1),
                "done": run.done_sync.is_set(),
            }
        return out

    def _log_progress(self) -> None:
        for task_run_id, info in self.get_progress().items():
            if not info["done"]:
                logger.info(
                    "task run %s (%s): %d/%d units completed, %d expired, %.1f units/s",
                    task_run_id, info["task_name"], info["completed"], info["total"],
                    info["expired"], info["units_per_second"],
                )

    def wait_for_runs_then_shutdown(self, skip_input: bool = False, log_rate: float | None = None) -> None:
        """Block until every launched run has finished, then shut down. Ctrl-C shuts
        down at once (open units expired; the run can be resumed later)."""
        try:
            last_log = time.monotonic()
            while True:
                running = list(self.get_running_task_runs().values())
                if not running:
                    break
                wait = log_rate if log_rate else 60.0
                running[0].done_sync.wait(timeout=min(wait, 5.0))
                if log_rate and time.monotonic() - last_log >= log_rate:
                    self._log_progress()
                    last_log = time.monotonic()
        except KeyboardInterrupt:
            logger.warning("interrupted: expiring open units and shutting down")
        finally:
            self.shutdown(skip_input=skip_input)

    # -- stopping -------------------------------------------------------------------------

    def shutdown(self, skip_input: bool = True) -> None:
        """Stop every run (open units expired, server closed), then the loop. Idempotent."""
        if self._shut_down:
            return
        self._shut_down = True

        async def stop_all() -> None:
            for run in self._runs.values():
                try:
                    await run.shutdown()
                except Exception:
                    logger.exception("error shutting down task run %s", run.task_run_id)

        try:
            self._call(stop_all(), timeout=120)
        except KeyboardInterrupt:  # a second Ctrl-C: stop without waiting
            logger.warning("forced shutdown")
        finally:
            self.writer.stop()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            if not self._thread.is_alive():
                self._loop.close()
            gc.unfreeze()  # what the runs left behind can be collected again

    def __enter__(self) -> Operator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
