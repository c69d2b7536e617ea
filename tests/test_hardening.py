"""What a worker was told is saved stays saved, and no worker acts for another: a live run
(operator, local server, mock provider, SQLite file) driven by simulated workers that
race, retry, reload and forge requests."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState
from mephisto.db import MephistoDB
from mephisto.operations.operator import Operator
from mephisto.testing.fixtures import static_run_config
from mephisto.testing.worker import SimulatedWorker, SimulatedWorkerError


def _data(n: int) -> list[dict[str, str]]:
    return [{"text": f"item-{i}"} for i in range(n)]


def _snapshot(db: MephistoDB) -> Any:
    """Every agent, onboarding agent and unit as stored (to see that nothing changed)."""
    return (
        sorted((a.db_id, a.db_status, json.dumps(a._row["state"], sort_keys=True))
               for a in db.find_agents()),
        sorted((a.db_id, a.db_status) for a in db.find_onboarding_agents()),
        sorted((u.db_id, u.db_status) for u in db.find_units()),
    )


# -- 1. acknowledged metadata survives the submit ------------------------------------------


async def test_metadata_sent_before_the_submit_is_kept(
    launch_static_run: Any, mephisto_db: MephistoDB
) -> None:
    run = launch_static_run(_data(1))
    async with SimulatedWorker(run.url, "w1") as worker:
        await worker.request_agent()
        await worker.submit_metadata({"feedback": {"type": "feedback", "text": "clear task"}})
        await worker.submit({"answer": 42})
        await worker.submit_metadata({"after": {"type": "after", "n": 1}})
    (agent,) = mephisto_db.find_agents()
    state = agent._row["state"]
    assert state["outputs"] == {"answer": 42}
    assert state["metadata"] == {"feedback": {"type": "feedback", "text": "clear task"},
                                 "after": {"type": "after", "n": 1}}
    assert state["inputs"] == {"text": "item-0"}


async def test_metadata_sent_before_a_restart_is_kept_by_the_submit_after_it(
    tmp_path: Path, task_html: Path
) -> None:
    db = MephistoDB(f"sqlite:///{tmp_path / 'meta.db'}")
    config = static_run_config(task_html, task_name="meta", resume_incomplete_run=True)
    first = Operator(db)
    try:
        run_id = first.launch_task_run(config, SharedStaticTaskState(static_task_data=_data(2)))
        worker = SimulatedWorker(first.get_running_task_runs()[run_id].url, "w1", "hit-1")
        async with worker:
            await worker.request_agent()
            await worker.submit_metadata({"note": {"type": "note", "text": "before"}})
    finally:
        first.shutdown()  # Ctrl-C: the agent keeps its unit
    second = Operator(db)
    try:
        second.launch_task_run(config, SharedStaticTaskState(static_task_data=_data(2)))
        back = SimulatedWorker(second.get_running_task_runs()[run_id].url, "w1", "hit-1")
        back.agent_id = worker.agent_id
        async with back:
            await back.submit({"answer": "after"})
    finally:
        second.shutdown()
    (agent,) = [a for a in db.find_agents() if a.db_id == worker.agent_id]
    assert agent._row["state"]["outputs"] == {"answer": "after"}
    assert agent._row["state"]["metadata"] == {"note": {"type": "note", "text": "before"}}
    db.shutdown()


# -- 2. onboarding cannot be raced past --------------------------------------------------------


def _onboarding_run(launch_static_run: Any, task_html: Path, units: int = 3) -> Any:
    onboarding_html = task_html.with_name("onboarding.html")
    onboarding_html.write_text('<input name="answer"><button type="submit">Go</button>')
    state = SharedStaticTaskState(
        validate_onboarding=lambda data: data["outputs"].get("answer") == "4",
        onboarding_data={"question": "2+2"},
    )
    return launch_static_run(
        _data(units), shared_state=state,
        blueprint__onboarding_qualification="race-onboarded",
        blueprint__onboarding_source=str(onboarding_html),
    )


@pytest.mark.parametrize("same_assignment", [True, False])
async def test_parallel_requests_of_a_new_worker_get_one_onboarding_agent(
    launch_static_run: Any, task_html: Path, mephisto_db: MephistoDB, same_assignment: bool
) -> None:
    run = _onboarding_run(launch_static_run, task_html)
    tabs = [SimulatedWorker(run.url, "racer", "hit-1" if same_assignment else f"hit-{i}")
            for i in range(20)]
    try:
        answers = await asyncio.gather(*(tab.request_agent() for tab in tabs))
        ids = {a["agent_id"] for a in answers}
        assert len(ids) == 1 and ids.pop().startswith("onboarding")
        assert len(mephisto_db.find_onboarding_agents()) == 1
        # failing it ends onboarding for this worker: no tab gets a second chance
        failed = await tabs[0].submit_onboarding({"answer": "5"})
        assert failed["agent_id"] is None
        for tab in tabs[1:4]:
            with pytest.raises(SimulatedWorkerError) as info:
                await tab.submit_onboarding({"answer": "4"})  # the same, already-failed agent
            assert info.value.status == 409
        again = await asyncio.gather(*(tab.request_agent() for tab in tabs))
        assert {a["agent_id"] for a in again} == {None}
    finally:
        for tab in tabs:
            await tab.close()
    assert len(mephisto_db.find_onboarding_agents()) == 1
    assert mephisto_db.find_agents() == []
    (worker,) = mephisto_db.find_workers()
    assert worker.get_granted_qualifications() == {"race-onboarded": 0}


async def test_a_failed_onboarding_stands_until_a_requester_clears_it(
    launch_static_run: Any, task_html: Path, mephisto_db: MephistoDB
) -> None:
    run = _onboarding_run(launch_static_run, task_html)
    async with SimulatedWorker(run.url, "w1", "hit-1") as tab:
        assert (await tab.request_agent())["agent_id"].startswith("onboarding")
        # meanwhile the worker failed this task's onboarding elsewhere (another run)
        qid = mephisto_db.make_qualification("race-onboarded")
        worker_id = mephisto_db.find_workers(worker_name="w1")[0].db_id
        mephisto_db.grant_qualification(qid, worker_id, 0)
        answer = await tab.submit_onboarding({"answer": "4"})  # right, but too late
        assert answer["agent_id"] is None and answer["failure_reason"]
    assert mephisto_db.get_granted_qualification(qid, worker_id)["value"] == 0
    assert mephisto_db.find_agents() == []


# -- 3. one worker, one provider assignment: one agent ------------------------------------------


async def test_parallel_requests_for_one_assignment_get_one_agent(
    launch_static_run: Any, mephisto_db: MephistoDB
) -> None:
    run = launch_static_run(_data(40), allowed_concurrent=1)
    tabs = [SimulatedWorker(run.url, "w1", "hit-1") for _ in range(30)]
    try:
        answers = await asyncio.gather(*(tab.request_agent() for tab in tabs))
    finally:
        for tab in tabs:
            await tab.close()
    ids = {a["agent_id"] for a in answers}
    assert len(ids) == 1 and None not in ids
    assert len(mephisto_db.find_agents()) == 1
    assert run.unit_statuses() == {"assigned": 1, "launched": 39}
    # a reload with allowed_concurrent=1 gets the agent back, not a refusal
    async with SimulatedWorker(run.url, "w1", "hit-1") as reload:
        assert (await reload.request_agent())["agent_id"] == ids.pop()
        await reload.submit({"answer": 1})
    async with SimulatedWorker(run.url, "w1", "hit-2") as next_hit:
        assert (await next_hit.request_agent())["agent_id"] is not None


# -- 5. submits are idempotent, also across a restart ----------------------------------------


async def test_the_same_submit_again_is_answered_and_changes_nothing(
    launch_static_run: Any, mephisto_db: MephistoDB
) -> None:
    run = launch_static_run(_data(2))
    async with SimulatedWorker(run.url, "w1") as worker:
        await worker.request_agent()
        answers = await asyncio.gather(*(worker.submit({"answer": 1}) for _ in range(20)))
        assert answers == [{"status": "Submitted!"}] * 20
        stored = _snapshot(mephisto_db)
        assert await worker.submit({"answer": 1}) == {"status": "Submitted!"}
        with pytest.raises(SimulatedWorkerError) as info:
            await worker.submit({"answer": 2})
        assert info.value.status == 409
    assert _snapshot(mephisto_db) == stored
    assert run.unit_statuses() == {"completed": 1, "launched": 1}


async def test_parallel_submits_with_different_data_store_exactly_one(
    launch_static_run: Any, mephisto_db: MephistoDB
) -> None:
    run = launch_static_run(_data(1))
    async with SimulatedWorker(run.url, "w1") as worker:
        await worker.request_agent()
        results = await asyncio.gather(
            *(worker.submit({"answer": i}) for i in range(10)), return_exceptions=True)
    accepted = [i for i, r in enumerate(results) if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, SimulatedWorkerError)]
    assert len(accepted) == 1 and len(refused) == 9
    assert {r.status for r in refused} == {409}
    (agent,) = mephisto_db.find_agents()
    assert agent._row["state"]["outputs"] == {"answer": accepted[0]}


async def test_a_submit_retried_after_a_restart_is_answered(
    tmp_path: Path, task_html: Path
) -> None:
    db = MephistoDB(f"sqlite:///{tmp_path / 'restart.db'}")
    config = static_run_config(task_html, task_name="restart", resume_incomplete_run=True)
    first = Operator(db)
    try:
        run_id = first.launch_task_run(config, SharedStaticTaskState(static_task_data=_data(3)))
        url = first.get_running_task_runs()[run_id].url
        worker = SimulatedWorker(url, "w1", "hit-1")
        async with worker:
            await worker.request_agent()
            await worker.submit({"answer": "kept"})
    finally:
        first.shutdown()
    stored = _snapshot(db)
    second = Operator(db)
    try:
        second.launch_task_run(config, SharedStaticTaskState(static_task_data=_data(3)))
        url = second.get_running_task_runs()[run_id].url
        retry = SimulatedWorker(url, "w1", "hit-1")
        retry.agent_id = worker.agent_id
        async with retry:
            assert await retry.submit({"answer": "kept"}) == {"status": "Submitted!"}
            with pytest.raises(SimulatedWorkerError) as info:
                await retry.submit({"answer": "changed"})
            assert info.value.status == 409
            retry.agent_id = "no-such-agent-at-all-000"
            with pytest.raises(SimulatedWorkerError) as info:
                await retry.submit({"answer": "kept"})
            assert info.value.status == 404
        thief = SimulatedWorker(url, "w2", "hit-9")
        thief.agent_id = worker.agent_id
        async with thief:
            with pytest.raises(SimulatedWorkerError) as info:
                await thief.submit({"answer": "kept"})
            assert info.value.status == 403
    finally:
        second.shutdown()
    # resuming expired and relaunched the open units; the stored submission is untouched
    assert [a for a in _snapshot(db)[0]] == stored[0]
    db.shutdown()


# -- 6. the agent is bound to its worker -------------------------------------------------------


async def test_another_workers_agent_is_refused_with_nothing_stored(
    launch_static_run: Any, mephisto_db: MephistoDB
) -> None:
    run = launch_static_run(_data(2))
    async with SimulatedWorker(run.url, "owner", "hit-1") as owner, \
            SimulatedWorker(run.url, "thief", "hit-2") as thief:
        await owner.request_agent()
        before = _snapshot(mephisto_db)
        thief.agent_id = owner.agent_id
        for action in (thief.submit({"stolen": 1}), thief.submit_metadata({"x": {"type": "x"}}),
                       thief.submit_multipart({"stolen": 1}, {"f": ("f.txt", b"data")})):
            with pytest.raises(SimulatedWorkerError) as info:
                await action
            assert info.value.status == 403 and "another worker" in (info.value.error or "")
        await thief.connect()
        assert await thief.wait_closed() == 4403
        assert _snapshot(mephisto_db) == before
        # the owner still can
        await owner.connect()
        await owner.wait_for_packet("update_status")
        await owner.submit({"mine": 1})
    forged = SimulatedWorker(run.url, "thief", "hit-3")
    forged.agent_registration = lambda: {"worker_name": "owner", "assignment_id": "hit-3"}  # type: ignore[method-assign]
    async with forged:
        with pytest.raises(SimulatedWorkerError) as info:
            await forged.request_agent()
        assert info.value.status == 403
    assert len(mephisto_db.find_agents()) == 1


# -- 9. uploads: the agent first, files streamed to disk ----------------------------------------


async def test_uploads_for_a_bad_agent_leave_nothing(launch_static_run: Any) -> None:
    from mephisto.utils.dirs import get_run_dir

    run = launch_static_run(_data(1))
    run_dir = get_run_dir(run.task_run_id)
    async with SimulatedWorker(run.url, "w1") as worker:
        worker.agent_id = "unknown-agent-id-0000000"
        with pytest.raises(SimulatedWorkerError) as info:
            await worker.submit_multipart({"a": 1}, {"f": ("big.bin", b"\0" * 2_000_000)})
        assert info.value.status == 404
        await worker.request_agent()
        long_name = "x" * 300 + ".txt"
        await worker.submit_multipart({"a": 1}, {"f": (long_name, b"kept")})
    assert list((run_dir / ".uploads").iterdir()) == []
    (folder,) = [p for p in run_dir.iterdir() if p.name not in (".uploads", "metrics_token", "live.json")]
    (saved,) = list(folder.iterdir())
    assert saved.read_bytes() == b"kept" and len(saved.name) <= 110


# -- 10. /log_error cannot flood the log or memory --------------------------------------------


async def test_log_error_is_bounded_and_cannot_forge_log_lines(
    launch_static_run: Any, caplog: pytest.LogCaptureFixture
) -> None:
    run = launch_static_run(_data(1))
    handler = run.live.client_io
    with caplog.at_level(logging.WARNING, logger="mephisto.operations.client_io_handler"):
        async with aiohttp.ClientSession() as session:
            for i in range(100):
                body = {"USED_AGENT_ID": f"fake-{i}\nERROR forged line", "error_data": "x\ny"}
                async with session.post(run.url + "log_error", json=body) as response:
                    assert response.status == 200
    records = [r for r in caplog.records if "browser error" in r.getMessage()]
    assert 0 < len(records) <= 30
    assert all("\n" not in r.getMessage() for r in records)
    assert handler._errors_logged == {}
