"""Faults under load: the run's process killed, the server restarted, PostgreSQL
connections cut, the SQLite disk full. Simulated workers record every submit the server
acknowledged (HTTP 200); after each fault the run must go on (or say clearly why not)
and every acknowledged submit must be in the database. Each scenario prints its
figures: acknowledged submits, lost (must be 0), 503s seen, time taken."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState
from mephisto.db import MephistoDB, batch
from mephisto.operations.operator import Operator
from mephisto.testing.faults import (
    BackendKiller,
    SQLiteSizeCap,
    sqlite_full_error,
    start_run_process,
    with_application_name,
)
from mephisto.testing.fixtures import static_run_config
from mephisto.testing.http_client import HTTPClient
from mephisto.testing.worker import SimulatedWorker, SimulatedWorkerError
from mephisto.tools.data_browser import DataBrowser

TASK_NAME = "durable"  # the name start_run_process gives its run
RETRY_PAUSE = 0.05  # seconds a worker waits after a 503 (the server asks for 5: too slow here)
RETRY_FOR = 15.0  # seconds a worker keeps retrying one request answered 503
PHASE_TIMEOUT = 60.0  # seconds the crowd may work against one server


def _data(n: int) -> list[dict[str, str]]:
    return [{"text": f"item-{i}"} for i in range(n)]


# -- workers that remember what the server acknowledged ------------------------------------


@dataclass
class _Worker:
    """One worker across server restarts: its current assignment, the agent it holds, and
    the answer it sent without an acknowledgement (sent again to the same agent)."""

    name: str
    assignment: int = 0
    agent_id: str | None = None
    pending: dict[str, Any] | None = None

    @property
    def assignment_id(self) -> str:
        return f"{self.name}-a{self.assignment}"


@dataclass
class Crowd:
    """Simulated workers submitting concurrently; `acked` maps the agent id of every
    submit answered 200 to the data sent. A worker whose server goes away (connection
    refused or reset) stops for this phase and comes back in the next one, as a browser
    tab does: it sends its unanswered submit again, or reloads (asks for an agent on the
    same assignment) if it was mid-unit."""

    size: int
    prefix: str = "w"
    acked: dict[str, Any] = field(default_factory=dict)
    padding: int = 0  # characters of filler in each answer (bigger rows)
    refusals: Counter[int] = field(default_factory=Counter)  # non-2xx answers by status
    refused_submits: Counter[int] = field(default_factory=Counter)  # ... of submits
    connection_errors: int = 0
    same_agent_back: int = 0  # reloads that got the agent they held
    new_agent_back: int = 0  # reloads whose agent was gone
    resent_acked: int = 0  # unanswered submits sent again after a restart: 200
    resent_unknown: int = 0  # ... and 404 (the agent is not known any more)
    workers: list[_Worker] = field(default_factory=list)
    on_ack: Callable[[int], None] | None = None
    pause: Callable[[], bool] | None = None  # when true, workers stop after their unit

    def __post_init__(self) -> None:
        self.workers = [_Worker(f"{self.prefix}{i}") for i in range(self.size)]

    @property
    def unavailable(self) -> int:
        return self.refusals[503]

    async def work(self, url: str, think: float = 0.0) -> None:
        """Every worker works until the server has no more work for it or goes away;
        `think` (seconds, at most) is each unit's time between its agent and its submit."""
        http = HTTPClient(url)
        try:
            async with asyncio.timeout(PHASE_TIMEOUT):  # fail, never hang
                await asyncio.gather(*(self._work(w, url, http, think) for w in self.workers))
        finally:
            await http.close()

    async def _retrying(self, call: Callable[[], Any]) -> Any:
        """`call()`, again after each 503 (unavailable: retry later), for RETRY_FOR s."""
        deadline = time.monotonic() + RETRY_FOR
        while True:
            try:
                return await call()
            except SimulatedWorkerError as exc:
                self.refusals[exc.status] += 1
                if exc.request.endswith("/submit_task"):
                    self.refused_submits[exc.status] += 1
                if exc.status != 503 or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(RETRY_PAUSE)

    async def _work(self, w: _Worker, url: str, http: HTTPClient, think: float) -> None:
        sim = SimulatedWorker(url, w.name, w.assignment_id, http=http)
        try:
            if w.pending is not None:  # sent before the server went away, never answered
                sim.agent_id = w.agent_id
                await self._submit(sim, w, again=True)
            while self.pause is None or not self.pause():
                sim.assignment_id = w.assignment_id
                answer = await self._retrying(sim.request_agent)
                if w.agent_id is not None:  # a reload: do we get our agent back?
                    if answer["agent_id"] == w.agent_id:
                        self.same_agent_back += 1
                    else:
                        self.new_agent_back += 1
                w.agent_id = answer["agent_id"]
                if w.agent_id is None:  # no more work for this worker
                    return
                if think:  # the worker at work, mid-unit
                    await asyncio.sleep(random.uniform(0, think))
                w.pending = {"answer": f"{w.name}/{w.assignment}", "init": sim.init_data,
                             "notes": "x" * self.padding}
                await self._submit(sim, w)
        except (OSError, aiohttp.ClientError):
            self.connection_errors += 1  # the server went away; this tab waits for it
        except SimulatedWorkerError:  # refused for good (counted in refusals): give up
            pass
        finally:
            await sim.close()

    async def take_agents(self, url: str) -> None:
        """Every worker takes an agent and keeps it: mid-unit, nothing submitted."""
        http = HTTPClient(url)
        try:
            for w in self.workers:
                async with SimulatedWorker(url, w.name, w.assignment_id, http=http) as sim:
                    w.agent_id = (await sim.request_agent())["agent_id"]
        finally:
            await http.close()

    async def _submit(self, sim: SimulatedWorker, w: _Worker, again: bool = False) -> None:
        assert w.agent_id is not None and w.pending is not None
        try:
            await self._retrying(lambda: sim.submit(w.pending))
        except SimulatedWorkerError as exc:  # refused for good: this agent is over
            if again and exc.status == 404:
                self.resent_unknown += 1
        else:
            self.acked[w.agent_id] = w.pending
            self.resent_acked += again
            if self.on_ack is not None:
                self.on_ack(len(self.acked))
        w.agent_id, w.pending = None, None
        w.assignment += 1


