"""examples/chat_task end to end: its config, its run script as written (a subprocess,
real sockets, a real SQLite file, its webapp built by the real npm) with two simulated
workers per assignment chatting through the `chat` blueprint's runner, and its page in
real Chromium with two browser contexts (two workers): the waiting room, messages both
ways, Done; and a partner who leaves.

The example's webapp is built once per session (`chat_example_bundle`). Simulated
workers run their event loop in a thread of their own (`run_in_thread`): the module's
Playwright browser keeps an event loop marked as running in the main thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from example_helpers import built_bundle, example_config, load_module, run_in_thread

from mephisto.abstractions.blueprints.chat import SharedChatTaskState
from mephisto.db import MephistoDB
from mephisto.operations.hydra_config import (
    check_run_config,
)
from mephisto.testing.fixtures import LaunchedRun
from mephisto.testing.scripts import running_script
from mephisto.testing.worker import SimulatedWorker
from mephisto.tools.data_browser import DataBrowser

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_DIR = REPO / "examples" / "chat_task"
EXAMPLE_BUNDLE = EXAMPLE_DIR / "webapp" / "build" / "bundle.js"
TASK_NAME = "chat-task-example"
WAITING_TEXT = "Waiting for your partner to join…"
# STATUS_TO_TEXT_MAP["partner disconnect"] of packages/mephisto-task/src/constants.js
PARTNER_LEFT_TEXT = ("Another worker in this task left. This is not held against you: "
                     "please submit the task as it is.")

RUN_TASK = load_module(EXAMPLE_DIR / "run_task.py", "chat_example_run_task")

TURN_WORLD = load_module(EXAMPLE_DIR / "turn_world.py", "chat_example_turn_world")


@pytest.fixture(scope="session")
def chat_example_bundle(npm: str) -> Path:
    """examples/chat_task/webapp built once per session, where its users build it (npm
    install only when its node_modules is missing or stale); always rebuilt, as the
    mephisto-task it links from packages/ may have changed."""
    assert built_bundle(EXAMPLE_DIR) == EXAMPLE_BUNDLE
    return EXAMPLE_BUNDLE


def _chat_texts(updates: list[dict[str, Any]]) -> list[tuple[str, bool]]:
    """(text, mine) of the chat messages the server sent, from recorded live_updates."""
    return [(u["data"]["text"], u["data"]["mine"]) for u in updates
            if u["sender"] == "mephisto" and u["data"].get("kind") == "message"]


# -- the config -----------------------------------------------------------------------------


def test_example_config_composes_and_checks() -> None:
    cfg = example_config(EXAMPLE_DIR)
    check_run_config(cfg)
    assert cfg.mephisto.blueprint._blueprint_type == "chat"
    assert cfg.mephisto.architect._architect_type == "local"
    assert cfg.mephisto.provider._provider_type == "mock"
    assert cfg.mephisto.blueprint.task_source == str(EXAMPLE_BUNDLE)
    assert cfg.mephisto.blueprint.units_per_assignment == 2
    assert cfg.mephisto.task.task_name == TASK_NAME
    assert 2 <= len(RUN_TASK.TOPICS) <= 3
    assert all(isinstance(t["topic"], str) and t["topic"] for t in RUN_TASK.TOPICS)


# -- the run script, as written ------------------------------------------------------------


async def _page_of(url: str) -> str:
    async with SimulatedWorker(url, "reader") as worker:
        return await worker.open_page()


def _is_chat(kind: str, **match: Any) -> Any:
    def predicate(packet: dict[str, Any]) -> bool:
        data = packet["data"]
        return data.get("kind") == kind and all(data.get(k) == v for k, v in match.items())
    return predicate


async def _chat_and_submit(url: str, name: str) -> dict[str, Any]:
    """One worker as the page works: take an agent, connect, wait for the chat to
    begin, say one thing, wait for the partner's line (and its own echo), submit."""
    async with SimulatedWorker(url, name) as worker:
        await worker.request_agent()
        assert worker.agent_id is not None, worker.failure_reason
        topic = worker.init_data["topic"]
        await worker.connect()
        joined = await worker.wait_for_packet("client_bound_live_update", timeout=60,
                                              predicate=_is_chat("joined"))
        assert len(joined["data"]["workers"]) == 2 and joined["data"]["you"] in joined[
            "data"]["workers"]
        mine = f"hello from {name}"
        await worker.send_live_update({"text": mine})
        echo = await worker.wait_for_packet("client_bound_live_update", timeout=30,
                                            predicate=_is_chat("message", mine=True))
        partner = await worker.wait_for_packet("client_bound_live_update", timeout=30,
                                               predicate=_is_chat("message", mine=False))
        assert echo["data"]["text"] == mine and echo["data"]["sender"] == joined["data"]["you"]
        assert partner["data"]["sender"] != joined["data"]["you"]
        statuses = [p["data"]["status"] for p in worker.received
                    if p.get("packet_type") == "update_status"]
        assert "in task" in statuses, statuses
        messages = [echo["data"], partner["data"]]
        await worker.submit({"messages": messages})
        return {"name": name, "agent_id": worker.agent_id, "topic": topic,
                "sent": mine, "heard": partner["data"]["text"]}


