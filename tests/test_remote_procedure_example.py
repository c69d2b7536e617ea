"""examples/remote_procedure_task end to end: its config, its run script as written (a
subprocess, real sockets, a real SQLite file, its webapp built by the real npm) with
simulated workers calling its Python function over the socket, and its page in real
Chromium: type, analyze, see Python's answer and an error, submit; the database holds
the submission and every request and answer.

The example's webapp is built once per session (`remote_example_bundle`, like
`react_example_bundle` of conftest.py). Simulated workers run their event loop in a
thread of their own (`run_in_thread`), so they work whatever the order of the tests: the
module's Playwright browser keeps an event loop marked as running in the main thread.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from example_helpers import built_bundle, example_config, load_module, run_in_thread

from mephisto.abstractions.blueprints.remote_procedure import (
    RemoteProcedureAgentState,
    SharedRemoteProcedureTaskState,
)
from mephisto.db import MephistoDB
from mephisto.operations.hydra_config import (
    check_run_config,
)
from mephisto.testing.fixtures import LaunchedRun
from mephisto.testing.scripts import running_script
from mephisto.testing.worker import SimulatedWorker
from mephisto.tools.data_browser import DataBrowser

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_DIR = REPO / "examples" / "remote_procedure_task"
EXAMPLE_BUNDLE = EXAMPLE_DIR / "webapp" / "build" / "bundle.js"
TASK_NAME = "remote-procedure-sentence-example"

RUN_TASK = load_module(EXAMPLE_DIR / "run_task.py", "remote_procedure_example_run_task")

@pytest.fixture(scope="session")
def remote_example_bundle(npm: str) -> Path:
    """examples/remote_procedure_task/webapp built once per session, where its users
    build it (npm install only when its node_modules is missing or stale); always
    rebuilt, as the mephisto-task it links from packages/ may have changed."""
    assert built_bundle(EXAMPLE_DIR) == EXAMPLE_BUNDLE
    return EXAMPLE_BUNDLE


# -- the function, the config ---------------------------------------------------------------


def test_the_function_answers_and_refuses() -> None:
    analyze = RUN_TASK.analyze_sentence
    assert analyze("r1", {"text": "A wonderful, sunny day!"}, None) == {
        "words": 4, "tone": "positive", "score": 2, "positive": ["sunny", "wonderful"],
        "negative": []}
    assert analyze("r2", {"text": "Cold and rainy, but fun."}, None)["tone"] == "negative"
    assert analyze("r3", {"text": "The bus is at noon."}, None)["tone"] == "neutral"
    with pytest.raises(ValueError, match="type a sentence first"):
        analyze("r4", {"text": "  ... "}, None)
    with pytest.raises(ValueError, match="under 60 words"):
        analyze("r5", {"text": "word " * 61}, None)


def test_example_config_composes_and_checks() -> None:
    cfg = example_config(EXAMPLE_DIR)
    check_run_config(cfg)
    assert cfg.mephisto.blueprint._blueprint_type == "remote_procedure"
    assert cfg.mephisto.architect._architect_type == "local"
    assert cfg.mephisto.provider._provider_type == "mock"
    assert cfg.mephisto.blueprint.task_source == str(EXAMPLE_BUNDLE)
    assert cfg.mephisto.task.task_name == TASK_NAME


# -- the run script, as written -----------------------------------------------------------


async def _call(worker: SimulatedWorker, target: str, args: Any) -> dict[str, Any]:
    """A call as useMephistoRemoteProcedureTask makes it; the answer's data."""
    request_id = f"{worker.worker_id}-{len(worker.received)}-{target}"
    await worker.send_live_update({"request_id": request_id, "target": target,
                                   "args": json.dumps(args)})
    packet = await worker.wait_for_packet(
        "client_bound_live_update", predicate=lambda p: p["data"].get("handles") == request_id)
    return dict(packet["data"])


async def _page_of(url: str) -> str:
    async with SimulatedWorker(url, "reader") as worker:
        return await worker.open_page()


async def _write_and_submit(url: str, name: str, sentence: str) -> str:
    async with SimulatedWorker(url, name) as worker:
        await worker.request_agent()
        assert worker.agent_id is not None, worker.failure_reason
        assert worker.init_data["prompt"].startswith("Describe")
        await worker.connect()
        refused = await _call(worker, "analyze_sentence", {"text": ""})
        assert refused["error"] == ("analyze_sentence failed: ValueError: type a sentence "
                                    "first") and "response" not in refused
        first = await _call(worker, "analyze_sentence", {"text": sentence.split(",")[0]})
        final = await _call(worker, "analyze_sentence", {"text": sentence})
        assert json.loads(first["response"])["words"] < json.loads(final["response"])["words"]
        await worker.submit({"text": sentence, "analyses": 3,
                             "last_analysis": json.loads(final["response"])})
        return worker.agent_id


