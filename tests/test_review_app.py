"""The review app's API (`mephisto/review/app.py`) through a real uvicorn server: the
token, listing with filters and keyset pages, each decision recorded once in the
database and reaching the mock provider once, bad input refused with nothing changed,
the statistics, and `mephisto review` settling pending payments at start. Data access
runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from review_helpers import TOKEN, count_provider_calls, records, serving, submitted

from mephisto.abstractions.providers.mock import MockProvider
from mephisto.db import schema as s
from mephisto.db.database import MephistoDB
from mephisto.errors import ProviderError
from mephisto.review import queries
from mephisto.review.server import ReviewServer
from mephisto.testing.db_contract import Run
from mephisto.tools.data_browser import DataBrowser
from mephisto.tools.provider_review import Decision, review_unit

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MephistoDB]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'review.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    database = MephistoDB(url)
    yield database
    database.shutdown()


@pytest.fixture
def provider_calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    return count_provider_calls(monkeypatch)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[MephistoDB]:
    database = MephistoDB(f"sqlite:///{tmp_path / 'review.db'}")
    yield database
    database.shutdown()


@pytest.fixture
def server(sqlite_db: MephistoDB) -> Iterator[tuple[ReviewServer, MephistoDB, list[str]]]:
    units = submitted(sqlite_db, Run(sqlite_db), ["alice", "bob", "carol"])
    with serving(sqlite_db) as srv:
        yield srv, sqlite_db, units


def client(srv: ReviewServer, **kwargs: Any) -> httpx.Client:
    return httpx.Client(base_url=srv.base_url, timeout=10, follow_redirects=True, **kwargs)


def post(srv: ReviewServer, path: str, body: Any) -> httpx.Response:
    with client(srv, headers=AUTH) as c:
        return c.post(path, json=body)


def agent_status(db: MephistoDB, unit_id: str) -> str:
    return str(db.get_agent(db.get_unit(unit_id)["agent_id"])["status"])


# -- access --------------------------------------------------------------------------------


def test_the_api_needs_the_token(server: tuple[ReviewServer, MephistoDB, list[str]]) -> None:
    srv, db, units = server
    with client(srv) as c:
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"},
                        {"Authorization": TOKEN}):
            r = c.get("/api/units", headers=headers)
            assert r.status_code == 401 and "token" in r.json()["error"]
        r = c.post(f"/api/units/{units[0]}/review", json={"action": "approve"})
        assert r.status_code == 401
        assert agent_status(db, units[0]) == "completed" and db.find_worker_reviews() == []
        assert c.get("/?token=wrong").status_code == 401
        assert c.cookies.get("mephisto_review") is None
        page = c.get(f"/?token={TOKEN}")  # exchanged for a cookie, then the page
        assert page.status_code == 200 and "<title>Review" in page.text
        cookie = page.history[0].headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert c.get("/api/units").status_code == 200  # the cookie is enough now
    with client(srv, headers=AUTH) as c:
        assert c.get("/api/units").json()["total"] == 3
        assert c.get("/").status_code == 200  # the page itself holds no data
        assert c.get("/static/app.js").status_code == 200


# -- listing -------------------------------------------------------------------------------


def test_pages_cover_every_unit_once_with_filters(
    db: MephistoDB, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_a, run_b = Run(db, "task-a"), Run(db, "task-b")
    names = [f"w{i % 4}" for i in range(17)]
    units_a = submitted(db, run_a, names)
    units_b = submitted(db, run_b, ["w0", "w9"])
    run_a.units(2)  # launched, not taken: never awaiting review
    review_unit(db, units_a[0], Decision("approve"))
    review_unit(db, units_a[1], Decision("reject", note="empty"))
    with db.transaction() as conn:  # taken at known times: unit i of run a at 1000 + i
        for i, unit_id in enumerate(units_a):
            conn.execute(s.agents.update().where(s.agents.c.unit_id == int(unit_id))
                         .values(creation_date=1000.0 + i))

    with serving(db) as srv, client(srv, headers=AUTH) as c:
        def pages(query: str, limit: int) -> list[list[str]]:
            out, after = [], None
            while True:
                r = c.get(f"/api/units?{query}&limit={limit}" + (f"&after={after}" if after else ""))
                assert r.status_code == 200, r.text
                data = r.json()
                out.append([u["unit_id"] for u in data["units"]])
                after = data["next"]
                if after is None:
                    return out

        def flat(query: str, limit: int) -> list[str]:
            return [unit for page in pages(query, limit) for unit in page]

        awaiting = [*units_a[2:], *units_b]
        got = pages("status=completed", 4)
        assert [len(p) for p in got] == [4, 4, 4, 4, 1]
        assert [u for page in got for u in page] == sorted(awaiting, key=int)  # no gap, no repeat, in order
        assert pages("status=completed", 200) == [sorted(awaiting, key=int)]
        assert c.get("/api/units?limit=3").json()["total"] == len(awaiting)

        assert flat(f"run={run_b.task_run_id}", 1) == units_b
        assert flat("task=task-b", 5) == units_b
        worker_w0 = [u for u, n in zip(units_a, names, strict=True) if n == "w0"][1:]
        assert flat("worker=w0", 2) == [*worker_w0, units_b[0]]
        w9 = db.find_workers(worker_name="w9")[0].db_id
        assert flat(f"worker={w9}", 2) == [units_b[1]]
        assert pages("worker=nobody", 2) == [[]]
        assert flat("status=accepted", 5) == [units_a[0]]
        assert flat("status=rejected&task=task-a", 5) == [units_a[1]]
        assert len(flat("status=any", 7)) == 17 + 2 + 2
        assert flat("task=task-a&since=1004&until=1006", 2) == units_a[4:7]
        assert flat("task=task-a&since=1015", 2) == units_a[15:]
        monkeypatch.setattr(queries, "NARROW_RANGE", 2)  # wide ranges: the other plan
        assert flat("task=task-a&since=1004&until=1006", 2) == units_a[4:7]
        assert flat("task=task-a&since=1015", 2) == units_a[15:]
        assert flat("since=1016&until=1016", 2) == [units_a[16]]

        for bad, words in [("status=done", "not a unit status"), ("after=abc", "cursor"),
                           ("limit=0", "a page holds"), ("since=yesterday", "UNIX seconds"),
                           ("since=10&until=5", "ends before"), ("run=x", "run")]:
            r = c.get(f"/api/units?{bad}")
            assert r.status_code == 400 and words in r.json()["error"], (bad, r.text)

        tasks = {t["task_name"]: t for t in c.get("/api/tasks").json()["tasks"]}
        assert (tasks["task-a"]["awaiting"], tasks["task-b"]["awaiting"]) == (15, 2)
        detail = c.get(f"/api/units/{units_a[0]}").json()
        assert detail["outputs"] == {"answer": 0} and detail["inputs"] == {"text": "item 0"}
        assert [r["status"] for r in detail["reviews"]] == ["approved"]
        assert c.get("/api/units/999999").status_code == 404
        assert c.get("/api/units/abc").status_code == 404


def test_a_session_for_one_run_shows_only_that_run(sqlite_db: MephistoDB) -> None:
    db = sqlite_db
    run_a, run_b = Run(db, "task-a"), Run(db, "task-b")
    (in_a,), (in_b,) = submitted(db, run_a, ["x"]), submitted(db, run_b, ["y"])
    with serving(db, run_id=run_a.task_run_id) as srv, client(srv, headers=AUTH) as c:
        assert [u["unit_id"] for u in c.get("/api/units").json()["units"]] == [in_a]
        assert c.get(f"/api/units?run={run_b.task_run_id}").status_code == 400
        assert c.get(f"/api/units/{in_b}").status_code == 404
        r = c.post(f"/api/units/{in_b}/review", json={"action": "approve"})
        assert r.status_code == 404 and agent_status(db, in_b) == "completed"
        assert [t["task_name"] for t in c.get("/api/tasks").json()["tasks"]] == ["task-a"]


# -- decisions -----------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "provider_call"), [
    ({"action": "approve", "note": "good"}, "approve_work"),
    ({"action": "reject", "note": "copied"}, "reject_work"),
    ({"action": "soft_reject"}, "soft_reject_work"),
    ({"bonus": 0.5, "bonus_reason": "careful"}, "pay_bonus"),
    ({"block": True, "block_reason": "spam"}, "block_worker"),
    ({"grant": {"name": "trusted", "value": 3}}, "grant_qualification"),
])
def test_each_decision_is_recorded_once_and_reaches_the_provider_once(
    db: MephistoDB, provider_calls: Counter[str], body: dict[str, Any], provider_call: str
) -> None:
    run = Run(db)
    unit_id, other = submitted(db, run, ["alice", "bob"])
    worker_id = db.get_unit(unit_id)["worker_id"]
    with serving(db) as srv:
        r = post(srv, f"/api/units/{unit_id}/review", body)
    assert r.status_code == 200, r.text
    assert r.json()["ok"] is True and r.json()["warnings"] == []
    assert provider_calls == Counter({provider_call: 1})
    (review,) = db.find_worker_reviews()
    assert review["id"] == r.json()["review_id"] and review["unit_id"] == unit_id
    status = {"approve": "approved", "reject": "rejected", "soft_reject": "soft_rejected"}
    assert agent_status(db, unit_id) == status.get(body.get("action", ""), "completed")
    assert agent_status(db, other) == "completed"
    kind = {"approve_work": "review", "reject_work": "review", "soft_reject_work": "review",
            "pay_bonus": "bonus", "block_worker": "block",
            "grant_qualification": "qualification"}[provider_call]
    assert len(records(db, kind)) == 1
    if provider_call == "pay_bonus":
        (payment,) = db.find_payments()
        assert payment.is_paid and payment.amount == 0.5 and payment.reason == "careful"
        assert r.json()["bonus_paid"] is True
    if provider_call == "block_worker":
        assert db.is_worker_blocked(worker_id, run.requester_id)
    if provider_call == "grant_qualification":
        qual = db.find_qualifications(qualification_name="trusted")[0].db_id
        assert db.get_granted_qualification(qual, worker_id)["value"] == 3


def test_revoke_and_unblock(sqlite_db: MephistoDB, provider_calls: Counter[str]) -> None:
    db = sqlite_db
    (unit_id,) = submitted(db, Run(db), ["alice"])
    worker_id = db.get_unit(unit_id)["worker_id"]
    with serving(db) as srv:
        assert post(srv, f"/api/units/{unit_id}/review",
                    {"grant": {"name": "trusted"}, "block": True}).status_code == 200
        assert post(srv, f"/api/units/{unit_id}/review",
                    {"revoke": "trusted", "unblock": True}).status_code == 200
        r = post(srv, f"/api/units/{unit_id}/review", {"revoke": "never-made"})
        assert r.status_code == 400 and "never-made" in r.json()["error"]
    assert provider_calls == Counter({"grant_qualification": 1, "block_worker": 1,
                                      "revoke_qualification": 1, "unblock_worker": 1})
    assert records(db, "qualification") == {} and records(db, "block") == {}
    assert not db.is_worker_blocked(worker_id) and len(db.find_worker_reviews()) == 2
    assert db.check_granted_qualifications(worker_id=worker_id) == []


@pytest.mark.parametrize(("body", "status", "words"), [
    ({"action": "reject"}, 400, "needs a reason"),
    ({"action": "reject", "note": "   "}, 400, "needs a reason"),
    ({"action": "maybe"}, 400, "unknown review action"),
    ({}, 400, "does nothing"),
    ({"action": "approve", "bonus": "lots"}, 400, "amount of dollars"),
    ({"action": "approve", "bonus": -2}, 400, "positive amount"),
    ({"action": "approve", "extra": 1}, 400, "unknown field"),
    ({"block": "yes"}, 400, "true or false"),
    ({"grant": {"name": "q", "value": 1.5}}, 400, "integer"),
    ({"action": "approve", "send_feedback": True}, 400, "needs a note"),
    ({"action": "approve", "note": "ok", "send_feedback": "yes"}, 400, "true or false"),
    ({"action": "approve", "note": "x" * 5000}, 400, "at most"),
    (["approve"], 400, "JSON object"),
])
def test_a_bad_decision_is_refused_and_changes_nothing(
    server: tuple[ReviewServer, MephistoDB, list[str]], provider_calls: Counter[str],
    body: Any, status: int, words: str
) -> None:
    srv, db, units = server
    r = post(srv, f"/api/units/{units[0]}/review", body)
    assert r.status_code == status and words in r.json()["error"], r.text
    assert agent_status(db, units[0]) == "completed"
    assert db.find_worker_reviews() == [] and db.find_payments() == []
    assert provider_calls == Counter()


def test_bodies_must_be_small_json(server: tuple[ReviewServer, MephistoDB, list[str]]) -> None:
    srv, db, units = server
    path = f"/api/units/{units[0]}/review"
    with client(srv, headers=AUTH) as c:
        r = c.post(path, content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
        r = c.post(path, data={"action": "approve"})  # a form, as another site could send
        assert r.status_code == 415
        r = c.post(path, content=json.dumps({"action": "approve"}),
                   headers={"Content-Type": "text/plain"})
        assert r.status_code == 415
        big = json.dumps({"action": "approve", "note": "x" * 70_000})
        r = c.post(path, content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        assert c.post("/api/units/999999/review", json={"action": "approve"}).status_code == 404
    assert agent_status(db, units[0]) == "completed" and db.find_worker_reviews() == []


def test_a_second_decision_the_status_table_forbids_is_a_conflict(
    server: tuple[ReviewServer, MephistoDB, list[str]], provider_calls: Counter[str]
) -> None:
    srv, db, units = server
    assert post(srv, f"/api/units/{units[0]}/review", {"action": "approve"}).status_code == 200
    r = post(srv, f"/api/units/{units[0]}/review", {"action": "reject", "note": "no"})
    assert r.status_code == 409 and "cannot go from" in r.json()["error"]
    assert provider_calls == Counter({"approve_work": 1}) and agent_status(db, units[0]) == "approved"


def test_bulk_decisions_report_each_unit(
    db: MephistoDB, provider_calls: Counter[str]
) -> None:
    units = submitted(db, Run(db), ["a", "b", "c", "d"])
    review_unit(db, units[1], Decision("reject", note="empty"))
    provider_calls.clear()
    with serving(db) as srv:
        r = post(srv, "/api/review", {"unit_ids": [units[0], units[1], units[2], units[0],
                                                    "999999"], "action": "approve"})
        assert r.status_code == 200, r.text
        outcomes = r.json()["outcomes"]
        assert [o["unit_id"] for o in outcomes] == [units[0], units[1], units[2], "999999"]
        assert [o["ok"] for o in outcomes] == [True, False, True, False]
        assert "rejected" in outcomes[1]["error"] and "999999" in outcomes[3]["error"]
        for bad, words in [({"unit_ids": [], "action": "approve"}, "non-empty"),
                           ({"unit_ids": ["x"], "action": "approve"}, "not a unit id"),
                           ({"unit_ids": [units[3]], "action": "reject"}, "needs a reason"),
                           ({"unit_ids": list(range(1, 600)), "action": "approve"}, "at most")]:
            r = post(srv, "/api/review", bad)
            assert r.status_code == 400 and words in r.json()["error"]
    assert [agent_status(db, u) for u in units] == ["approved", "rejected", "approved",
                                                    "completed"]
    assert provider_calls == Counter({"approve_work": 2})
    assert len(db.find_worker_reviews()) == 3


# -- statistics ----------------------------------------------------------------------------


def test_worker_and_task_statistics(db: MephistoDB) -> None:
    run = Run(db)
    units = submitted(db, run, ["alice", "alice", "alice", "bob"])  # 10, 20, 30, 40 s
    review_unit(db, units[0], Decision("approve", bonus=1.0))
    review_unit(db, units[1], Decision("soft_reject", block=True, block_reason="slow"))
    review_unit(db, units[3], Decision("reject", note="empty", grant=("checked", 2)))
    alice = db.get_unit(units[0])["worker_id"]
    stats = DataBrowser(db).get_worker_stats(alice)
    assert stats["worker_name"] == "alice" and stats["units_total"] == 3
    assert stats["units_by_status"] == {"accepted": 1, "soft_rejected": 1, "completed": 1}
    assert stats["approval_rate"] == 0.5
    assert (stats["time_total_s"], stats["time_median_s"], stats["timed_units"]) == (60, 20, 3)
    assert (stats["rewards_paid"], stats["bonuses_paid"], stats["total_paid"]) == (0.5, 1, 1.5)
    assert [b["reason"] for b in stats["blocks"]] == ["slow"]
    assert [u["unit_id"] for u in stats["units"]] == units[2::-1]
    assert stats["units"][0]["task_name"] == "task-a"
    bob = DataBrowser(db).get_worker_stats(db.get_unit(units[3])["worker_id"])
    assert bob["qualifications"] == {"checked": 2} and bob["approval_rate"] == 0.0

    task = DataBrowser(db).get_task_stats(task_name="task-a")
    assert task["units_by_status"] == {"accepted": 1, "soft_rejected": 1, "completed": 1,
                                       "rejected": 1}
    assert task["workers"] == 2 and task["approval_rate"] == pytest.approx(1 / 3, abs=1e-3)
    assert (task["time_median_s"], task["total_paid"]) == (25, 1.5)
    assert DataBrowser(db).get_task_stats(run_id=run.task_run_id)["units_total"] == 4
    with serving(db) as srv, client(srv, headers=AUTH) as c:
        assert c.get(f"/api/workers/{alice}").json()["total_paid"] == 1.5
        assert c.get("/api/workers/999").status_code == 404
        assert c.get("/api/stats?task=task-a").json()["workers"] == 2
        assert c.get("/api/stats?task=nope").status_code == 404
        assert c.get("/api/stats").status_code == 400


def test_statistics_take_the_same_queries_for_more_units(sqlite_db: MephistoDB) -> None:
    db = sqlite_db
    run = Run(db)
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(str(args[2]))

    def measure() -> tuple[int, int]:
        worker = db.find_workers(worker_name="alice")[0].db_id
        statements.clear()
        DataBrowser(db).get_worker_stats(worker)
        for_worker = len(statements)
        statements.clear()
        DataBrowser(db).get_task_stats(run_id=run.task_run_id)
        return for_worker, len(statements)

    submitted(db, run, ["alice"] * 3)
    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        few = measure()
        sa.event.remove(db.engine, "before_cursor_execute", count)
        submitted(db, run, ["alice"] * 40 + [f"w{i}" for i in range(20)])
        sa.event.listen(db.engine, "before_cursor_execute", count)
        many = measure()
    finally:
        if sa.event.contains(db.engine, "before_cursor_execute", count):
            sa.event.remove(db.engine, "before_cursor_execute", count)
    assert few == many and many[0] <= 10 and many[1] <= 8


# -- the task's own review template -------------------------------------------------------


def test_a_review_template_beside_the_task_source_is_served(
    sqlite_db: MephistoDB, tmp_path: Path
) -> None:
    db = sqlite_db
    (tmp_path / "task.html").write_text("<p>task</p>")
    (tmp_path / "review.html").write_text("<p id='r'>review view</p>")
    run = Run(db)
    (plain,) = submitted(db, run, ["a"])
    run.task_run_id = db.new_task_run(
        run.task_id, run.requester_id,
        f"blueprint:\n  task_source: {tmp_path / 'task.html'}\n", "mock", "mock")
    (templated,) = submitted(db, run, ["b"])
    with serving(db) as srv, client(srv, headers=AUTH) as c:
        assert c.get(f"/api/units/{plain}").json()["has_review_template"] is False
        assert c.get(f"/api/units/{plain}/template").status_code == 404
        assert c.get(f"/api/units/{templated}").json()["has_review_template"] is True
        r = c.get(f"/api/units/{templated}/template")
        assert r.status_code == 200 and "review view" in r.text
        assert r.headers["content-type"].startswith("text/plain")


# -- starting: pending payments are settled ----------------------------------------------


def test_mephisto_review_settles_a_crashed_payment_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'review.db'}"
    db = MephistoDB(url)
    (unit_id,) = submitted(db, Run(db), ["alice"])

    def down(self: MockProvider, payment: Any) -> str:
        raise ProviderError("mock", "unreachable", retryable=True)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MockProvider, "pay_bonus", down)
        outcome = review_unit(db, unit_id, Decision("approve", bonus=2.0))
    assert outcome.payment is not None and not outcome.payment.is_paid
    env = {**os.environ, "MEPHISTO_DATABASE_URL": url}
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "mephisto"), "review", "--no-browser"], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        assert "Settled 1 pending bonus payment(s): 1 paid" in lines[0], lines
        review_url = lines[1].split()[2]
        assert review_url.startswith("http://127.0.0.1:") and "?token=" in review_url
        base, token = review_url.split("/?token=")
        deadline = time.monotonic() + 10
        while True:
            try:
                r = httpx.get(f"{base}/api/session",
                              headers={"Authorization": f"Bearer {token}"})
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert r.status_code == 200
        assert httpx.get(f"{base}/api/session").status_code == 401
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # reads and closes the pipes
    (payment,) = db.find_payments()
    assert payment.is_paid and len(records(db, "bonus")) == 1
    db.shutdown()


def test_mephisto_review_refuses_what_it_cannot_serve(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from mephisto.cli import cli

    url = f"sqlite:///{tmp_path / 'review.db'}"
    db = MephistoDB(url)
    Run(db)
    runner = CliRunner()
    r = runner.invoke(cli, ["review", "--database", url, "--task", "nope", "--no-browser"])
    assert r.exit_code == 1 and "task 'nope' has no runs" in r.output
    r = runner.invoke(cli, ["review", "--database", url, "--run", "99", "--no-browser"])
    assert r.exit_code == 1 and "run 99 does not exist" in r.output
    r = runner.invoke(cli, ["review", "--database", url, "--run", "x", "--no-browser"])
    assert r.exit_code == 1 and "not an integer" in r.output
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = runner.invoke(cli, ["review", "--database", url, "--port",
                                str(busy.getsockname()[1]), "--no-browser"])
    assert r.exit_code == 2 and "cannot listen" in r.output
    db.shutdown()


def test_serving_beyond_this_machine_warns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'review.db'}"
    MephistoDB(url).shutdown()
    with subprocess.Popen(
        [str(Path(sys.executable).parent / "mephisto"), "review", "--no-browser",
         "--host", "0.0.0.0", "--database", url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        line = proc.stdout.readline()
        proc.terminate()
        _out, err = proc.communicate(timeout=10)
    assert line.startswith("Reviewing at http://127.0.0.1:")
    assert "Warning: serving on 0.0.0.0" in " ".join(err.split())


def test_a_note_can_be_sent_to_the_worker_once(
    sqlite_db: MephistoDB, provider_calls: Counter[str]
) -> None:
    db = sqlite_db
    first, second = submitted(db, Run(db), ["alice", "bob"])
    with serving(db) as srv:
        r = post(srv, f"/api/units/{first}/review",
                 {"action": "soft_reject", "note": "Please read the examples.",
                  "send_feedback": True})
        assert r.status_code == 200 and r.json()["ok"], r.text
        r = post(srv, f"/api/units/{second}/review", {"action": "approve", "note": "Thanks"})
        assert r.status_code == 200, r.text
    assert provider_calls == Counter({"soft_reject_work": 1, "approve_work": 1,
                                      "send_feedback_message": 1})
    (message,) = records(db, "message").values()
    assert message["text"] == "Please read the examples." and message["unit_id"] == first