# -- what the database says afterwards ----------------------------------------------------


def _run_id(db: MephistoDB) -> str:
    runs = db.find_task_runs()
    assert len(runs) == 1, "a resume must carry on the same run, not start another"
    return runs[0].db_id  # type: ignore[no-any-return]


def _lost(db: MephistoDB, crowd: Crowd) -> int:
    """Acknowledged submits whose data is not stored as their agent's completed work."""
    results = DataBrowser(db).load_results(task_run_id=_run_id(db))
    stored = {r["agent_id"]: r["data"]["outputs"] for r in results}
    return sum(1 for agent_id, data in crowd.acked.items() if stored.get(agent_id) != data)


def _check_completed_once(db: MephistoDB, units: int) -> None:
    """Every unit completed, each by exactly one agent, and the run marked complete."""
    run_id = _run_id(db)
    assert db.get_unit_status_counts(run_id) == {"completed": units}
    completed_per_unit = Counter(
        a.unit_id for a in db.find_agents(task_run_id=run_id) if a.db_status == "completed"
    )
    assert len(completed_per_unit) == units and max(completed_per_unit.values()) == 1, (
        "a unit was completed twice"
    )
    results = DataBrowser(db).load_results(task_run_id=run_id)
    inputs = sorted(r["data"]["inputs"]["text"] for r in results)
    assert inputs == sorted(d["text"] for d in _data(units))
    assert db.get_task_run(run_id)["is_completed"] is True


def _error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("mephisto") and r.levelno >= logging.ERROR]


