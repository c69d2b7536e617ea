"""The review page in real Chromium: a reviewer opens the printed token URL, approves,
rejects with a reason, pays a bonus, bulk-approves a selection, using buttons and the
keyboard; the database and the mock provider show each action exactly once. Starting
the app first settles a bonus whose payment a crash interrupted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from review_helpers import TOKEN, count_provider_calls, records, serving, submitted

from mephisto.db.database import MephistoDB
from mephisto.testing.db_contract import Run
from mephisto.tools import provider_review
from mephisto.tools.provider_review import Decision, review_unit

pytestmark = pytest.mark.browser


@pytest.fixture
def db(tmp_path: Path) -> Iterator[MephistoDB]:
    database = MephistoDB(f"sqlite:///{tmp_path / 'review.db'}")
    yield database
    database.shutdown()


class Crash(BaseException):
    """The process dying between recording a bonus and paying it."""


def crashed_bonus(db: MephistoDB, unit_id: str) -> None:
    def die(*_: Any) -> Any:
        raise Crash

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(provider_review, "send_payment", die)
        with pytest.raises(Crash):
            review_unit(db, unit_id, Decision("approve", bonus=1.25))
    (payment,) = db.find_payments()
    assert payment.status == "recorded" and records(db, "bonus") == {}


def agent_status(db: MephistoDB, unit_id: str) -> str:
    return str(db.get_agent(db.get_unit(unit_id)["agent_id"])["status"])


def test_a_reviewer_works_through_the_units(
    db: MephistoDB, page: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.sync_api import expect

    run = Run(db)
    units = submitted(db, run, [f"w{i}" for i in range(7)])
    crashed_bonus(db, units[6])
    calls: Counter[str] = count_provider_calls(monkeypatch)

    with serving(db) as srv:
        (settled,) = db.find_payments()
        assert settled.is_paid and calls == Counter({"pay_bonus": 1})  # settled at start
        page.goto(f"{srv.base_url}/?token={TOKEN}")
        assert page.url == f"{srv.base_url}/"  # the token left the address bar
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        expect(page.locator("#messages")).to_contain_text("1 pending bonus payment(s) settled")
        rows = page.locator("#units tbody tr")
        expect(rows).to_have_count(6)
        expect(page.locator("#unit-title")).to_have_text(f"Unit {units[0]} · completed")
        expect(page.locator("#unit-outputs")).to_contain_text("answer")

        page.click("#approve")
        expect(page.locator("#messages p").first).to_have_text(f"unit {units[0]}: approved")
        expect(rows).to_have_count(5)
        expect(page.locator("#unit-title")).to_have_text(f"Unit {units[1]} · completed")

        page.check("#send-feedback")  # the reason goes to the worker as a message too
        page.locator("body").click(position={"x": 5, "y": 5})
        page.keyboard.press("r")  # focuses the reason box; Enter sends the rejection
        expect(page.locator("#reason")).to_be_focused()
        page.keyboard.type("answers copied from the example")
        page.keyboard.press("Enter")
        expect(page.locator("#messages p").first).to_have_text(f"unit {units[1]}: rejected")
        expect(page.locator("#unit-title")).to_have_text(f"Unit {units[2]} · completed")
        page.uncheck("#send-feedback")

        page.fill("#bonus-amount", "0.75")
        page.fill("#bonus-reason", "extra careful")
        page.dblclick("#bonus")  # a double click pays once
        expect(page.locator("#messages p").first).to_have_text(
            f"unit {units[2]}: bonus of $0.75")
        expect(page.locator("#reviews")).to_contain_text("bonus $0.75")
        page.locator("body").click(position={"x": 5, "y": 5})  # focus off the inputs
        page.keyboard.press("a")
        expect(page.locator("#messages p").first).to_have_text(f"unit {units[2]}: approved")
        expect(rows).to_have_count(3)

        page.keyboard.press("?")
        expect(page.locator("#help")).to_be_visible()
        page.keyboard.press("Escape")
        expect(page.locator("#help")).to_be_hidden()

        page.check("#select-page")
        expect(page.locator("#selected-count")).to_have_text("3 selected")
        page.keyboard.press("x")  # the unit shown (units[3]) leaves the selection...
        expect(page.locator("#selected-count")).to_have_text("2 selected")
        page.keyboard.press("x")  # ...and comes back
        expect(page.locator("#selected-count")).to_have_text("3 selected")
        page.click("#bulk-approve")
        expect(page.locator("#messages p").first).to_have_text("approved: 3 of 3 units")
        expect(rows).to_have_count(0)
        expect(page.locator("#selected-count")).to_have_text("0 selected")

        page.select_option("#f-status", "any")
        page.click("#filters button[type=submit]")
        expect(rows).to_have_count(7)
        rows.nth(1).locator("a.worker").click()
        expect(page.locator("#worker-pane")).to_be_visible()
        expect(page.locator("#worker-title")).to_contain_text("Worker w1")
        expect(page.locator("#worker-stats")).to_contain_text("approval rate0%")
        assert page.js_errors == []

    assert [agent_status(db, u) for u in units] == [
        "approved", "rejected", "approved", "approved", "approved", "approved", "approved"]
    assert calls == Counter({"approve_work": 5, "reject_work": 1, "pay_bonus": 2,
                             "send_feedback_message": 1})
    (message,) = records(db, "message").values()
    assert message["text"] == "answers copied from the example" and message["unit_id"] == units[1]
    reviews = db.find_worker_reviews()
    assert len(reviews) == 1 + 7  # the crashed decision's, then one per action
    assert [r["review_note"] for r in reviews if r["status"] == "rejected"] == [
        "answers copied from the example"]
    assert sorted(p.amount for p in db.find_payments()) == [0.75, 1.25]
    assert all(p.is_paid for p in db.find_payments()) and len(records(db, "bonus")) == 2
    assert len(records(db, "review")) == 7


def test_a_task_review_template_gets_the_unit(
    db: MephistoDB, page: Any, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    (tmp_path / "task.html").write_text("<p>task</p>")
    (tmp_path / "review.html").write_text(
        "<p id='answer'>waiting</p><script>"
        "window.addEventListener('message', (e) => {"
        " document.getElementById('answer').textContent ="
        " 'answer is ' + e.data.unit.outputs.answer; });</script>")
    run = Run(db)
    run.task_run_id = db.new_task_run(
        run.task_id, run.requester_id,
        f"blueprint:\n  task_source: {tmp_path / 'task.html'}\n", "mock", "mock")
    submitted(db, run, ["alice"])
    with serving(db) as srv:
        page.goto(f"{srv.base_url}/?token={TOKEN}")
        frame = page.frame_locator("#review-frame")
        expect(frame.locator("#answer")).to_have_text("answer is 0")
        assert page.locator("#review-frame").get_attribute("sandbox") == "allow-scripts"
    assert page.js_errors == []


def test_a_session_for_one_run_offers_that_run_only(db: MephistoDB, page: Any) -> None:
    from playwright.sync_api import expect

    run_a, run_b = Run(db, "task-a"), Run(db, "task-b")
    submitted(db, run_a, ["x", "y"])
    submitted(db, run_b, ["z"])
    with serving(db, run_id=run_b.task_run_id) as srv:
        page.goto(f"{srv.base_url}/?token={TOKEN}")
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        options = page.locator("#scope option")
        expect(options).to_have_count(1)
        expect(options.first).to_contain_text(f"run {run_b.task_run_id} (1 awaiting)")
        expect(page.locator("#units tbody tr")).to_have_count(1)
        expect(page.locator("#task-stats")).to_contain_text("1 units, 1 workers")
    assert page.js_errors == []


def test_a_live_units_session_is_shown_as_it_happened(db: MephistoDB, page: Any) -> None:
    from playwright.sync_api import expect

    run = Run(db)
    live, static = submitted(db, run, ["talker", "quiet"])
    agent_id = db.get_unit(live)["agent_id"]
    db.update_agent(agent_id, state={"live_updates": [
        {"sender": "worker", "time": 100.0, "data": {"request_id": "r1", "target": "add"}},
        {"sender": "mephisto", "time": 100.25, "data": {"handles": "r1", "response": "3"}},
    ]})
    with serving(db) as srv:
        page.goto(f"{srv.base_url}/?token={TOKEN}")
        expect(page.locator("#unit-title")).to_have_text(f"Unit {live} · completed")
        entries = page.locator("#unit-live li")
        expect(entries).to_have_count(2)
        expect(entries.nth(0)).to_contain_text("+0.0 s worker")
        expect(entries.nth(1)).to_contain_text("+0.3 s task")
        expect(entries.nth(1)).to_contain_text("handles")
        page.keyboard.press("j")  # the next unit has no live session: no section
        expect(page.locator("#unit-title")).to_have_text(f"Unit {static} · completed")
        expect(page.locator("#live-section")).to_be_hidden()
    assert page.js_errors == []
