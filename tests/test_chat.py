"""Several workers live in one assignment (concurrent `TaskRunner`s, the `chat`
blueprint) with simulated workers over real sockets: the waiting room, messages through
the runner, a partner who leaves, a reconnect, the waiting-room timeout."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from waits import until

from mephisto.abstractions.blueprints.chat import SharedChatTaskState
from mephisto.db.database import MephistoDB
from mephisto.errors import ConfigError
from mephisto.operations.operator import Operator
from mephisto.testing.fixtures import static_run_config
from mephisto.testing.worker import SimulatedWorker


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    path = tmp_path / "bundle.js"
    path.write_text("document.getElementById('app').textContent = 'chat';\n")
    return path


def _launch(operator: Operator, bundle: Path, topics: int = 1, **task: Any) -> Any:
    config = static_run_config(bundle, blueprint_type="chat", **task)
    state = SharedChatTaskState(static_task_data=[{"topic": f"topic {i}"} for i in range(topics)])
    run_id = operator.launch_task_run(config, state)
    return operator.get_running_task_runs()[run_id]


def _statuses(worker: SimulatedWorker) -> list[str]:
    return [p["data"]["status"] for p in worker.received if p["packet_type"] == "update_status"]


async def _message(worker: SimulatedWorker, text: str) -> dict[str, Any]:
    packet = await worker.wait_for_packet(
        "client_bound_live_update",
        predicate=lambda p: p["data"].get("kind") == "message" and p["data"]["text"] == text)
    return dict(packet["data"])


async def test_two_workers_wait_for_each_other_then_talk(
    operator: Operator, bundle: Path, mephisto_db: MephistoDB
) -> None:
    run = _launch(operator, bundle)
    async with SimulatedWorker(run.url, "ann") as ann, SimulatedWorker(run.url, "bo") as bo:
        assert (await ann.request_agent())["init_task_data"] == {"topic": "topic 0"}
        await ann.connect()
        await ann.wait_for_packet("update_status",
                                  predicate=lambda p: p["data"]["status"] == "waiting")
        await bo.request_agent()
        await bo.connect()
        for worker in (ann, bo):
            await worker.wait_for_packet("update_status",
                                         predicate=lambda p: p["data"]["status"] == "in task")
            joined = await worker.wait_for_packet(
                "client_bound_live_update", predicate=lambda p: p["data"].get("kind") == "joined")
            assert joined["data"]["workers"] == ["Worker 1", "Worker 2"]
        await ann.send_live_update({"text": "hello there"})
        seen_by_bo = await _message(bo, "hello there")
        assert seen_by_bo["sender"] == "Worker 1" and seen_by_bo["mine"] is False
        assert (await _message(ann, "hello there"))["mine"] is True
        await bo.send_live_update({"text": "hi!"})
        assert (await _message(ann, "hi!"))["sender"] == "Worker 2"
        await ann.submit({"rating": 5})
        await bo.submit({"rating": 4})
        statuses = _statuses(ann)  # (a status may be told twice: on connect and on change)
        assert statuses[0] == "waiting" and "in task" in statuses
    assert await asyncio.to_thread(run.done_sync.wait, 10)
    assert mephisto_db.get_unit_status_counts(run.task_run_id) == {"completed": 2}
    from mephisto.data_model.agent import Agent

    seen = Agent(mephisto_db, ann.agent_id).state.get_parsed_data()["messages"]
    assert [(m["sender"], m["text"]) for m in seen] == [("Worker 1", "hello there"),
                                                        ("Worker 2", "hi!")]


async def test_a_partner_who_leaves_ends_the_chat_for_the_other(
    operator: Operator, bundle: Path, mephisto_db: MephistoDB
) -> None:
    run = _launch(operator, bundle)
    run.live_sessions.disconnect_grace = 0.3
    async with SimulatedWorker(run.url, "stays") as stays, \
            SimulatedWorker(run.url, "goes") as goes:
        for worker in (stays, goes):
            await worker.request_agent()
            await worker.connect()
        await stays.wait_for_packet("update_status",
                                    predicate=lambda p: p["data"]["status"] == "in task")
        await goes.send_live_update({"text": "brb"})
        await _message(stays, "brb")
        await goes.disconnect()
        packet = await stays.wait_for_packet(
            "update_status", timeout=5,
            predicate=lambda p: p["data"]["status"] == "partner disconnect")
        assert packet
    assert mephisto_db.get_agent(goes.agent_id)["status"] == "disconnect"
    assert mephisto_db.get_agent(stays.agent_id)["status"] == "partner disconnect"
    await until(lambda: mephisto_db.get_unit_status_counts(run.task_run_id) == {"launched": 2})
    assert run.live_sessions.rooms == {}


async def test_a_reconnect_within_the_grace_period_keeps_the_chat(
    operator: Operator, bundle: Path
) -> None:
    run = _launch(operator, bundle)
    run.live_sessions.disconnect_grace = 5.0
    async with SimulatedWorker(run.url, "a") as a, SimulatedWorker(run.url, "b") as b:
        agent_b = None
        for worker in (a, b):
            agent_b = (await worker.request_agent())["agent_id"]
            await worker.connect()
        await a.wait_for_packet("update_status",
                                predicate=lambda p: p["data"]["status"] == "in task")
        await b.disconnect()
        await a.send_live_update({"text": "are you there?"})  # sent while b is away
        await asyncio.sleep(0.3)
        assert (await b.request_agent())["agent_id"] == agent_b  # the reload
        await b.connect()
        assert (await _message(b, "are you there?"))["sender"] == "Worker 1"
        await b.send_live_update({"text": "yes"})
        assert (await _message(a, "yes"))["mine"] is False


async def test_nobody_joining_expires_the_waiting_worker(
    operator: Operator, bundle: Path, mephisto_db: MephistoDB
) -> None:
    run = _launch(operator, bundle)
    run.live_sessions.waiting_room_timeout = 0.3
    async with SimulatedWorker(run.url, "alone") as alone:
        await alone.request_agent()
        await alone.connect()
        await alone.wait_for_packet("update_status", timeout=5,
                                    predicate=lambda p: p["data"]["status"] == "expired")
    assert mephisto_db.get_agent(alone.agent_id)["status"] == "expired"
    await until(lambda: run.live_sessions.rooms == {})
    async with SimulatedWorker(run.url, "later") as later:  # the unit is offered again
        assert (await later.request_agent())["agent_id"] is not None


async def test_pairs_form_per_assignment(
    operator: Operator, bundle: Path, mephisto_db: MephistoDB
) -> None:
    run = _launch(operator, bundle, topics=2)
    workers = [SimulatedWorker(run.url, f"w{i}") for i in range(4)]
    try:
        topics = []
        for worker in workers:
            topics.append((await worker.request_agent())["init_task_data"]["topic"])
            await worker.connect()
        assert topics == ["topic 0", "topic 0", "topic 1", "topic 1"]
        for worker in workers:
            await worker.wait_for_packet("update_status",
                                         predicate=lambda p: p["data"]["status"] == "in task")
        await workers[2].send_live_update({"text": "second pair"})
        await _message(workers[3], "second pair")
        await asyncio.sleep(0.2)
        for first_pair in workers[:2]:
            assert not any(p["data"].get("text") == "second pair" for p in first_pair.received
                           if p["packet_type"] == "client_bound_live_update")
        for worker in workers:
            await worker.submit({"done": True})
    finally:
        for worker in workers:
            await worker.close()
    assert await asyncio.to_thread(run.done_sync.wait, 10)
    assert mephisto_db.get_unit_status_counts(run.task_run_id) == {"completed": 4}


def test_a_chat_needs_two_workers(operator: Operator, bundle: Path) -> None:
    config = static_run_config(bundle, blueprint_type="chat", blueprint__units_per_assignment=1)
    with pytest.raises(ConfigError, match="at least two workers"):
        operator.launch_task_run(config, SharedChatTaskState(static_task_data=[{"t": 1}]))


async def test_a_worker_leaving_after_the_other_submitted_expires_the_unit(
    operator: Operator, bundle: Path, mephisto_db: MephistoDB
) -> None:
    """Half the assignment is done: the leaver's unit cannot be finished by a new pair,
    so it is expired instead of stranding the next worker in a room of one."""
    run = _launch(operator, bundle)
    run.live_sessions.disconnect_grace = 0.3
    async with SimulatedWorker(run.url, "ann") as ann, SimulatedWorker(run.url, "ben") as ben:
        for worker in (ann, ben):
            await worker.request_agent()
            await worker.connect()
        await ann.wait_for_packet("update_status",
                                  predicate=lambda p: p["data"]["status"] == "in task")
        await ann.send_live_update({"text": "bye"})
        await _message(ben, "bye")
        await ann.submit({"done": True})
        await ben.disconnect()
        assert await asyncio.to_thread(run.done_sync.wait, 10)  # nothing left to do
    assert mephisto_db.get_unit_status_counts(run.task_run_id) == {"completed": 1,
                                                                   "expired": 1}
    assert mephisto_db.get_agent(ben.agent_id)["status"] == "disconnect"


async def test_a_failing_world_expires_its_workers(
    operator: Operator, bundle: Path, mephisto_db: MephistoDB
) -> None:
    def broken(agents: Any, assignment: Any) -> Any:
        raise RuntimeError("the bot did not load")

    config = static_run_config(bundle, blueprint_type="chat")
    state = SharedChatTaskState(static_task_data=[{"topic": "t"}], world_factory=broken)
    run_id = operator.launch_task_run(config, state)
    run = operator.get_running_task_runs()[run_id]
    async with SimulatedWorker(run.url, "a") as a, SimulatedWorker(run.url, "b") as b:
        for worker in (a, b):
            await worker.request_agent()
            await worker.connect()
        for worker in (a, b):
            await worker.wait_for_packet("update_status", timeout=5,
                                         predicate=lambda p: p["data"]["status"] == "expired")
    assert await asyncio.to_thread(run.done_sync.wait, 10)
    assert mephisto_db.get_unit_status_counts(run.task_run_id) == {"expired": 2}