def _report(name: str, crowd: Crowd, lost: int, started: float, **extra: Any) -> None:
    figures = {
        "acknowledged": len(crowd.acked), "lost": lost, "503s": crowd.unavailable,
        "other refusals": sum(n for s, n in crowd.refusals.items() if s != 503),
        "seconds": round(time.monotonic() - started, 1), **extra,
    }
    print(f"\n[{name}] " + ", ".join(f"{k}: {v}" for k, v in figures.items()))


class Runs:
    """Operators and databases of one test, shut down at its end whatever happens."""

    def __init__(self, html: Path) -> None:
        self.html = html
        self.operators: list[Operator] = []
        self.dbs: list[MephistoDB] = []

    def db(self, url: str) -> MephistoDB:
        db = MephistoDB(url)
        self.dbs.append(db)
        return db

    def start(self, db: MephistoDB, units: int) -> tuple[Operator, Any]:
        """A new operator launching the run, or picking up its incomplete run (as a rerun
        of the run script does). Returns it and its live run."""
        operator = Operator(db)
        self.operators.append(operator)
        config = static_run_config(self.html, task_name=TASK_NAME, resume_incomplete_run=True)
        run_id = operator.launch_task_run(
            config, SharedStaticTaskState(static_task_data=_data(units))
        )
        return operator, operator.get_running_task_runs()[run_id]

    def finish(self, operator: Operator, live: Any, crowd: Crowd) -> bool:
        """The crowd works until the server has no more work; shut down. Returns
        whether the run finished by itself."""
        asyncio.run(crowd.work(live.url))
        finished = live.done_sync.wait(10)
        operator.shutdown()
        return finished

    def close(self) -> None:
        for operator in self.operators:
            operator.shutdown()  # idempotent
        for db in self.dbs:
            db.shutdown()


@pytest.fixture
def runs(task_html: Path) -> Iterator[Runs]:
    r = Runs(task_html)
    yield r
    r.close()


# -- 1. kill -9 under load, then resume ---------------------------------------------------


def test_kill_9_under_load_twice_then_resume(
    tmp_path: Path, task_html: Path, runs: Runs
) -> None:
    """The run's process is SIGKILLed twice under load (no cleanup at all); each time a
    new process resumes the run. Nothing acknowledged is lost, nothing is done twice."""
    started = time.monotonic()
    units, db_url = 150, f"sqlite:///{tmp_path / 'durable.db'}"
    crowd = Crowd(12)
    kills = 0
    for kill_at in (30, 75):
        proc = start_run_process(tmp_path, db_url, task_html, units)

        def kill_now(acked: int, proc: Any = proc, kill_at: int = kill_at) -> None:
            if acked >= kill_at and proc.process.poll() is None:
                proc.process.kill()  # mid-load: other submits are in flight

        crowd.on_ack = kill_now
        try:
            asyncio.run(crowd.work(proc.url, think=0.01))
        finally:
            proc.kill()
        kills += 1
        assert crowd.connection_errors > 0 and len(crowd.acked) >= kill_at
    crowd.on_ack = None
    db = runs.db(db_url)
    finished = runs.finish(*runs.start(db, units), crowd)
    lost = _lost(db, crowd)
    _report("kill -9 x2", crowd, lost, started, kills=kills,
            resent_submits_200=crowd.resent_acked, resent_submits_404=crowd.resent_unknown)
    assert lost == 0
    assert finished, "the run did not finish by itself"
    _check_completed_once(db, units)
    assert crowd.resent_acked > 0  # agents at work survived the crash: their submits landed


# -- 2. a graceful restart with workers mid-task ---------------------------------------------