def test_run_task_serves_the_function_and_completes(
    remote_example_bundle: Path, tmp_path: Path
) -> None:
    """run_task.py as written: it builds its webapp, launches; two simulated workers
    (one per prompt) each call analyze_sentence three times over the socket (one call
    refused) and submit; the script then ends by itself."""
    sentences = {"ann": "A lovely calm weekend, great fun with friends",
                 "bob": "Cold, rainy and a terrible wind all day"}
    with running_script(EXAMPLE_DIR / "run_task.py", cwd=tmp_path, timeout=180) as script:
        assert script.url is not None
        assert "<div id=\"app\"></div>" in run_in_thread(_page_of(script.url))

        async def work(url: str) -> list[str]:
            return list(await asyncio.gather(
                *(_write_and_submit(url, name, text) for name, text in sentences.items())))

        agent_ids = run_in_thread(work(script.url))
        assert script.wait() == 0, script.output
    db = MephistoDB()
    try:
        (run,) = db.find_task_runs()
        assert run.get_task().task_name == TASK_NAME
        assert db.get_unit_status_counts(run.db_id) == {"completed": 2}
        results = DataBrowser(db).load_results(task_run_id=run.db_id)
        outputs = {r["worker_name"]: r["data"]["outputs"] for r in results}
        assert {n: o["text"] for n, o in outputs.items()} == sentences
        assert outputs["ann"]["last_analysis"]["tone"] == "positive"
        assert outputs["bob"]["last_analysis"]["tone"] == "negative"
        for agent_id in agent_ids:
            updates = db.get_agent(agent_id)["state"]["live_updates"]
            assert [u["sender"] for u in updates] == ["worker", "mephisto"] * 3
    finally:
        db.shutdown()


# -- the page in real Chromium (keep last: the browser stays open to the module's end) ----


@pytest.mark.browser
def test_example_page_in_chromium(
    remote_example_bundle: Path, operator: Any, mephisto_db: Any, page: Any
) -> None:
    cfg = example_config(EXAMPLE_DIR, "mephisto.architect.port=0",
                         "mephisto.architect.hostname=127.0.0.1")
    state = SharedRemoteProcedureTaskState(
        static_task_data=[{"prompt": "Describe your last weekend in one sentence."}],
        function_registry=RUN_TASK.FUNCTIONS)
    run = LaunchedRun(operator, operator.launch_task_run(cfg.mephisto, state))

    page.goto(run.url)  # preview: no agent
    page.locator("#task-description").wait_for()
    assert mephisto_db.find_agents() == []

    page.goto(f"{run.url}?worker_id=chrome-worker&assignment_id=hit-1")
    assert page.locator("#prompt").inner_text() == "Describe your last weekend in one sentence."
    page.locator("#analyze").click()  # nothing typed: Python refuses, the page says why
    assert page.locator("#call-error").inner_text() == (
        "Could not analyze: analyze_sentence failed: ValueError: type a sentence first")

    page.locator("#sentence").fill("It was a wonderful sunny weekend")
    page.locator("#analyze").click()
    page.locator("#analysis").wait_for()
    assert page.locator("#analysis-tone").inner_text() == "positive"
    assert page.locator("#analysis-words").inner_text() == "6"
    assert page.locator("#call-error").count() == 0

    page.locator("#sentence").fill("It was a wonderful sunny weekend, but the drive home was awful and late")
    page.locator("#analyze").click()
    page.get_by_text("14 words").wait_for()  # the answer to the second call, live
    assert page.locator("#analysis-tone").inner_text() == "neutral"
    assert page.locator("#calls").inner_text() == "3"
    page.locator("#submit").click()
    page.locator("#submitted").wait_for()
    assert run.wait(10)

    (result,) = DataBrowser(mephisto_db).load_results(task_run_id=run.task_run_id)
    assert result["worker_name"] == "chrome-worker"
    outputs = result["data"]["outputs"]
    assert outputs["text"].endswith("awful and late") and outputs["analyses"] == 3
    assert outputs["last_analysis"]["words"] == 14
    (unit,) = mephisto_db.find_units(task_run_id=run.task_run_id)
    assert len(DataBrowser(mephisto_db).get_data_from_unit(unit)["data"]["requests"]) == 3

    (agent,) = mephisto_db.find_agents()
    state_of_agent = agent.state
    assert isinstance(state_of_agent, RemoteProcedureAgentState)
    requests = state_of_agent.get_parsed_data()["requests"]
    assert [json.loads(r["args"])["text"][:9] for r in requests] == ["", "It was a ", "It was a "]
    assert all(r["target"] == "analyze_sentence" for r in requests)
    assert requests[0]["answer"]["error"].endswith("type a sentence first")
    assert [json.loads(r["answer"]["response"])["tone"] for r in requests[1:]] == [
        "positive", "neutral"]
    recorded = mephisto_db.get_agent(agent.db_id)["state"]["live_updates"]
    assert [u["sender"] for u in recorded] == ["worker", "mephisto"] * 3
    assert all(isinstance(u["time"], float) for u in recorded)
    assert page.js_errors == []