def test_run_task_pairs_workers_and_completes(chat_example_bundle: Path,
                                              tmp_path: Path) -> None:
    """run_task.py as written: it builds its webapp, launches one chat per topic; two
    simulated workers per assignment (all at once) each take a unit, wait for their
    partner, exchange a message through the runner and submit; the script then ends by
    itself with every unit completed."""
    topics = len(RUN_TASK.TOPICS)
    names = [f"w{i}" for i in range(2 * topics)]
    with running_script(EXAMPLE_DIR / "run_task.py", cwd=tmp_path, timeout=180) as script:
        assert script.url is not None
        assert "<div id=\"app\"></div>" in run_in_thread(_page_of(script.url))

        async def work(url: str) -> list[dict[str, Any]]:
            return list(await asyncio.gather(*(_chat_and_submit(url, n) for n in names)))

        done = run_in_thread(work(script.url))
        assert script.wait() == 0, script.output
    # workers were paired by topic, each heard its partner (and nobody else)
    by_name = {d["name"]: d for d in done}
    for d in done:
        partner = by_name[d["heard"].removeprefix("hello from ")]
        assert partner is not d and partner["heard"] == d["sent"]
        assert partner["topic"] == d["topic"]
    assert sorted(d["topic"] for d in done) == sorted(
        [t["topic"] for t in RUN_TASK.TOPICS] * 2)

    db = MephistoDB()
    try:
        (run,) = db.find_task_runs()
        assert run.get_task().task_name == TASK_NAME
        assert db.get_unit_status_counts(run.db_id) == {"completed": 2 * topics}
        assignments = {u.assignment_id for u in db.find_units(task_run_id=run.db_id)}
        assert len(assignments) == topics
        for d in done:
            updates = db.get_agent(d["agent_id"])["state"]["live_updates"]
            assert [u["data"]["text"] for u in updates if u["sender"] == "worker"] == [d["sent"]]
            assert sorted(_chat_texts(updates)) == sorted([(d["sent"], True),
                                                           (d["heard"], False)])
        results = DataBrowser(db).load_results(task_run_id=run.db_id)
        assert len(results) == 2 * topics
        assert all(len(r["data"]["outputs"]["messages"]) == 2 for r in results)
    finally:
        db.shutdown()


# -- a plugged world (examples/chat_task/turn_world.py, docs/chat.md) ----------------------


async def _take_turns(url: str) -> dict[str, str]:
    """Ann joins first (Worker 1), Ben second; Ben writes out of turn and only he is told
    to wait; then Ann, then Ben; both submit. Returns their agent ids by name."""
    async with SimulatedWorker(url, "ann") as ann, SimulatedWorker(url, "ben") as ben:
        await ann.request_agent()
        await ann.connect()
        await ann.wait_for_packet("update_status",
                                  predicate=lambda p: p["data"]["status"] == "waiting")
        await ben.request_agent()
        await ben.connect()
        for worker, label in ((ann, "Worker 1"), (ben, "Worker 2")):
            joined = await worker.wait_for_packet("client_bound_live_update",
                                                  predicate=_is_chat("joined"))
            assert joined["data"]["you"] == label
            opening = await worker.wait_for_packet(
                "client_bound_live_update", predicate=_is_chat("message", sender="Moderator"))
            assert opening["data"]["text"] == ("Today's topic: Cats or dogs? Worker 1 starts; "
                                               "then take turns.")
        await ben.send_live_update({"text": "Dogs!"})
        note = await ben.wait_for_packet("client_bound_live_update", predicate=_is_chat(
            "message", sender="Moderator", text="Please wait for Worker 1 to write."))
        await ann.send_live_update({"text": "Cats, clearly."})
        await ben.wait_for_packet("client_bound_live_update",
                                  predicate=_is_chat("message", text="Cats, clearly."))
        await ben.send_live_update({"text": "Dogs, now in turn."})
        for worker in (ann, ben):
            await worker.wait_for_packet("client_bound_live_update",
                                         predicate=_is_chat("message", text="Dogs, now in turn."))
        for worker in (ann, ben):
            texts = [p["data"]["text"] for p in worker.received
                     if p.get("packet_type") == "client_bound_live_update"
                     and p["data"].get("kind") == "message"]
            expected = ["Cats, clearly.", "Dogs, now in turn."]
            if worker is ben:
                expected.insert(0, note["data"]["text"])
            assert texts[1:] == expected, texts  # [0]: the opening line
            await worker.submit({"messages": texts})
        assert ann.agent_id is not None and ben.agent_id is not None
        return {"ann": ann.agent_id, "ben": ben.agent_id}