def test_graceful_restart_with_workers_mid_task(tmp_path: Path, runs: Runs) -> None:
    """The operator is shut down gracefully (what Ctrl-C does) while every worker holds
    an agent mid-unit, and a new one resumes the run; the workers reload their pages on
    it and carry on. Nothing acknowledged is lost and the run completes."""
    started = time.monotonic()
    units = 80
    db = runs.db(f"sqlite:///{tmp_path / 'restart.db'}")
    operator, live = runs.start(db, units)
    crowd = Crowd(10)
    crowd.pause = lambda: len(crowd.acked) >= 25
    asyncio.run(crowd.work(live.url, think=0.01))
    asyncio.run(crowd.take_agents(live.url))
    held = sum(1 for w in crowd.workers if w.agent_id is not None)
    assert held == len(crowd.workers)
    operator.shutdown()
    assert db.find_task_runs()[0].is_completed is False  # stopped, not finished: resumable
    crowd.pause = None
    finished = runs.finish(*runs.start(db, units), crowd)
    lost = _lost(db, crowd)
    _report("graceful restart", crowd, lost, started, agents_held_at_stop=held,
            reloads_same_agent=crowd.same_agent_back, reloads_agent_gone=crowd.new_agent_back)
    assert lost == 0
    assert finished, "the run did not finish by itself"
    _check_completed_once(db, units)
    assert crowd.same_agent_back + crowd.new_agent_back == held  # every tab reloaded


async def _take_agent(url: str, worker: str, assignment: str) -> str:
    async with SimulatedWorker(url, worker, assignment) as sim:
        agent_id = (await sim.request_agent())["agent_id"]
        assert agent_id is not None
        return agent_id  # type: ignore[no-any-return]


def test_reload_after_a_graceful_restart_gets_the_same_agent(tmp_path: Path, runs: Runs) -> None:
    db = runs.db(f"sqlite:///{tmp_path / 'reload.db'}")
    operator, live = runs.start(db, 3)
    held = asyncio.run(_take_agent(live.url, "mid-task", "hit-1"))
    operator.shutdown()
    _operator, live = runs.start(db, 3)

    async def reload() -> tuple[str | None, int]:
        async with SimulatedWorker(live.url, "mid-task", "hit-1") as again:
            answer = await again.request_agent()
            again.agent_id = held  # the page still holds its agent
            try:
                await again.submit({"answer": "done before the restart"})
            except SimulatedWorkerError as exc:
                return answer["agent_id"], exc.status
            return answer["agent_id"], 200

    assert asyncio.run(reload()) == (held, 200)


def test_a_stored_submit_sent_again_after_a_restart_is_acknowledged(
    tmp_path: Path, runs: Runs
) -> None:
    db = runs.db(f"sqlite:///{tmp_path / 'resend.db'}")
    operator, live = runs.start(db, 3)

    async def submit(url: str, agent_id: str | None = None) -> tuple[str | None, int]:
        async with SimulatedWorker(url, "unlucky", "hit-1") as sim:
            if agent_id is None:
                await sim.request_agent()
            else:
                sim.agent_id = agent_id
            try:
                await sim.submit({"answer": "stored"})
            except SimulatedWorkerError as exc:
                return sim.agent_id, exc.status
            return sim.agent_id, 200

    agent_id, status = asyncio.run(submit(live.url))  # stored; its answer "never arrived"
    assert status == 200
    operator.shutdown()  # the stored state is what a kill -9 right after COMMIT leaves
    _operator, live = runs.start(db, 3)
    assert asyncio.run(submit(live.url, agent_id)) == (agent_id, 200)


# -- 3. PostgreSQL connections killed mid-run ----------------------------------------------


