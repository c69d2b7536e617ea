"""A person's view: real Chromium (Debian package, driven by Playwright) works a static
HTML task served by a live run; the submitted values must be in the database.
The `browser` and `page` fixtures live in conftest.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mephisto.tools.data_browser import DataBrowser

pytestmark = pytest.mark.browser

TASK_HTML = """
<h1 id="prompt">Rate: ${text}</h1>
<label><input type="radio" name="rating" value="good" required> good</label>
<label><input type="radio" name="rating" value="bad"> bad</label>
<label><input type="checkbox" name="tags" value="funny"> funny</label>
<label><input type="checkbox" name="tags" value="long"> long</label>
<textarea name="comment"></textarea>
<button type="submit">Send</button>
"""


@pytest.fixture
def rating_html(tmp_path: Path) -> Path:
    path = tmp_path / "rating.html"
    path.write_text(TASK_HTML)
    return path


def test_worker_fills_and_submits_in_chromium(
    launch_static_run: Any, rating_html: Path, page: Any, mephisto_db: Any, task_html: Path
) -> None:
    task_html.write_text(rating_html.read_text())
    run = launch_static_run([{"text": "a <b>bold</b> claim"}])
    page.goto(f"{run.url}?worker_id=chrome-worker&assignment_id=hit-1")
    prompt = page.locator("#prompt")
    prompt.wait_for()
    # the placeholder was filled with the unit's data, HTML-escaped
    assert prompt.inner_text() == "Rate: a <b>bold</b> claim"
    assert page.locator("button[type=submit]").count() == 1  # the author's own, no extra
    page.check("input[name=rating][value=good]")
    page.check("input[name=tags][value=funny]")
    page.check("input[name=tags][value=long]")
    page.fill("textarea[name=comment]", "nice one")
    page.click("button[type=submit]")
    page.get_by_text("Thank you, your work was submitted.").wait_for()

    assert run.unit_statuses() == {"completed": 1}
    (result,) = DataBrowser(mephisto_db).load_results(task_run_id=run.task_run_id)
    assert result["worker_name"] == "chrome-worker"
    assert result["data"]["inputs"] == {"text": "a <b>bold</b> claim"}
    outputs = result["data"]["outputs"]
    assert outputs["rating"] == "good"
    assert sorted(outputs["tags"]) == ["funny", "long"]
    assert outputs["comment"] == "nice one"
    assert page.js_errors == []
    assert run.wait(10)


def test_preview_creates_no_agent(launch_static_run: Any, page: Any, mephisto_db: Any) -> None:
    run = launch_static_run([{"text": "preview me"}])
    page.goto(run.url)
    page.get_by_text("Preview: accept the task to start").wait_for()
    assert page.locator("input[name=answer]").is_disabled()
    assert mephisto_db.find_agents() == []
    assert run.unit_statuses() == {"launched": 1}