def test_a_plugged_world_takes_turns(chat_example_bundle: Path, operator: Any,
                                     mephisto_db: Any) -> None:
    cfg = example_config(EXAMPLE_DIR, "mephisto.architect.port=0",
                         "mephisto.architect.hostname=127.0.0.1")
    state = SharedChatTaskState(
        static_task_data=[{"topic": "Cats or dogs?"}],
        world_factory=lambda agents, assignment: TURN_WORLD.TurnTakingWorld(agents))
    run = LaunchedRun(operator, operator.launch_task_run(cfg.mephisto, state))
    agent_ids = run_in_thread(_take_turns(run.url))
    assert run.wait(10)
    assert run.unit_statuses() == {"completed": 2}
    ann = mephisto_db.get_agent(agent_ids["ann"])["state"]["live_updates"]
    assert [u["data"]["text"] for u in ann if u["sender"] == "worker"] == ["Cats, clearly."]
    assert _chat_texts(ann)[1:] == [("Cats, clearly.", True), ("Dogs, now in turn.", False)]


# -- the page in real Chromium (keep last: the browser stays open to the module's end) ----


def _new_page(browser: Any) -> tuple[Any, Any]:
    """A page in a fresh context (another worker's browser), with `js_errors` as the
    `page` fixture collects them; returns (context, page)."""
    context = browser.new_context()
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.js_errors = errors
    return context, pg


@pytest.fixture
def second_page(browser: Any) -> Iterator[Any]:
    context, pg = _new_page(browser)
    yield pg
    context.close()


def _launch(operator: Any, topic: str) -> LaunchedRun:
    cfg = example_config(EXAMPLE_DIR, "mephisto.architect.port=0",
                         "mephisto.architect.hostname=127.0.0.1")
    state = SharedChatTaskState(static_task_data=[{"topic": topic}])
    return LaunchedRun(operator, operator.launch_task_run(cfg.mephisto, state))


def _messages(pg: Any) -> list[tuple[str, str]]:
    """(text, data-mine) of the messages a page shows, in order."""
    items = pg.locator("#messages .message")
    return [(items.nth(i).locator(".text").inner_text(), items.nth(i).get_attribute("data-mine"))
            for i in range(items.count())]


def _wait_for_messages(pg: Any, count: int) -> None:
    pg.locator("#messages .message").nth(count - 1).wait_for()