@pytest.mark.postgres
def test_postgres_connections_killed_mid_run(
    postgres_url: str, runs: Runs, caplog: pytest.LogCaptureFixture
) -> None:
    """The server terminates every connection of the run, five times under load, then
    again and again for a while (a storm: the retry on a new connection is cut too). The
    run carries on; a request that failed was answered 503, never 200."""
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    units = 200
    app_name = f"faults-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    db = runs.db(with_application_name(postgres_url, app_name))
    _operator, live = runs.start(db, units)
    crowd = Crowd(12)
    killer = BackendKiller(postgres_url, app_name)
    killed: list[int] = []
    before_storm: list[int] = []  # 503s seen before it

    def storm(seconds: float) -> int:
        count, end = 0, time.monotonic() + seconds
        while time.monotonic() < end:
            count += killer.kill()
        return count

    async def kill_connections() -> None:
        for threshold in (15, 35, 55, 75, 95):
            while len(crowd.acked) < threshold:
                await asyncio.sleep(0.005)
            killed.append(await asyncio.to_thread(killer.kill))
        while len(crowd.acked) < 120:
            await asyncio.sleep(0.005)
        before_storm.append(crowd.unavailable)
        killed.append(await asyncio.to_thread(storm, 0.3))

    async def load() -> None:
        await asyncio.gather(crowd.work(live.url, think=0.005), kill_connections())

    try:
        asyncio.run(load())
    finally:
        killer.close()
    finished = runs.finish(_operator, live, crowd)
    lost = _lost(db, crowd)
    retried = sum(1 for r in caplog.records if "committed on a new connection" in r.getMessage())
    errors = _error_records(caplog)
    _report("postgres connections killed", crowd, lost, started, kill_rounds=len(killed),
            connections_killed=sum(killed), commits_retried=retried,
            unavailable_before_storm=before_storm[0], error_log_records=len(errors))
    assert lost == 0
    assert finished, "the run did not finish by itself"
    _check_completed_once(db, units)
    assert len(killed) == 6 and all(killed), killed  # each round cut the run's connections
    assert set(crowd.refusals) <= {503}, crowd.refusals  # failures are 503s, never 500
    assert crowd.connection_errors == 0
    assert len(errors) <= 1, [r.getMessage() for r in errors]  # the storm, once
    assert all("connection lost" in r.getMessage() for r in errors)


# -- 4. the disk fills under SQLite ----------------------------------------------------------


def test_sqlite_disk_full_mid_run(
    tmp_path: Path, runs: Runs, caplog: pytest.LogCaptureFixture
) -> None:
    """Writes fail with "database or disk is full" mid-run: workers get 503 (retry
    later), the operator logs one error naming the cause and the fix, and the run
    carries on once space is freed."""
    caplog.set_level(logging.WARNING)
    started = time.monotonic()
    units = 120
    db = runs.db(f"sqlite:///{tmp_path / 'full.db'}")
    operator, live = runs.start(db, units)
    crowd = Crowd(10, padding=1000)  # every submit needs new pages
    cap = SQLiteSizeCap(db.engine, full=False)
    full_for: list[float] = []

    async def fill_then_free_the_disk() -> None:
        while len(crowd.acked) < 25:
            await asyncio.sleep(0.005)
        cap.fill()  # the disk is full from the next commit on
        filled = time.monotonic()
        # full for 0.5 s at least, long enough for 20 submits to be told to retry
        while crowd.refused_submits[503] < 20 or time.monotonic() - filled < 0.5:
            if time.monotonic() - filled > 5:
                break  # submits are not refused: the assertions below say so
            await asyncio.sleep(0.005)
        cap.lift()  # space freed
        full_for.append(time.monotonic() - filled)

    async def load() -> None:
        await asyncio.gather(crowd.work(live.url, think=0.005), fill_then_free_the_disk())

    with cap:
        asyncio.run(load())
        finished = runs.finish(operator, live, crowd)
    lost = _lost(db, crowd)
    errors = _error_records(caplog)
    _report("sqlite disk full", crowd, lost, started, full_seconds=round(full_for[0], 2),
            submit_503s=crowd.refused_submits[503], error_log_records=len(errors),
            warning_log_records=sum(1 for r in caplog.records if r.levelno == logging.WARNING))
    assert lost == 0
    assert finished, "the run did not finish by itself"
    _check_completed_once(db, units)
    assert crowd.refused_submits[503] >= 20 and set(crowd.refusals) == {503}, crowd.refusals
    assert len(errors) == 1, [r.getMessage() for r in errors]
    message = errors[0].getMessage()
    assert "disk full" in message and "free disk space" in message, message


# -- a failed commit must not leave the run stuck ----------------------------------------------
# Each test injects one database failure at a chosen write and expects the run to get
# over it (each failed before the writes a run needs were retried: `until_saved`).


