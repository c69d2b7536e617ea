"""Live tasks through the `TaskRunner` contract, with the `remote_procedure` blueprint and
simulated workers over real sockets: call and answer, errors, the record of every
packet, and the runner's end on timeout, disconnect and shutdown."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from waits import until

from mephisto.abstractions._subcomponents.task_runner import TaskRunner
from mephisto.abstractions.blueprints.remote_procedure import (
    RemoteProcedureAgentState,
    RemoteProcedureTaskRunner,
    SharedRemoteProcedureTaskState,
    answer_call,
)
from mephisto.db.database import MephistoDB
from mephisto.errors import ConfigError
from mephisto.operations.operator import Operator
from mephisto.testing.fixtures import static_run_config
from mephisto.testing.worker import SimulatedWorker

ENDED: list[tuple[str, str]] = []  # (unit id, how run_unit ended), from the runner threads


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    path = tmp_path / "bundle.js"
    path.write_text("document.getElementById('app').textContent = 'remote procedures';\n")
    return path


def _slow_echo(request_id: str, args: Any, agent: Any) -> Any:
    time.sleep(float(args.get("wait", 0)))
    return {"echo": args.get("text")}


def _fail(request_id: str, args: Any, agent: Any) -> Any:
    raise ValueError("the model is not loaded")


REGISTRY: dict[str, Callable[[str, Any, Any], Any]] = {
    "add": lambda request_id, args, agent: {"sum": args["a"] + args["b"]},
    "echo": _slow_echo,
    "fail": _fail,
}


class RecordingRunner(TaskRunner):
    """A runner with a thread beside each unit (`run_unit`), answering the calls as the
    remote_procedure runner does, and noting how each session ended."""

    def run_unit(self, unit: Any, agent: Any) -> None:
        try:
            while not agent.did_submit.is_set():
                request = agent.act(timeout=0.2)
                if request is not None:
                    agent.observe(answer_call(self.shared_state.function_registry,
                                              request, agent))
            ENDED.append((unit.db_id, "submitted"))
        except Exception as exc:
            ENDED.append((unit.db_id, type(exc).__name__))
            raise

    def cleanup_unit(self, unit: Any) -> None:
        ENDED.append((unit.db_id, "cleanup"))


class CleanupRecordingRunner(RemoteProcedureTaskRunner):
    """The remote_procedure runner (calls in the run's pool), noting its cleanups."""

    def cleanup_unit(self, unit: Any) -> None:
        ENDED.append((unit.db_id, "cleanup"))


def _launch(operator: Operator, bundle: Path, n: int = 1, runner: type = RecordingRunner,
            **task: Any) -> Any:
    from mephisto.abstractions.blueprints.remote_procedure import RemoteProcedureBlueprint

    RemoteProcedureBlueprint.TaskRunnerClass = runner
    ENDED.clear()
    config = static_run_config(bundle, blueprint_type="remote_procedure", **task)
    state = SharedRemoteProcedureTaskState(
        function_registry=dict(REGISTRY),
        static_task_data=[{"text": f"item {i}"} for i in range(n)])
    run_id = operator.launch_task_run(config, state)
    return operator.get_running_task_runs()[run_id]


@pytest.fixture(autouse=True)
def _restore_runner() -> Any:
    from mephisto.abstractions.blueprints.remote_procedure import RemoteProcedureBlueprint

    yield
    RemoteProcedureBlueprint.TaskRunnerClass = RemoteProcedureTaskRunner


async def _call(worker: SimulatedWorker, target: str, args: Any, raw: Any = None) -> dict[str, Any]:
    """Call a remote procedure as useMephistoRemoteProcedureTask does; its answer."""
    request_id = f"req-{time.monotonic_ns()}"
    await worker.send_live_update({"request_id": request_id, "target": target,
                                   "args": raw if raw is not None else json.dumps(args)})
    packet = await worker.wait_for_packet(
        "client_bound_live_update", predicate=lambda p: p["data"].get("handles") == request_id)
    return dict(packet["data"])


RUNNERS = pytest.mark.parametrize("runner", [CleanupRecordingRunner, RecordingRunner],
                                  ids=["calls-in-a-pool", "thread-per-agent"])


@RUNNERS
async def test_calls_are_answered_and_recorded(
    operator: Operator, bundle: Path, mephisto_db: MephistoDB, runner: type
) -> None:
    run = _launch(operator, bundle, runner=runner)
    async with SimulatedWorker(run.url, "w1") as worker:
        assert (await worker.request_agent())["init_task_data"] == {"text": "item 0"}
        await worker.connect()
        answer = await _call(worker, "add", {"a": 2, "b": 40})
        assert json.loads(answer["response"]) == {"sum": 42}
        answers = await asyncio.gather(*(_call(worker, "echo", {"text": f"t{i}"})
                                         for i in range(5)))
        assert sorted(json.loads(a["response"])["echo"] for a in answers) == [
            f"t{i}" for i in range(5)]
        await worker.submit({"final": "yes"})
    await until(lambda: ("1", "cleanup") in ENDED)
    threaded = runner is RecordingRunner
    assert ENDED == ([("1", "submitted")] if threaded else []) + [("1", "cleanup")]
    stored = mephisto_db.get_agent(worker.agent_id)["state"]
    assert stored["outputs"] == {"final": "yes"}
    assert len(stored["live_updates"]) == 12  # six calls, six answers, with their times
    from mephisto.data_model.agent import Agent

    state = Agent(mephisto_db, worker.agent_id).state
    assert isinstance(state, RemoteProcedureAgentState)
    parsed = state.get_parsed_data()
    (first, *_rest) = parsed["requests"]
    assert first["target"] == "add" and json.loads(first["answer"]["response"]) == {"sum": 42}


@pytest.mark.parametrize(("target", "raw", "words"), [
    ("nope", json.dumps({}), "no remote procedure named 'nope' (known: add, echo, fail)"),
    ("fail", json.dumps({}), "fail failed: ValueError: the model is not loaded"),
    ("add", "{not json", "the arguments are not JSON"),
    ("add", json.dumps({"a": 1}), "add failed: KeyError"),
])
async def test_errors_come_back_as_errors(
    operator: Operator, bundle: Path, target: str, raw: str, words: str
) -> None:
    run = _launch(operator, bundle, runner=CleanupRecordingRunner)
    async with SimulatedWorker(run.url, "w1") as worker:
        await worker.request_agent()
        await worker.connect()
        answer = await _call(worker, target, None, raw=raw)
        assert "response" not in answer and words in answer["error"]
        assert json.loads((await _call(worker, "add", {"a": 1, "b": 1}))["response"]) == {
            "sum": 2}  # the session goes on


@RUNNERS
async def test_answers_wait_for_a_page_that_reconnects(
    operator: Operator, bundle: Path, runner: type
) -> None:
    run = _launch(operator, bundle, runner=runner)
    run.live_sessions.disconnect_grace = 5.0
    async with SimulatedWorker(run.url, "w1") as worker:
        agent_id = (await worker.request_agent())["agent_id"]
        await worker.connect()
        await worker.send_live_update({"request_id": "slow", "target": "echo",
                                       "args": json.dumps({"text": "late", "wait": 0.4})})
        await worker.disconnect()
        await asyncio.sleep(0.8)  # answered while the page was away
        again = await worker.request_agent()  # a reload gets the same agent back
        assert again["agent_id"] == agent_id
        await worker.connect()
        packet = await worker.wait_for_packet(
            "client_bound_live_update", predicate=lambda p: p["data"].get("handles") == "slow")
        assert json.loads(packet["data"]["response"]) == {"echo": "late"}


@RUNNERS
async def test_a_page_gone_too_long_ends_the_session_and_frees_the_unit(
    operator: Operator, bundle: Path, mephisto_db: MephistoDB, runner: type
) -> None:
    run = _launch(operator, bundle, runner=runner)
    run.live_sessions.disconnect_grace = 0.3
    async with SimulatedWorker(run.url, "w1") as worker:
        agent_id = (await worker.request_agent())["agent_id"]
        await worker.connect()
        await _call(worker, "add", {"a": 1, "b": 2})
        await worker.disconnect()
        await until(lambda: ("1", "cleanup") in ENDED)
    threaded = runner is RecordingRunner
    assert ENDED == ([("1", "AgentDisconnectedError")] if threaded else []) + [("1", "cleanup")]
    assert mephisto_db.get_agent(agent_id)["status"] == "disconnect"
    await until(lambda: len(mephisto_db.get_agent(agent_id)["state"].get("live_updates")
                             or []) == 2)
    async with SimulatedWorker(run.url, "w2") as other:  # the unit went back to others
        assert (await other.request_agent())["init_task_data"] == {"text": "item 0"}


async def test_a_timed_out_agent_ends_its_session(operator: Operator, bundle: Path) -> None:
    run = _launch(operator, bundle, assignment_duration_in_seconds=1)
    async with SimulatedWorker(run.url, "w1") as worker:
        await worker.request_agent()
        await worker.connect()
        await until(lambda: ("1", "cleanup") in ENDED, timeout=10)
    assert ENDED == [("1", "AgentTimeoutError"), ("1", "cleanup")]


@RUNNERS
async def test_shutdown_ends_every_session(operator: Operator, bundle: Path, runner: type) -> None:
    run = _launch(operator, bundle, n=3, runner=runner)
    workers = [SimulatedWorker(run.url, f"w{i}") for i in range(3)]
    for worker in workers:
        await worker.request_agent()
    await until(lambda: len(run.live_sessions.sessions) == 3)
    threads = [s.thread for s in run.live_sessions.sessions.values()]
    await asyncio.to_thread(operator.shutdown)
    for worker in workers:
        await worker.close()
    if runner is RecordingRunner:
        assert all(t is not None and not t.is_alive() for t in threads)
        assert sorted(how for _u, how in ENDED) == ["AgentShutdownError"] * 3 + ["cleanup"] * 3
    else:  # no thread per agent; each unit cleaned up once
        assert threads == [None] * 3 and sorted(ENDED) == [(u, "cleanup") for u in "123"]


def test_a_remote_procedure_task_needs_its_functions(operator: Operator, bundle: Path) -> None:
    config = static_run_config(bundle, blueprint_type="remote_procedure")
    for registry, words in (({}, "function_registry"), ({"f": 3}, "must be a function")):
        state = SharedRemoteProcedureTaskState(function_registry=registry,  # type: ignore[arg-type]
                                               static_task_data=[{"x": 1}])
        with pytest.raises(ConfigError, match=words):
            operator.launch_task_run(config, state)


@RUNNERS
def test_the_runner_thread_is_not_the_event_loop(
    operator: Operator, bundle: Path, runner: type
) -> None:
    seen: list[str] = []

    def where(request_id: str, args: Any, agent: Any) -> Any:
        seen.append(threading.current_thread().name)
        return {}

    async def go() -> None:
        run = _launch(operator, bundle, runner=runner)
        run.blueprint.shared_state.function_registry["where"] = where
        async with SimulatedWorker(run.url, "w1") as worker:
            await worker.request_agent()
            await worker.connect()
            await _call(worker, "where", {})

    asyncio.run(go())
    prefix = "task-runner-" if runner is RecordingRunner else "task-calls"
    assert seen and seen[0].startswith(prefix)


async def test_a_resumed_live_run_keeps_what_was_submitted_and_serves_sessions_again(
    bundle: Path, tmp_path: Path
) -> None:
    """A live run whose process died (the first operator is left running, as a crashed
    one would be): resumed, the submitted unit is kept with its record, and an agent
    that was at work gets a new live session on the new server."""
    from mephisto.abstractions.blueprints.remote_procedure import RemoteProcedureBlueprint

    RemoteProcedureBlueprint.TaskRunnerClass = RemoteProcedureTaskRunner
    db = MephistoDB(f"sqlite:///{tmp_path / 'live.db'}")

    def config_and_state() -> tuple[dict[str, Any], SharedRemoteProcedureTaskState]:
        config = static_run_config(bundle, blueprint_type="remote_procedure",
                                   task_name="live-resume", resume_incomplete_run=True)
        return config, SharedRemoteProcedureTaskState(
            function_registry=dict(REGISTRY), static_task_data=[{"text": "a"}, {"text": "b"}])

    first, second = Operator(db), Operator(db)
    try:
        run_id = await asyncio.to_thread(first.launch_task_run, *config_and_state())
        url = first.get_running_task_runs()[run_id].url
        async with SimulatedWorker(url, "done") as done, SimulatedWorker(url, "busy") as busy:
            await done.request_agent()
            await done.connect()
            await _call(done, "add", {"a": 1, "b": 1})
            await done.submit({"final": "first"})
            busy_agent = (await busy.request_agent())["agent_id"]
            await busy.connect()
            await _call(busy, "add", {"a": 2, "b": 2})
        assert await asyncio.to_thread(second.launch_task_run, *config_and_state()) == run_id
        resumed = second.get_running_task_runs()[run_id]
        assert set(resumed.live_sessions.sessions) == {busy_agent}
        async with SimulatedWorker(resumed.url, "busy") as busy:
            assert (await busy.request_agent())["agent_id"] == busy_agent
            await busy.connect()
            assert json.loads((await _call(busy, "add", {"a": 3, "b": 4}))["response"]) == {
                "sum": 7}
            await busy.submit({"final": "second"})
        kept = db.get_agent(done.agent_id)["state"]
        assert kept["outputs"] == {"final": "first"} and len(kept["live_updates"]) == 2
        after = db.get_agent(busy_agent)["state"]
        assert after["outputs"] == {"final": "second"}
        assert [u["sender"] for u in after["live_updates"]] == ["worker", "mephisto"]
    finally:
        await asyncio.to_thread(second.shutdown)
        await asyncio.to_thread(first.shutdown)
        db.shutdown()


LIVE_RUN_SCRIPT = """
import sys
from mephisto.abstractions.blueprints.remote_procedure import SharedRemoteProcedureTaskState
from mephisto.db import MephistoDB
from mephisto.operations.operator import Operator
from mephisto.testing.fixtures import static_run_config

db_url, bundle = sys.argv[1], sys.argv[2]
operator = Operator(MephistoDB(db_url))
config = static_run_config(bundle, blueprint_type="remote_procedure",
                           task_name="live-durable", resume_incomplete_run=True)
state = SharedRemoteProcedureTaskState(
    function_registry={"add": lambda request_id, args, agent: {"sum": args["a"] + args["b"]}},
    static_task_data=[{"text": "a"}, {"text": "b"}])
run_id = operator.launch_task_run(config, state)
print(operator.get_running_task_runs()[run_id].url, flush=True)
operator.wait_for_runs_then_shutdown(skip_input=True)
"""


async def test_a_live_run_killed_with_sigkill_resumes(bundle: Path, tmp_path: Path) -> None:
    """kill -9 of the process serving a live run: the submitted unit is kept, the agent
    that was at work gets its unit and a live session back from the resumed run."""
    import subprocess
    import sys

    from mephisto.abstractions.blueprints.remote_procedure import RemoteProcedureBlueprint
    from mephisto.testing.faults import RunProcess

    RemoteProcedureBlueprint.TaskRunnerClass = RemoteProcedureTaskRunner
    db_url = f"sqlite:///{tmp_path / 'live-durable.db'}"
    script = tmp_path / "live_run.py"
    script.write_text(LIVE_RUN_SCRIPT)
    process = subprocess.Popen([sys.executable, str(script), db_url, str(bundle)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    assert url.startswith("http"), process.communicate(timeout=10)
    proc = RunProcess(process, url)
    try:
        async with SimulatedWorker(url, "done") as done, SimulatedWorker(url, "busy") as busy:
            await done.request_agent()
            await done.connect()
            assert json.loads((await _call(done, "add", {"a": 1, "b": 1}))["response"]) == {
                "sum": 2}
            await done.submit({"final": "first"})
            busy_agent = (await busy.request_agent())["agent_id"]
            await busy.connect()
            await _call(busy, "add", {"a": 2, "b": 2})
    finally:
        proc.kill()

    db = MephistoDB(db_url)
    operator = Operator(db)
    try:
        config = static_run_config(bundle, blueprint_type="remote_procedure",
                                   task_name="live-durable", resume_incomplete_run=True)
        state = SharedRemoteProcedureTaskState(
            function_registry=dict(REGISTRY), static_task_data=[{"text": "a"}, {"text": "b"}])
        run_id = await asyncio.to_thread(operator.launch_task_run, config, state)
        resumed = operator.get_running_task_runs()[run_id]
        async with SimulatedWorker(resumed.url, "busy") as busy:
            assert (await busy.request_agent())["agent_id"] == busy_agent
            await busy.connect()
            assert json.loads((await _call(busy, "add", {"a": 5, "b": 5}))["response"]) == {
                "sum": 10}
            await busy.submit({"final": "second"})
        assert await asyncio.to_thread(resumed.done_sync.wait, 10)
    finally:
        await asyncio.to_thread(operator.shutdown)
    assert db.get_unit_status_counts(run_id) == {"completed": 2}
    kept = db.get_agent(done.agent_id)["state"]
    assert kept["outputs"] == {"final": "first"} and len(kept["live_updates"]) == 2
    assert db.get_agent(busy_agent)["state"]["outputs"] == {"final": "second"}
    db.shutdown()
