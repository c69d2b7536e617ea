"""An in-house participant in real Chromium: they open their link to a live static run
(local architect, SQLite), submit the form and see the provider's thank-you; the
requester approves the unit. An expired link shows why it cannot be used.
The `browser` and `page` fixtures live in conftest.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState
from mephisto.abstractions.providers.inhouse import InhouseProvider, make_links
from mephisto.abstractions.providers.inhouse.provider import REVIEW
from mephisto.abstractions.providers.inhouse.tokens import PROVIDER_TYPE
from mephisto.data_model.agent import Agent
from mephisto.db.database import MephistoDB
from mephisto.testing.fixtures import LaunchedRun, static_run_config

pytestmark = pytest.mark.browser

TASK_HTML = """
<h1 id="prompt">Rate: ${text}</h1>
<p id="who">Hello ${provider_worker_id}</p>
<label><input type="radio" name="rating" value="good" required> good</label>
<label><input type="radio" name="rating" value="bad"> bad</label>
<textarea name="comment"></textarea>
<button type="submit">Send</button>
"""


@pytest.fixture
def inhouse_run(operator: Any, task_html: Path) -> Callable[[int], tuple[LaunchedRun,
                                                                        InhouseProvider]]:
    task_html.write_text(TASK_HTML)

    def launch(units: int) -> tuple[LaunchedRun, InhouseProvider]:
        InhouseProvider.register_requester(operator.db, "lab", {})
        config = static_run_config(task_html)
        config["provider"] = {"_provider_type": PROVIDER_TYPE, "requester_name": "lab"}
        state = SharedStaticTaskState(static_task_data=[{"text": f"sentence {i}"}
                                                        for i in range(units)])
        run = LaunchedRun(operator, operator.launch_task_run(config, state))
        return run, run.live.provider

    return launch


def test_a_participant_submits_through_their_link_and_is_approved(
    inhouse_run: Callable[[int], tuple[LaunchedRun, InhouseProvider]], page: Any,
    mephisto_db: MephistoDB,
) -> None:
    run, provider = inhouse_run(1)
    (link,) = make_links(provider.signing_key(), run.url, ["alice"])
    page.goto(link.url)
    page.locator("#prompt").wait_for()
    assert page.locator("#prompt").inner_text() == "Rate: sentence 0"
    assert page.locator("#who").inner_text() == "Hello alice"  # the shim read the token
    page.check("input[name=rating][value=good]")
    page.fill("textarea[name=comment]", "fine")
    page.click("button[type=submit]")
    thanks = page.locator("#mephisto-inhouse-thanks")
    thanks.wait_for()
    assert "Thank you!" in thanks.inner_text()
    assert page.js_errors == []
    assert run.wait(10)

    (unit,) = mephisto_db.find_units(task_run_id=run.task_run_id)
    agent = unit.get_assigned_agent()
    assert agent is not None
    worker = agent.get_worker()
    assert (worker.worker_name, worker.provider_type) == ("alice", PROVIDER_TYPE)
    assert agent.state.get_data()["outputs"] == {"rating": "good", "comment": "fine"}
    assert agent.get_status() == "completed"

    # the requester's review: the provider's record, then the data model
    provider.approve_work(agent, "well done")
    agent.approve_work("well done")
    assert Agent(mephisto_db, agent.db_id).get_status() == "approved"
    assert mephisto_db.get_unit(unit.db_id)["status"] == "accepted"
    record = mephisto_db.get_provider_record(PROVIDER_TYPE, REVIEW, agent.db_id)
    assert record["decision"] == "approved" and record["note"] == "well done"
    assert record["unit_id"] == unit.db_id and record["task_run_id"] == run.task_run_id


def test_an_expired_link_says_so_in_the_page(
    inhouse_run: Callable[[int], tuple[LaunchedRun, InhouseProvider]], page: Any,
    mephisto_db: MephistoDB,
) -> None:
    run, provider = inhouse_run(1)
    week = 7 * 86400
    (link,) = make_links(provider.signing_key(), run.url, ["late"], now=time.time() - week - 5)
    page.goto(link.url)
    message = page.get_by_text("This link expired on")
    message.wait_for()
    assert "Ask the researcher for a new link." in message.inner_text()
    assert page.locator("#prompt").count() == 0
    assert mephisto_db.find_agents() == []
    assert run.unit_statuses() == {"launched": 1}


def test_without_a_token_the_page_is_a_preview(
    inhouse_run: Callable[[int], tuple[LaunchedRun, InhouseProvider]], page: Any,
    mephisto_db: MephistoDB,
) -> None:
    run, _provider = inhouse_run(1)
    page.goto(run.url)
    page.get_by_text("Preview: accept the task to start").wait_for()
    assert page.locator("input[name=rating]").first.is_disabled()
    assert mephisto_db.find_agents() == []