def _fail_once(monkeypatch: pytest.MonkeyPatch, target: Any, method: str,
               when: Callable[..., bool] = lambda *a, **k: True) -> list[int]:
    """`target.<method>` (a database's method, or a function of `mephisto.db.batch`)
    raises SQLITE_FULL at its first call for which `when(...)` holds."""
    real = getattr(target, method)
    failed: list[int] = []

    def failing(*args: Any, **kwargs: Any) -> Any:
        if not failed and when(*args, **kwargs):
            failed.append(1)
            raise sqlite_full_error()
        return real(*args, **kwargs)

    monkeypatch.setattr(target, method, failing)
    return failed


async def _complete(url: str, worker: str, assignment: str) -> dict[str, Any]:
    async with SimulatedWorker(url, worker, assignment) as sim:
        answer = await sim.request_agent()
        if answer["agent_id"] is not None:
            await sim.submit({"answer": worker})
        return answer


def test_the_final_commit_failing_once_is_retried(
    tmp_path: Path, runs: Runs, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = runs.db(f"sqlite:///{tmp_path / 'finish.db'}")
    _operator, live = runs.start(db, 1)
    failed = _fail_once(monkeypatch, db, "update_task_run")
    asyncio.run(_complete(live.url, "last", "a1"))
    assert live.done_sync.wait(3) and failed, "the run did not finish"


def test_a_timeout_failing_once_is_retried(
    tmp_path: Path, runs: Runs, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = runs.db(f"sqlite:///{tmp_path / 'timeout.db'}")
    operator = Operator(db)
    runs.operators.append(operator)
    config = static_run_config(runs.html, task_name=TASK_NAME, assignment_duration_in_seconds=1)
    run_id = operator.launch_task_run(config, SharedStaticTaskState(static_task_data=_data(1)))
    live = operator.get_running_task_runs()[run_id]
    failed = _fail_once(monkeypatch, db, "update_agent",
                        lambda agent_id, status=None, state=None: status == "timeout")
    asyncio.run(_take_agent(live.url, "gone", "a1"))  # and never comes back
    time.sleep(2.5)  # the timeout (1 s) failed once; a second try would have freed the unit
    answer = asyncio.run(_complete(live.url, "next", "a2"))
    assert failed and answer["agent_id"] is not None, "the unit was never freed"


def test_a_launch_failing_once_keeps_its_units(
    tmp_path: Path, runs: Runs, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = runs.db(f"sqlite:///{tmp_path / 'launch.db'}")
    operator = Operator(db)
    runs.operators.append(operator)
    config = static_run_config(runs.html, task_name=TASK_NAME, max_num_concurrent_units=1)
    run_id = operator.launch_task_run(config, SharedStaticTaskState(static_task_data=_data(2)))
    live = operator.get_running_task_runs()[run_id]
    failed = _fail_once(monkeypatch, batch, "update_units_status",
                        lambda db, unit_ids, status, clear_agent=False: status == "launched")
    asyncio.run(_complete(live.url, "first", "a1"))  # its submit launches the next unit
    time.sleep(0.3)
    answer = asyncio.run(_complete(live.url, "second", "a2"))
    assert failed and answer["agent_id"] is not None, answer["failure_reason"]
    assert live.done_sync.wait(3), "the run did not finish"


def _arm_commit_then_disconnect(engine: Any) -> tuple[list[bool], Callable[[], None]]:
    """The next commit after `armed.append(True)` is saved, and then the connection drops
    before the answer: the writer reports it as unavailable (outcome unknown). Returns
    the trigger and a function removing the listener."""
    import sqlalchemy as sa

    armed: list[bool] = []

    def commit_then_lose_the_connection(conn: Any) -> None:
        if armed and armed.pop():
            conn.exec_driver_sql("COMMIT")  # it is saved ...
            raise sa.exc.OperationalError(  # ... and then the connection drops
                "COMMIT", {}, Exception("server closed the connection"),
                connection_invalidated=True)

    sa.event.listen(engine, "commit", commit_then_lose_the_connection)
    return armed, lambda: sa.event.remove(engine, "commit", commit_then_lose_the_connection)


async def _statuses(calls: list[Callable[[], Any]]) -> list[int]:
    statuses = []
    for call in calls:
        try:
            await call()
            statuses.append(200)
        except SimulatedWorkerError as exc:
            statuses.append(exc.status)
    return statuses


def test_a_submit_saved_but_reported_unavailable_is_acknowledged_when_sent_again(
    tmp_path: Path, runs: Runs
) -> None:
    """The writer cannot tell a COMMIT that failed from one that succeeded just before
    its connection dropped: the worker gets 503 and sends the submit again, which must be
    acknowledged (the work is saved once) and the run must end."""
    db = runs.db(f"sqlite:///{tmp_path / 'ambiguous.db'}")
    _operator, live = runs.start(db, 1)
    armed, disarm = _arm_commit_then_disconnect(db.engine)

    async def submit_twice() -> list[int]:
        async with SimulatedWorker(live.url, "unlucky", "a1") as sim:
            await sim.request_agent()
            armed.append(True)
            return await _statuses([lambda: sim.submit({"answer": "once"})] * 2)

    try:
        assert asyncio.run(submit_twice()) == [503, 200]
    finally:
        disarm()
    assert live.done_sync.wait(3), "the run did not finish"
    [result] = DataBrowser(db).load_results(task_run_id=_run_id(db))
    assert result["data"]["outputs"] == {"answer": "once"}


def test_an_agent_saved_but_reported_unavailable_is_the_workers(
    tmp_path: Path, runs: Runs
) -> None:
    db = runs.db(f"sqlite:///{tmp_path / 'ambiguous-agent.db'}")
    _operator, live = runs.start(db, 3)
    armed, disarm = _arm_commit_then_disconnect(db.engine)

    async def work() -> tuple[list[int], str | None]:
        await _complete(live.url, "unlucky", "a1")  # a known worker: its next commit
        async with SimulatedWorker(live.url, "unlucky", "a2") as sim:  # is its agent's
            armed.append(True)
            statuses = await _statuses([sim.request_agent, sim.request_agent])
            if sim.agent_id is not None:
                statuses += await _statuses([lambda: sim.submit({"answer": "x"})])
        for i in range(3):
            await _complete(live.url, f"other-{i}", "b1")
        return statuses, sim.failure_reason

    try:
        statuses, refusal = asyncio.run(work())
    finally:
        disarm()
    # the agent's creation was saved: the worker gets it (at once, once the server has
    # asked the database, or on the retry after a 503), and it is the same agent after
    assert statuses in ([200, 200, 200], [503, 200, 200]), (statuses, refusal)
    assert live.done_sync.wait(3), "the run did not finish"
    left = [a.db_status for a in db.find_agents() if a.db_status != "completed"]
    assert left == [], f"agents left behind: {left}"


def test_a_new_workers_first_commit_saved_but_reported_unavailable_is_theirs(
    tmp_path: Path, runs: Runs
) -> None:
    """A new worker and their agent are created in one commit: when its answer is lost,
    both were saved, and the worker gets that agent and finishes the run."""
    db = runs.db(f"sqlite:///{tmp_path / 'ambiguous-first.db'}")
    _operator, live = runs.start(db, 2)
    armed, disarm = _arm_commit_then_disconnect(db.engine)

    async def work() -> tuple[list[int], str | None]:
        async with SimulatedWorker(live.url, "newcomer", "a1") as sim:
            armed.append(True)
            statuses = await _statuses([sim.request_agent, sim.request_agent])
            if sim.agent_id is not None:
                statuses += await _statuses([lambda: sim.submit({"answer": "x"})])
        await _complete(live.url, "other", "b1")
        return statuses, sim.failure_reason

    try:
        statuses, refusal = asyncio.run(work())
    finally:
        disarm()
    assert armed == [], "the commit was not cut"
    assert statuses in ([200, 200, 200], [503, 200, 200]), (statuses, refusal)
    assert live.done_sync.wait(3), "the run did not finish"
    assert [w.worker_name for w in db.find_workers()] == ["newcomer", "other"]
    assert sorted(a.db_status for a in db.find_agents()) == ["completed", "completed"]


@pytest.mark.parametrize("returning", [False, True], ids=["new", "returning"])
def test_a_new_workers_first_commit_still_unknown_is_settled_in_the_background(
    tmp_path: Path, runs: Runs, monkeypatch: pytest.MonkeyPatch, returning: bool
) -> None:
    """The database does not say at once whether a worker's first commit on a run was
    saved: the request is answered 503, and once the database answers the worker and the
    agent are the run's: asking again gets that agent. A worker the database knew from
    before is then counted with their record (here, a qualification)."""
    from mephisto.errors import DatabaseUnavailable
    from mephisto.operations import worker_pool

    db = runs.db(f"sqlite:///{tmp_path / 'unknown-first.db'}")
    if returning:
        known = db.find_or_new_worker("newcomer", "mock")
        db.grant_qualification(db.make_qualification("veteran"), known.db_id, 3)
    _operator, live = runs.start(db, 1)
    armed, disarm = _arm_commit_then_disconnect(db.engine)
    monkeypatch.setattr(worker_pool, "CREATION_CHECK_PAUSES", (0.01,))

    def no_answer(db: MephistoDB, agent_id: str) -> bool:
        raise DatabaseUnavailable("still down")

    monkeypatch.setattr(batch, "agent_exists", no_answer)

    async def work() -> list[int]:
        async with SimulatedWorker(live.url, "newcomer", "a1") as sim:
            armed.append(True)
            statuses = await _statuses([sim.request_agent])
            await asyncio.sleep(0.2)  # the background settling reads the agent
            statuses += await _statuses([sim.request_agent, lambda: sim.submit({"answer": "x"})])
        return statuses

    try:
        statuses = asyncio.run(work())
    finally:
        disarm()
    assert statuses == [503, 200, 200]
    assert live.done_sync.wait(3), "the run did not finish"
    [worker] = db.find_workers()
    assert [a.db_status for a in worker.get_agents()] == ["completed"]
    in_run = live.pool.workers["newcomer"]
    assert in_run.worker_id == worker.db_id
    assert in_run.granted == ({"veteran": 3} if returning else {})
    assert (in_run.active, in_run.task_units) == (0, 1)


def test_a_provider_failing_to_launch_is_retried_and_the_run_ends(
    tmp_path: Path, runs: Runs
) -> None:
    """The crowd provider fails (retryable) to publish the next unit once: a worker asking
    meanwhile gets a 503 (not a 500), the launch is tried again, and the run ends."""
    from mephisto.abstractions.providers.mock import MockProvider
    from mephisto.errors import ProviderError
    from mephisto.operations.registry import register_mephisto_abstraction

    failures: list[int] = []

    @register_mephisto_abstraction()
    class FlakyProvider(MockProvider):
        PROVIDER_TYPE = "flaky_launch_test_provider"

        def launch_units(self, units: list[Any], server_url: str) -> None:
            if units and units[0].unit_id == "2" and not failures:
                failures.append(1)
                raise ProviderError(self.PROVIDER_TYPE, "the service timed out",
                                    retryable=True)
            super().launch_units(units, server_url)

    db = runs.db(f"sqlite:///{tmp_path / 'flaky.db'}")
    operator = Operator(db)
    runs.operators.append(operator)
    config = static_run_config(runs.html, task_name=TASK_NAME, max_num_concurrent_units=1)
    config["provider"] = {"_provider_type": "flaky_launch_test_provider"}
    run_id = operator.launch_task_run(config, SharedStaticTaskState(static_task_data=_data(2)))
    live = operator.get_running_task_runs()[run_id]
    asyncio.run(_complete(live.url, "first", "a1"))  # its submit launches unit 2: fails once
    time.sleep(1.0)  # the retry (0.5 s later) publishes it
    answer = asyncio.run(_complete(live.url, "second", "a2"))
    assert failures and answer["agent_id"] is not None, answer["failure_reason"]
    assert live.done_sync.wait(3), "the run did not finish"
