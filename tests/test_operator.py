"""A task run end to end: operator, local server, mock provider, simulated workers
speaking the real protocol over real sockets, SQLite on disk."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState
from mephisto.data_model.qualification import QUAL_EXISTS
from mephisto.db import MephistoDB
from mephisto.errors import ConfigError, NotEligible, UnknownAbstractionError
from mephisto.operations.operator import Operator
from mephisto.testing.faults import start_run_process
from mephisto.testing.fixtures import static_run_config
from mephisto.testing.worker import SimulatedWorker, SimulatedWorkerError
from mephisto.tools.data_browser import DataBrowser
from mephisto.utils.qualifications import make_qualification_dict


def _data(n: int) -> list[dict[str, str]]:
    return [{"text": f"item-{i}"} for i in range(n)]


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


# -- a whole run -----------------------------------------------------------------------


def test_200_units_by_50_concurrent_workers(launch_static_run: Any, mephisto_db: MephistoDB) -> None:
    run = launch_static_run(_data(200))
    stats = run.simulate(50, answer_fn=lambda w: {"answer": w.init_data["text"].upper()})
    assert run.wait(30), "the run did not end by itself"
    assert run.unit_statuses() == {"completed": 200}
    assert mephisto_db.get_task_run(run.task_run_id)["is_completed"] is True
    results = DataBrowser(mephisto_db).load_results(task_run_id=run.task_run_id)
    assert len(results) == 200
    for r in results:
        assert r["data"]["outputs"]["answer"] == r["data"]["inputs"]["text"].upper()
        assert r["task_end"] >= r["task_start"]
    assert len({r["worker_name"] for r in results}) > 1
    assert len({r["unit_id"] for r in results}) == 200
    assert stats.units_completed == 200


def test_run_ends_by_itself_and_wait_returns(operator: Operator, task_html: Path) -> None:
    task_run_id = operator.launch_task_run(
        static_run_config(task_html), SharedStaticTaskState(static_task_data=_data(3))
    )
    url = operator.get_running_task_runs()[task_run_id].url
    from mephisto.testing.worker import run_simulated_workers

    asyncio.run(run_simulated_workers(url, 2))
    started = time.monotonic()
    operator.wait_for_runs_then_shutdown(skip_input=True, log_rate=1)
    assert time.monotonic() - started < 5
    assert operator.get_running_task_runs() == {}


def test_finished_run_keeps_answering_workers_until_they_stop(operator: Operator, task_html: Path) -> None:
    """Workers still asking for work as the run finishes get "no agent", not a closed
    socket; the server closes once they have gone quiet."""
    import threading

    from mephisto.operations import live_task_run
    from mephisto.testing.worker import complete_unit

    task_run_id = operator.launch_task_run(
        static_run_config(task_html), SharedStaticTaskState(static_task_data=_data(1))
    )
    url = operator.get_running_task_runs()[task_run_id].url
    stopped = threading.Event()

    async def work() -> list[str | None]:
        reasons = []
        async with SimulatedWorker(url, "late-worker") as worker:
            await complete_unit(worker, {"x": 1})
            waiter = threading.Thread(
                target=lambda: (operator.wait_for_runs_then_shutdown(skip_input=True), stopped.set())
            )
            waiter.start()
            # keep asking for more work for a while after the run has finished
            for _ in range(8):
                worker.new_assignment()
                answer = await worker.request_agent()
                reasons.append(answer.get("failure_reason"))
                assert worker.agent_id is None
                await asyncio.sleep(live_task_run.LINGER_QUIET / 3)
            quiet_since = time.monotonic()
            await asyncio.to_thread(stopped.wait, 10)
            assert time.monotonic() - quiet_since < live_task_run.LINGER_QUIET + 2
        return reasons

    reasons = asyncio.run(work())
    assert stopped.is_set()
    assert all(reasons), reasons  # every late request was answered with a reason


def test_units_per_assignment_never_twice_to_one_worker(launch_static_run: Any, mephisto_db: MephistoDB) -> None:
    run = launch_static_run(_data(5), blueprint__units_per_assignment=3)
    run.simulate(6)
    assert run.wait(30)
    assert run.unit_statuses() == {"completed": 15}
    pairs = [(a.worker_id, a.assignment_id) for a in mephisto_db.find_agents(task_run_id=run.task_run_id)]
    assert len(pairs) == len(set(pairs)) == 15


def test_max_num_concurrent_units_caps_open_units(launch_static_run: Any, mephisto_db: MephistoDB) -> None:
    run = launch_static_run(_data(10), max_num_concurrent_units=3)
    counts = run.unit_statuses()
    assert counts.get("launched", 0) == 3 and counts.get("created", 0) == 7
    run.simulate(4)
    assert run.wait(30)
    assert run.unit_statuses() == {"completed": 10}


def test_generator_data(operator: Operator, task_html: Path, mephisto_db: MephistoDB) -> None:
    def items() -> Any:
        for i in range(7):
            yield {"text": f"gen-{i}"}

    task_run_id = operator.launch_task_run(
        static_run_config(task_html, max_num_concurrent_units=2),
        SharedStaticTaskState(static_task_data=items()),
    )
    live = operator.get_running_task_runs()[task_run_id]
    from mephisto.testing.worker import run_simulated_workers

    stats = asyncio.run(run_simulated_workers(live.url, 3))
    assert live.done_sync.wait(20), stats.errors
    operator.wait_for_runs_then_shutdown(skip_input=True)
    texts = sorted(r["data"]["inputs"]["text"] for r in DataBrowser(mephisto_db).load_results(task_run_id=task_run_id))
    assert texts == [f"gen-{i}" for i in range(7)]


# -- workers coming and going -----------------------------------------------------------


async def test_reload_and_reconnect_get_the_same_agent(launch_static_run: Any) -> None:
    run = launch_static_run(_data(3))
    async with SimulatedWorker(run.url, "alice", "hit-1") as first:
        agent = await first.request_agent()
        await first.connect()
        await first.disconnect()
    async with SimulatedWorker(run.url, "alice", "hit-1") as again:
        again_agent = await again.request_agent()
        assert again_agent["agent_id"] == agent["agent_id"]
        assert again_agent["init_task_data"] == agent["init_task_data"]
        await again.connect()
        await _until(lambda: any(p.get("packet_type") == "update_status" for p in again.received))
        await again.submit({"answer": "done"})
    assert run.unit_statuses()["completed"] == 1


async def test_timed_out_unit_goes_to_another_worker(launch_static_run: Any, mephisto_db: MephistoDB) -> None:
    run = launch_static_run(_data(1), assignment_duration_in_seconds=1)
    async with SimulatedWorker(run.url, "slow") as slow, SimulatedWorker(run.url, "fast") as fast:
        taken = await slow.request_agent()
        assert taken["agent_id"]
        none = await fast.request_agent()
        assert none["agent_id"] is None and none["failure_reason"]
        await _until(lambda: run.unit_statuses().get("launched") == 1)
        # The unit is freed in memory just after the commit the database shows: a
        # request in between is told there is no unit yet, so ask again until it is.
        got = await fast.request_agent()
        deadline = time.monotonic() + 5
        while got["agent_id"] is None and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            got = await fast.request_agent()
        assert got["agent_id"] and got["agent_id"] != taken["agent_id"]
        assert got["init_task_data"] == taken["init_task_data"]
        with pytest.raises(SimulatedWorkerError) as late:
            await slow.submit({"answer": "too late"})
        assert late.value.status == 403
        await fast.submit({"answer": "on time"})
    assert run.wait(10)
    statuses = {a.get_worker().worker_name: a.db_status for a in mephisto_db.find_agents()}
    assert statuses == {"slow": "timeout", "fast": "completed"}


async def test_lifetime_closes_run_and_gives_agents_submission_timeout(
    launch_static_run: Any, mephisto_db: MephistoDB
) -> None:
    run = launch_static_run(_data(3), task_lifetime_in_seconds=1, submission_timeout=30)
    async with SimulatedWorker(run.url, "late") as late, SimulatedWorker(run.url, "newcomer") as new:
        assert (await late.request_agent())["agent_id"]
        await _until(lambda: run.unit_statuses().get("expired") == 2)
        closed = await new.request_agent()
        assert closed["agent_id"] is None and "closed" in closed["failure_reason"]
        await late.submit({"answer": "still counts"})
    assert run.wait(10)
    assert run.unit_statuses() == {"completed": 1, "expired": 2}
    assert mephisto_db.get_task_run(run.task_run_id)["is_completed"] is True


async def test_submission_timeout_ends_agents_of_a_closed_run(launch_static_run: Any, mephisto_db: MephistoDB) -> None:
    run = launch_static_run(_data(2), task_lifetime_in_seconds=1, submission_timeout=1)
    async with SimulatedWorker(run.url, "idle") as idle:
        assert (await idle.request_agent())["agent_id"]
        assert await asyncio.get_running_loop().run_in_executor(None, run.wait, 10)
    assert run.unit_statuses() == {"expired": 2}
    assert [a.db_status for a in mephisto_db.find_agents()] == ["timeout"]


def test_no_submission_patience_closes_an_idle_run(launch_static_run: Any, mephisto_db: MephistoDB) -> None:
    run = launch_static_run(_data(4), no_submission_patience=1)
    assert run.wait(10)
    assert run.unit_statuses() == {"expired": 4}


# -- bad input through the real operator -------------------------------------------------


async def test_bad_submits_get_errors_and_change_nothing(launch_static_run: Any, mephisto_db: MephistoDB) -> None:
    run = launch_static_run(_data(2))
    async with SimulatedWorker(run.url, "w1") as w1:
        await w1.request_agent()
        before = run.unit_statuses()
        w1.agent_id = "not-a-real-agent"
        with pytest.raises(SimulatedWorkerError) as unknown:
            await w1.submit({"answer": "x"})
        assert unknown.value.status == 404
        assert run.unit_statuses() == before
    async with SimulatedWorker(run.url, "w2") as w2:
        await w2.request_agent()
        await w2.submit({"answer": "first"})
        with pytest.raises(SimulatedWorkerError) as double:
            await w2.submit({"answer": "second"})
        assert double.value.status == 409
    outputs = [r["data"]["outputs"] for r in DataBrowser(mephisto_db).load_results(task_run_id=run.task_run_id)]
    assert outputs == [{"answer": "first"}]


async def test_malformed_registration_is_rejected(launch_static_run: Any) -> None:
    run = launch_static_run(_data(1))
    async with SimulatedWorker(run.url, "") as nameless:
        with pytest.raises(SimulatedWorkerError) as err:
            await nameless.request_agent()
        assert err.value.status == 400
    assert run.unit_statuses() == {"launched": 1}


def test_config_errors_launch_nothing(operator: Operator, task_html: Path, mephisto_db: MephistoDB) -> None:
    bad_type = static_run_config(task_html)
    bad_type["blueprint"]["_blueprint_type"] = "no_such_blueprint"
    with pytest.raises(UnknownAbstractionError, match="static_task"):
        operator.launch_task_run(bad_type, SharedStaticTaskState(static_task_data=_data(1)))
    missing_title = static_run_config(task_html)
    del missing_title["task"]["task_title"]
    with pytest.raises(ConfigError) as info:
        operator.launch_task_run(missing_title, SharedStaticTaskState(static_task_data=_data(1)))
    assert info.value.key == "mephisto.task.task_title"
    no_data = static_run_config(task_html)
    with pytest.raises(ConfigError, match="no task data"):
        operator.launch_task_run(no_data, SharedStaticTaskState())
    no_source = static_run_config(task_html)
    del no_source["blueprint"]["task_source"]
    with pytest.raises(ConfigError) as info:  # the one resolver reports missing values
        operator.launch_task_run(no_source, SharedStaticTaskState(static_task_data=_data(1)))
    assert info.value.key == "mephisto.blueprint.task_source"
    bad_port = static_run_config(task_html)
    bad_port["architect"]["port"] = "70000"
    with pytest.raises(ConfigError) as info:
        operator.launch_task_run(bad_port, SharedStaticTaskState(static_task_data=_data(1)))
    assert info.value.key == "mephisto.architect.port"
    unknown_key = static_run_config(task_html)
    unknown_key["architect"]["prot"] = "3000"
    with pytest.raises(ConfigError, match="prot"):
        operator.launch_task_run(unknown_key, SharedStaticTaskState(static_task_data=_data(1)))
    assert mephisto_db.find_task_runs() == []


def test_a_blueprint_failing_to_start_leaves_no_open_run(
    operator: Operator, task_html: Path, mephisto_db: MephistoDB
) -> None:
    from mephisto.abstractions.blueprints.static_task import StaticTaskBlueprint
    from mephisto.operations.registry import register_mephisto_abstraction

    @register_mephisto_abstraction()
    class FailingBlueprint(StaticTaskBlueprint):
        BLUEPRINT_TYPE = "failing_in_init"

        def __init__(self, *args: Any) -> None:
            raise ConfigError("cannot copy the task's files", key="mephisto.blueprint.extra_source_dir")

    config = static_run_config(task_html)
    config["blueprint"]["_blueprint_type"] = "failing_in_init"
    with pytest.raises(ConfigError, match="cannot copy"):
        operator.launch_task_run(config, SharedStaticTaskState(static_task_data=_data(1)))
    runs = mephisto_db.find_task_runs()
    assert len(runs) == 1 and runs[0].is_completed is True  # closed, not left open


async def test_a_blueprints_task_runner_gets_the_pages_updates_and_answers(
    operator: Operator, task_html: Path, mephisto_db: MephistoDB
) -> None:
    from mephisto.abstractions._subcomponents.task_runner import TaskRunner
    from mephisto.abstractions.blueprints.static_task import StaticTaskBlueprint
    from mephisto.operations.registry import register_mephisto_abstraction

    received: list[tuple[str, Any]] = []

    class EchoRunner(TaskRunner):
        def run_unit(self, unit: Any, agent: Any) -> None:
            while not agent.did_submit.is_set():
                data = agent.act(timeout=0.1)
                if data is not None:
                    received.append((agent.agent_id, data))
                    agent.observe({"echo": data["n"]})

    @register_mephisto_abstraction()
    class EchoBlueprint(StaticTaskBlueprint):
        BLUEPRINT_TYPE = "live_updates_recorded"
        TaskRunnerClass = EchoRunner

    config = static_run_config(task_html)
    config["blueprint"]["_blueprint_type"] = "live_updates_recorded"
    run_id = operator.launch_task_run(config, SharedStaticTaskState(static_task_data=_data(1)))
    url = operator.get_running_task_runs()[run_id].url
    async with SimulatedWorker(url, "w1") as worker:
        await worker.request_agent()
        await worker.connect()
        sent = [await worker.send_live_update({"n": i}) for i in range(3)]
        await _until(lambda: len(received) == 3)
        for i in range(3):
            packet = await worker.wait_for_packet(
                "client_bound_live_update",
                predicate=lambda p, i=i: p["data"].get("echo") == i)
            assert packet["data"]["echo"] == i
        await worker.submit({"answer": "done"})
    assert received == [(worker.agent_id, data) for data in sent]
    state = mephisto_db.get_agent(worker.agent_id)["state"]
    recorded = [(u["sender"], u["data"].get("n", u["data"].get("echo")))
                for u in state["live_updates"]]
    assert sorted(recorded) == sorted([("worker", 0), ("worker", 1), ("worker", 2),
                                       ("mephisto", 0), ("mephisto", 1), ("mephisto", 2)])


def test_a_requester_that_is_not_ready_launches_nothing(
    operator: Operator, task_html: Path, mephisto_db: MephistoDB
) -> None:
    from mephisto.abstractions.crowd_provider import RequesterCheck
    from mephisto.abstractions.providers.mock import MockProvider
    from mephisto.errors import ProviderError
    from mephisto.operations.registry import register_mephisto_abstraction

    @register_mephisto_abstraction()
    class RefusingProvider(MockProvider):
        PROVIDER_TYPE = "refusing_test_provider"

        def check_requester(self, requester: Any) -> RequesterCheck:
            return RequesterCheck(False, "the key was revoked: run `mephisto register ...`")

    config = static_run_config(task_html)
    config["provider"] = {"_provider_type": "refusing_test_provider"}
    with pytest.raises(ProviderError, match="refusing_test_provider.*revoked.*register"):
        operator.launch_task_run(config, SharedStaticTaskState(static_task_data=_data(2)))
    assert mephisto_db.find_task_runs() == [] and mephisto_db.find_units() == []


def test_a_resumed_run_publishes_its_open_units_again(
    task_html: Path, tmp_path: Path
) -> None:
    """After a crash the provider may have lost what was published: a resumed run
    launches its open units again (a provider's launch_units is idempotent per unit)."""
    from mephisto.abstractions.providers.mock import MockProvider
    from mephisto.operations.registry import register_mephisto_abstraction

    launched: list[list[str]] = []

    @register_mephisto_abstraction()
    class CountingProvider(MockProvider):
        PROVIDER_TYPE = "counting_test_provider"

        def launch_units(self, units: list[Any], server_url: str) -> None:
            launched.append([u.unit_id for u in units])
            super().launch_units(units, server_url)

    db = MephistoDB(f"sqlite:///{tmp_path / 'relaunch.db'}")
    config = static_run_config(task_html, task_name="relaunch", resume_incomplete_run=True)
    config["provider"] = {"_provider_type": "counting_test_provider"}
    first, second = Operator(db), Operator(db)
    try:  # the first keeps running as a crashed process would: nothing was expired
        run_id = first.launch_task_run(config, SharedStaticTaskState(static_task_data=_data(3)))
        assert launched == [["1", "2", "3"]]
        assert second.launch_task_run(config, SharedStaticTaskState(static_task_data=_data(3))) \
            == run_id
        assert launched == [["1", "2", "3"], ["1", "2", "3"]]
    finally:
        second.shutdown()
        first.shutdown()
        db.shutdown()


# -- who may work -----------------------------------------------------------------------------


def test_standing_is_reread_for_workers_together(
    launch_static_run: Any, mephisto_db: MephistoDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks made during a run take effect at the next re-read of a worker's standing;
    the workers due at once are read in one call. The requests are made on the run's
    loop in one turn (over sockets they may land in different turns)."""
    from mephisto.db import batch
    from mephisto.operations import worker_pool

    run = launch_static_run(_data(6))
    pool, loop = run.live.pool, run.operator._loop
    calls: list[list[str]] = []
    real = batch.workers_standing

    def counting(db: Any, worker_ids: list[str], requester_id: str) -> Any:
        calls.append(sorted(worker_ids))
        return real(db, worker_ids, requester_id)

    def request_both(hit: str) -> list[Any]:
        async def both() -> list[Any]:
            return await asyncio.gather(*(
                pool.request_agent({"worker_name": name, "assignment_id": hit}, {})
                for name in ("good", "spammer")
            ), return_exceptions=True)
        return asyncio.run_coroutine_threadsafe(both(), loop).result(10)

    for name in ("good", "spammer"):  # known from earlier work: their standing is read
        mephisto_db.find_or_new_worker(name, "mock")
    monkeypatch.setattr(batch, "workers_standing", counting)
    first = request_both("hit-1")
    assert all(answer["agent_id"] for answer in first)
    assert len(calls) == 1 and len(calls[0]) == 2  # first sight: loaded together
    spammer_id = mephisto_db.find_workers(worker_name="spammer")[0].db_id
    requester_id = mephisto_db.find_requesters()[0].db_id
    mephisto_db.block_worker(spammer_id, requester_id, "spam")
    monkeypatch.setattr(worker_pool, "STANDING_TTL", 0.0)
    good, spammer = request_both("hit-2")
    assert good["agent_id"] is not None
    assert isinstance(spammer, NotEligible) and spammer.reason == worker_pool.BLOCKED
    assert len(calls) == 2 and len(calls[-1]) == 2  # re-read together


def test_a_worker_seen_for_the_first_time_anywhere_costs_no_standing_read(
    launch_static_run: Any, mephisto_db: MephistoDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker created by their first request has no past agents, qualifications or
    blocks: none is read (the common case of a crowd: a new person each unit)."""
    from mephisto.db import batch

    run = launch_static_run(_data(2))
    calls: list[Any] = []
    real = batch.workers_standing
    monkeypatch.setattr(batch, "workers_standing",
                        lambda *a: calls.append(a) or real(*a))
    answer = asyncio.run_coroutine_threadsafe(
        run.live.pool.request_agent({"worker_name": "brand-new", "assignment_id": "h"}, {}),
        run.operator._loop).result(10)
    assert answer["agent_id"] and calls == []
    assert mephisto_db.find_workers(worker_name="brand-new")


def test_a_new_workers_first_request_is_one_commit(
    launch_static_run: Any, mephisto_db: MephistoDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker new to the database is created in the commit that creates their agent;
    a worker known from before is read in the commit that creates their agent, and
    counted with what was read; one the record refuses gets no agent in that commit."""
    run = launch_static_run(_data(3))
    writer = run.operator.writer
    commits: list[int] = []
    real = writer._commit
    monkeypatch.setattr(writer, "_commit", lambda ops: commits.append(len(ops)) or real(ops))

    def request(name: str) -> Any:
        return asyncio.run_coroutine_threadsafe(
            run.live.pool.request_agent({"worker_name": name, "assignment_id": "h"}, {}),
            run.operator._loop).result(10)

    answer = request("brand-new")
    assert answer["agent_id"] and commits == [1]
    worker = mephisto_db.find_workers(worker_name="brand-new")[0]
    assert answer["worker_id"] == worker.db_id
    assert [a.db_id for a in worker.get_agents()] == [answer["agent_id"]]
    known = mephisto_db.find_or_new_worker("known", "mock")
    commits.clear()
    answer = request("known")
    assert answer["agent_id"] and commits == [1]
    assert answer["worker_id"] == known.db_id
    assert [a.db_id for a in known.get_agents()] == [answer["agent_id"]]
    pool = run.live.pool
    worker = pool.workers["known"]
    assert (worker.worker_id, worker.active, worker.task_units) == (known.db_id, 1, 1)
    assert pool.agent(answer["agent_id"]).worker is worker
    assert len(worker.assignments) == 1

    blocked = mephisto_db.find_or_new_worker("blocked", "mock")
    blocked.block_worker("spam", requester=mephisto_db.find_requesters()[0])
    commits.clear()
    with pytest.raises(NotEligible):
        request("blocked")
    assert blocked.get_agents() == [] and pool.workers["blocked"].active == 0
    assert run.unit_statuses().get("launched") == 1  # the unit reserved went back


def test_first_requests_of_new_returning_and_refused_workers_share_one_commit(
    launch_static_run: Any, mephisto_db: MephistoDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    """First requests arriving together go to the writer as one batch: the new and the
    returning worker get their agents in one commit; the one their record refuses (at
    the task's maximum from an earlier run) gets none, and their unit is offered again."""
    first = launch_static_run(_data(1), maximum_units_per_worker=1)
    mephisto_db.find_or_new_worker("known", "mock")
    full = asyncio.run_coroutine_threadsafe(
        first.live.pool.request_agent({"worker_name": "full", "assignment_id": "x"}, {}),
        first.operator._loop).result(10)
    assert full["agent_id"]
    run = launch_static_run(_data(3), maximum_units_per_worker=1)
    writer = run.operator.writer
    commits: list[int] = []
    real = writer._commit
    monkeypatch.setattr(writer, "_commit", lambda ops: commits.append(len(ops)) or real(ops))
    pool = run.live.pool

    async def together() -> list[Any]:
        return await asyncio.gather(*(
            pool.request_agent({"worker_name": name, "assignment_id": "h"}, {})
            for name in ("newbie", "known", "full")), return_exceptions=True)

    newbie, known, refused = asyncio.run_coroutine_threadsafe(
        together(), run.operator._loop).result(10)
    assert commits == [3]
    assert newbie["agent_id"] and known["agent_id"]
    assert isinstance(refused, NotEligible) and "maximum" in refused.reason
    agents = mephisto_db.find_agents(task_run_id=run.live.ctx.task_run_id)
    assert sorted(a.get_worker().worker_name for a in agents) == ["known", "newbie"]
    assert run.unit_statuses() == {"assigned": 2, "launched": 1}
    assert pool.workers["full"].task_units == 1 and pool.workers["full"].active == 0


def test_a_new_worker_whose_unit_the_database_refuses_is_told_so(
    launch_static_run: Any, mephisto_db: MephistoDB
) -> None:
    """The unit reserved for a new worker is no longer launched in the database: the
    worker is created all the same, told they cannot have it, and can ask again."""
    from mephisto.db import batch

    run = launch_static_run(_data(1))
    [unit] = mephisto_db.find_units(task_run_id=run.live.ctx.task_run_id)
    batch.update_units_status(mephisto_db, [unit.db_id], "expired")

    from mephisto.operations import worker_pool

    with pytest.raises(NotEligible) as refused:
        asyncio.run_coroutine_threadsafe(
            run.live.pool.request_agent({"worker_name": "late", "assignment_id": "h"}, {}),
            run.operator._loop).result(10)
    assert refused.value.reason == worker_pool.NOT_ALLOWED
    [worker] = mephisto_db.find_workers(worker_name="late")
    assert refused.value.worker_id == worker.db_id
    assert mephisto_db.find_agents(task_run_id=run.live.ctx.task_run_id) == []
    assert run.live.pool.workers["late"].active == 0


async def test_maximum_units_per_worker_across_runs(launch_static_run: Any) -> None:
    run = launch_static_run(_data(5), maximum_units_per_worker=2)
    async with SimulatedWorker(run.url, "eager") as w:
        for i in range(2):
            w.assignment_id = f"a{i}"
            assert (await w.request_agent())["agent_id"]
            await w.submit({"answer": i})
        w.assignment_id = "a3"
        refused = await w.request_agent()
        assert refused["agent_id"] is None and "maximum" in refused["failure_reason"]
    second = launch_static_run(_data(2), maximum_units_per_worker=2)
    async with SimulatedWorker(second.url, "eager", "b1") as w:
        assert (await w.request_agent())["agent_id"] is None


async def test_allowed_concurrent(launch_static_run: Any) -> None:
    run = launch_static_run(_data(3), allowed_concurrent=1)
    async with SimulatedWorker(run.url, "multi", "tab-1") as tab1, SimulatedWorker(run.url, "multi", "tab-2") as tab2:
        assert (await tab1.request_agent())["agent_id"]
        refused = await tab2.request_agent()
        assert refused["agent_id"] is None and "finish" in refused["failure_reason"]
        await tab1.submit({"answer": 1})
        assert (await tab2.request_agent())["agent_id"]


async def test_qualification_allowlist(launch_static_run: Any, mephisto_db: MephistoDB) -> None:
    qid = mephisto_db.make_qualification("allow")
    allowed = mephisto_db.find_or_new_worker("friend", "mock")
    mephisto_db.grant_qualification(qid, allowed.db_id)
    state = SharedStaticTaskState(qualifications=[make_qualification_dict("allow", QUAL_EXISTS)])
    run = launch_static_run(_data(2), shared_state=state)
    async with SimulatedWorker(run.url, "stranger") as stranger, SimulatedWorker(run.url, "friend") as friend:
        refused = await stranger.request_agent()
        assert refused["agent_id"] is None and "qualifications" in refused["failure_reason"]
        assert (await friend.request_agent())["agent_id"]


async def test_blocked_worker(launch_static_run: Any, mephisto_db: MephistoDB) -> None:
    run = launch_static_run(_data(2))
    worker = mephisto_db.find_or_new_worker("spammer", "mock")
    worker.block_worker("spam", requester=mephisto_db.find_requesters()[0])
    async with SimulatedWorker(run.url, "spammer") as w:
        refused = await w.request_agent()
        assert refused["agent_id"] is None and "blocked" in refused["failure_reason"]


async def test_onboarding(launch_static_run: Any, task_html: Path, mephisto_db: MephistoDB) -> None:
    onboarding_html = task_html.with_name("onboarding.html")
    onboarding_html.write_text('<input name="answer"><button type="submit">Go</button>')
    state = SharedStaticTaskState(
        validate_onboarding=lambda data: data["outputs"].get("answer") == "4",
        onboarding_data={"question": "2+2"},
    )
    run = launch_static_run(
        _data(2), shared_state=state,
        blueprint__onboarding_qualification="test-onboarded",
        blueprint__onboarding_source=str(onboarding_html),
    )
    async with SimulatedWorker(run.url, "wrong") as wrong, SimulatedWorker(run.url, "right") as right:
        first = await wrong.request_agent()
        assert first["agent_id"].startswith("onboarding") and first["init_task_data"] == {"question": "2+2"}
        failed = await wrong.submit_onboarding({"answer": "5"})
        assert failed["agent_id"] is None and failed["failure_reason"]
        assert (await wrong.request_agent())["agent_id"] is None  # failing is remembered

        assert (await right.request_agent())["agent_id"].startswith("onboarding")
        with pytest.raises(SimulatedWorkerError) as wrong_door:
            await right.submit({"answer": "4"})  # onboarding goes through /submit_onboarding
        assert wrong_door.value.status == 403
        passed = await right.submit_onboarding({"answer": "4"})
        assert passed["agent_id"] and not passed["agent_id"].startswith("onboarding")
        assert passed["init_task_data"]["text"].startswith("item-")
    grants = {w.worker_name: w.get_granted_qualifications().get("test-onboarded")
              for w in mephisto_db.find_workers()}
    assert grants == {"wrong": 0, "right": 1}


# -- process death and Ctrl-C ------------------------------------------------------------------

async def test_killed_run_resumes_without_loss_or_duplicates(tmp_path: Path, task_html: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'durable.db'}"
    proc = start_run_process(tmp_path, db_url, task_html, units=20)
    proc_url = proc.url
    try:
        for i in range(8):
            async with SimulatedWorker(proc_url, f"w{i}", f"h{i}") as w:
                await w.request_agent()
                await w.submit({"answer": i})
        holder = SimulatedWorker(proc_url, "holder", "h-hold")
        async with holder:
            held = await holder.request_agent()
    finally:
        proc.kill()

    db = MephistoDB(db_url)
    assert db.get_unit_status_counts(db.find_task_runs()[0].db_id) == {"completed": 8, "assigned": 1, "launched": 11}
    operator = Operator(db)
    try:
        config = static_run_config(task_html, task_name="durable", resume_incomplete_run=True)
        run_id = operator.launch_task_run(config, SharedStaticTaskState(static_task_data=_data(20)))
        assert len(db.find_task_runs()) == 1 and run_id == db.find_task_runs()[0].db_id
        live = operator.get_running_task_runs()[run_id]
        url = live.url
        async with SimulatedWorker(url, "holder", "h-hold") as back:
            again = await back.request_agent()
            assert again["agent_id"] == held["agent_id"]
            await back.submit({"answer": "held"})
        from mephisto.testing.worker import run_simulated_workers

        await run_simulated_workers(url, 4)
        assert await asyncio.get_running_loop().run_in_executor(None, live.done_sync.wait, 20)
    finally:
        operator.shutdown()
    assert db.get_unit_status_counts(run_id) == {"completed": 20}
    assert len(db.find_assignments()) == 20
    results = DataBrowser(db).load_results(task_run_id=run_id)
    assert sorted(r["data"]["inputs"]["text"] for r in results) == sorted(d["text"] for d in _data(20))
    assert db.get_task_run(run_id)["is_completed"] is True
    db.shutdown()


def test_ctrl_c_shuts_down_cleanly(tmp_path: Path, task_html: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'durable.db'}"
    proc = start_run_process(tmp_path, db_url, task_html, units=5)
    out, err = proc.interrupt()
    assert proc.process.returncode == 0, err
    assert "clean exit" in out
    db = MephistoDB(db_url)
    run = db.find_task_runs()[0]
    assert db.get_unit_status_counts(run.db_id) == {"expired": 5}
    assert run.is_completed is False  # resumable
    db.shutdown()


async def test_mock_architect_serves_without_a_socket(operator: Operator, task_html: Path, mephisto_db: MephistoDB) -> None:
    import httpx

    config = static_run_config(task_html)
    config["architect"] = {"_architect_type": "mock"}
    task_run_id = operator.launch_task_run(config, SharedStaticTaskState(static_task_data=_data(1)))
    live = operator.get_running_task_runs()[task_run_id]
    app = live.architect.app
    assert app is not None and live.url == "http://mock.invalid/"
    # the app runs on the operator's loop: call it there
    async def work() -> tuple[int, dict[str, Any]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mock") as client:
            registration = {"worker_name": "w", "assignment_id": "a", "provider_type": "mock"}
            agent = (await client.post("/request_agent", json={"provider_data": registration})).json()["data"]
            done = await client.post("/submit_task", json={"USED_AGENT_ID": agent["agent_id"], "final_data": {"x": 1}})
            return done.status_code, agent

    status, agent = asyncio.run_coroutine_threadsafe(work(), operator._loop).result(10)
    assert status == 200 and agent["init_task_data"] == {"text": "item-0"}
    assert live.done_sync.wait(10)
    assert mephisto_db.get_unit_status_counts(task_run_id) == {"completed": 1}


def test_live_run_freezes_the_launch_heap_and_releases_it_at_shutdown(task_html: Path, tmp_path: Path) -> None:
    import gc

    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    try:
        op = Operator(MephistoDB(f"sqlite:///{tmp_path / 'gc.db'}"))
        op.launch_task_run(static_run_config(task_html), SharedStaticTaskState(static_task_data=_data(2)))
        assert gc.get_freeze_count() > 0  # the long-lived heap is out of the collector's way
        assert gc.get_threshold()[0] > 700
        op.shutdown()
        assert gc.get_freeze_count() == 0
    finally:
        gc.set_threshold(*saved)
        gc.unfreeze()