@pytest.mark.browser
def test_two_workers_chat_in_chromium(chat_example_bundle: Path, operator: Any,
                                      mephisto_db: Any, page: Any, second_page: Any) -> None:
    topic = "Plan a picnic for next Saturday."
    run = _launch(operator, topic)
    alice, bob = page, second_page

    alice.goto(f"{run.url}?worker_id=alice&assignment_id=a1")
    alice.locator("#waiting").get_by_text(WAITING_TEXT).wait_for()
    assert alice.locator("#topic").inner_text() == topic
    time.sleep(1.0)  # alone, she keeps waiting
    assert alice.locator("#waiting").inner_text() == WAITING_TEXT
    assert alice.locator("#message").count() == 0

    bob.goto(f"{run.url}?worker_id=bob&assignment_id=b1")
    for pg, label in ((alice, "Worker 1"), (bob, "Worker 2")):
        pg.locator("#messages").wait_for()
        assert pg.locator("#topic").inner_text() == topic
        pg.get_by_text(f"You are {label}.").wait_for()
    assert alice.locator("#waiting").count() == 0

    alice.locator("#message").fill("Hi Bob, the park by the lake?")
    alice.locator("#message").press("Enter")  # Enter sends
    _wait_for_messages(bob, 1)
    assert alice.locator("#message").input_value() == ""
    bob.locator("#message").fill("Yes! I bring sandwiches.")
    bob.locator("#send").click()
    _wait_for_messages(alice, 2)
    _wait_for_messages(bob, 2)
    assert _messages(alice) == [("Hi Bob, the park by the lake?", "true"),
                                ("Yes! I bring sandwiches.", "false")]
    assert _messages(bob) == [("Hi Bob, the park by the lake?", "false"),
                              ("Yes! I bring sandwiches.", "true")]
    # own messages on the right, the partner's on the left
    assert alice.locator(".message.mine").evaluate("e => getComputedStyle(e).alignSelf") == \
        "flex-end"
    assert alice.locator(".message.theirs").evaluate("e => getComputedStyle(e).alignSelf") == \
        "flex-start"

    alice.locator("#done").click()
    alice.locator("#submitted").wait_for()
    assert run.unit_statuses().get("completed") == 1
    bob.locator("#done").click()
    bob.locator("#submitted").wait_for()
    assert run.wait(10)
    assert run.unit_statuses() == {"completed": 2}

    agents = {a.get_worker().worker_name: a for a in mephisto_db.find_agents()}
    assert set(agents) == {"alice", "bob"}
    for name, said in (("alice", "Hi Bob, the park by the lake?"),
                       ("bob", "Yes! I bring sandwiches.")):
        agent = agents[name]
        assert agent.get_status() == "completed"
        updates = mephisto_db.get_agent(agent.db_id)["state"]["live_updates"]
        assert [u["data"]["text"] for u in updates if u["sender"] == "worker"] == [said]
        assert [text for text, _ in _chat_texts(updates)] == [
            "Hi Bob, the park by the lake?", "Yes! I bring sandwiches."]
        assert [text for text, mine in _chat_texts(updates) if mine] == [said]
        parsed = agent.state.get_parsed_data()
        assert [m["text"] for m in parsed["messages"]] == [
            "Hi Bob, the park by the lake?", "Yes! I bring sandwiches."]
        submitted = parsed["outputs"]["messages"]
        assert [(m["text"], m["mine"]) for m in submitted] == [
            (text, text == said) for text, _ in _chat_texts(updates)]
    assert alice.js_errors == [] and bob.js_errors == []


@pytest.mark.browser
def test_partner_leaving_ends_the_chat_in_chromium(chat_example_bundle: Path, operator: Any,
                                                   mephisto_db: Any, page: Any,
                                                   browser: Any) -> None:
    run = _launch(operator, "Agree on the best way to learn to cook.")
    run.live.live_sessions.disconnect_grace = 0.5  # a closed tab counts as gone at once
    alice = page
    bob_context, bob = _new_page(browser)
    try:
        alice.goto(f"{run.url}?worker_id=alice&assignment_id=a1")
        alice.locator("#waiting").get_by_text(WAITING_TEXT).wait_for()
        bob.goto(f"{run.url}?worker_id=bob&assignment_id=b1")
        bob.locator("#messages").wait_for()
        bob.locator("#message").fill("Start with eggs.")
        bob.locator("#message").press("Enter")
        _wait_for_messages(alice, 1)
        assert _messages(alice) == [("Start with eggs.", "false")]
        assert bob.js_errors == []
    finally:
        bob_context.close()  # bob closes his browser

    alice.locator("#status-text").get_by_text(PARTNER_LEFT_TEXT).wait_for()
    assert alice.locator("#message").is_disabled()
    assert alice.locator("#send").is_disabled() and alice.locator("#done").is_disabled()
    assert _messages(alice) == [("Start with eggs.", "false")]  # the chat stays readable

    statuses = {a.get_worker().worker_name: a.get_status() for a in mephisto_db.find_agents()}
    assert statuses == {"alice": "partner disconnect", "bob": "disconnect"}
    (alice_agent,) = [a for a in mephisto_db.find_agents()
                      if a.get_worker().worker_name == "alice"]
    deadline = time.monotonic() + 5  # what she saw is saved when her agent ends
    updates: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        updates = (mephisto_db.get_agent(alice_agent.db_id)["state"] or {}).get(
            "live_updates") or []
        if updates:
            break
        time.sleep(0.05)
    assert _chat_texts(updates) == [("Start with eggs.", False)]
    assert run.unit_statuses().get("completed") is None  # both units go back to others
    assert alice.js_errors == []
