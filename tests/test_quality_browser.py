"""Screening as a person sees it: real Chromium works a static task whose new workers
get a screening unit first; a pass leads to real work, a fail to the refusal message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mephisto.abstractions.blueprints.mixins.screen_task_required import ScreenTaskRequired
from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState
from mephisto.data_model.unit import Unit
from mephisto.utils.args import Args

pytestmark = pytest.mark.browser

TASK_HTML = """
<h1 id="prompt">${text}</h1>
<input name="answer" required>
<button type="submit">Send</button>
"""
SCREENING = {"use_screening_task": True, "passed_qualification_name": "screened",
             "block_qualification": "screen-failed", "max_screening_units": 5}


def _screening_data() -> Any:
    while True:
        yield {"text": "Screening: type the word cat"}


def _passes(unit: Unit) -> bool:
    agent = unit.get_assigned_agent()
    assert agent is not None
    return bool(agent.state.get_data()["outputs"].get("answer", "").strip() == "cat")


def _work(page: Any, url: str, worker: str, assignment: str, answer: str | None) -> str:
    """Open the task as `worker` on a new assignment; answer it if given. The prompt
    (or the page's message when there is no unit)."""
    page.goto(f"{url}?worker_id={worker}&assignment_id={assignment}")
    prompt = page.locator("#prompt")
    refused = page.get_by_text("blocked")
    prompt.or_(refused).first.wait_for()
    if not prompt.is_visible():
        return str(page.locator("body").inner_text())
    text = str(prompt.inner_text())
    if answer is not None:
        page.fill("input[name=answer]", answer)
        page.click("button[type=submit]")
        page.get_by_text("Thank you, your work was submitted.").wait_for()
    return text


def test_screening_in_chromium(
    launch_static_run: Any, task_html: Path, page: Any, mephisto_db: Any
) -> None:
    task_html.write_text(TASK_HTML)
    state = SharedStaticTaskState(screening_data_factory=_screening_data())
    args = Args.of({"blueprint": SCREENING, "task": {"allowed_concurrent": 1}})
    state.on_unit_submitted = ScreenTaskRequired.create_validation_function(args, _passes)
    state.qualifications += ScreenTaskRequired.get_mixin_qualifications(args, state)
    run = launch_static_run([{"text": f"Real item {i}"} for i in range(3)], shared_state=state,
                            allowed_concurrent=1,
                            **{f"blueprint__{k}": v for k, v in SCREENING.items()})

    assert _work(page, run.url, "alice", "a1", "cat") == "Screening: type the word cat"
    assert _work(page, run.url, "alice", "a2", "fine") == "Real item 0"
    assert _work(page, run.url, "bob", "b1", "dog") == "Screening: type the word cat"
    refusal = _work(page, run.url, "bob", "b2", None)
    assert "blocked" in refusal and "Real item" not in refusal
    assert page.js_errors == []

    granted = {w.worker_name: w.get_granted_qualifications() for w in mephisto_db.find_workers()}
    assert granted == {"alice": {"screened": 1}, "bob": {"screen-failed": 1}}
    kinds = sorted((u.unit_index, u.get_status()) for u in
                   mephisto_db.find_units(task_run_id=run.task_run_id))
    assert kinds == [(-1, "completed"), (-1, "completed"), (0, "completed"), (0, "launched"),
                     (0, "launched")]
