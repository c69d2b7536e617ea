"""`mephisto budget`, `spend` and `cost`, and the grouped spending queries under them, on
SQLite and PostgreSQL.

Every figure is checked against values computed here from the plan the test built:
units with known rewards and statuses, bonuses recorded with known amounts and
outcomes, and the providers' fees written down independently (MTurk 20%, Prolific a
third, the mock nothing).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cli_helpers import flat, rows, run, wide  # noqa: F401  (wide: an autouse fixture)

from mephisto.db import MephistoDB, batch
from mephisto.tools.spending import spend_report

FEES = {"mock": 0.0, "mturk": 0.2, "prolific": 1 / 3}
COMMITTED = {"created", "launched", "assigned", "completed", "accepted", "soft_rejected"}
PAID = {"accepted", "soft_rejected"}


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'spend.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def db(db_url: str) -> Iterator[MephistoDB]:
    database = MephistoDB(db_url)
    yield database
    database.shutdown()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[MephistoDB]:
    """For checks of the command line that no database engine changes."""
    database = MephistoDB(f"sqlite:///{tmp_path / 'spend.db'}")
    yield database
    database.shutdown()


def money(x: float) -> str:
    return f"${x:,.2f}"


# -- the plan -------------------------------------------------------------------------------


@dataclass
class Plan:
    """What the test made, kept to compute the expected figures."""

    db: MephistoDB
    runs: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> ids, provider
    units: list[dict[str, Any]] = field(default_factory=list)
    bonuses: list[dict[str, Any]] = field(default_factory=list)
    projects: dict[str, str] = field(default_factory=dict)
    workers: dict[str, str] = field(default_factory=dict)

    def task_run(self, name: str, provider: str, project: str | None) -> None:
        db = self.db
        requester = db.find_requesters(requester_name=f"req-{provider}")
        req_id = requester[0].db_id if requester else db.new_requester(f"req-{provider}",
                                                                       provider)
        project_id = None
        if project is not None:
            if project not in self.projects:
                self.projects[project] = db.new_project(project)
            project_id = self.projects[project]
        task_id = db.new_task(name, "static_task", project_id=project_id)
        run_id = db.new_task_run(task_id, req_id, "task: {}\n", provider, "static_task")
        self.runs[name] = {"task_id": task_id, "run_id": run_id, "provider": provider,
                           "requester_id": req_id, "project": project or ""}

    def worker(self, name: str, provider: str) -> str:
        key = f"{name} ({provider})"
        if key not in self.workers:
            self.workers[key] = self.db.find_or_new_worker(name, provider).db_id
        return self.workers[key]

    def unit(self, task: str, pay: float, status: str, worker: str | None = None) -> str:
        db, r = self.db, self.runs[task]
        start = "created" if status == "created" else "launched"
        [(assignment_id, [unit_id])] = batch.new_assignments_with_units(
            db, r["run_id"], [{}], pay, 1, status=start)
        if worker is not None:
            worker_id = self.worker(worker, r["provider"])
            agent = db.new_agent(worker_id, unit_id, r["task_id"], r["run_id"], assignment_id,
                                 "static_task", r["provider"], status="in task")
            if status != "assigned":
                db.update_agent(agent, status="completed")
            review = {"accepted": "approved", "rejected": "rejected",
                      "soft_rejected": "soft_rejected"}.get(status)
            if review:
                db.update_agent(agent, status=review)
        elif status == "expired":
            db.update_unit(unit_id, status="expired")
        assert db.get_unit(unit_id)["status"] == status
        self.units.append({"task": task, "pay": pay, "status": status, "worker": worker,
                           "provider": r["provider"], "project": r["project"]})
        return unit_id

    def bonus(self, task: str | None, worker: str, amount: float, outcome: str,
              unit_id: str | None = None, provider: str = "mturk") -> None:
        db = self.db
        if task is not None:
            provider = self.runs[task]["provider"]
        requester = db.find_requesters(requester_name=f"req-{provider}")[0].db_id
        payment = db.new_payment(requester, self.worker(worker, provider), provider, amount,
                                 "thanks", unit_id=unit_id)
        if outcome == "paid":
            db.update_payment(payment, "paid", provider_ref="ref")
        elif outcome == "failed":
            db.update_payment(payment, "failed", error="down")
        self.bonuses.append({"task": task, "worker": worker, "amount": amount,
                             "outcome": outcome, "provider": provider,
                             "project": self.runs[task]["project"] if task else None})

    # expected figures, computed from the plan alone

    def expected(self, key: str, tasks: set[str] | None = None) -> dict[Any, dict[str, Any]]:
        out: dict[Any, dict[str, Any]] = {}

        def group(g: Any) -> dict[str, Any]:
            return out.setdefault(g, {"rc": 0.0, "rp": 0.0, "bc": 0.0, "bp": 0.0, "fc": 0.0,
                                      "fp": 0.0, "n_bonuses": 0, "units": Counter()})

        for u in self.units:
            if tasks is not None and u["task"] not in tasks:
                continue
            g = group(self._key(key, u))
            g["units"][u["status"]] += 1
            fee = FEES[u["provider"]]
            if u["status"] in COMMITTED:
                g["rc"] += u["pay"]
                g["fc"] += u["pay"] * fee
            if u["status"] in PAID:
                g["rp"] += u["pay"]
                g["fp"] += u["pay"] * fee
        for b in self.bonuses:
            if tasks is not None and b["task"] not in tasks:
                continue
            g = group(self._key(key, b) if b["task"] or key == "worker" else "(no unit)")
            fee = FEES[b["provider"]]
            g["n_bonuses"] += 1
            g["bc"] += b["amount"]
            g["fc"] += b["amount"] * fee
            if b["outcome"] == "paid":
                g["bp"] += b["amount"]
                g["fp"] += b["amount"] * fee
        for g in out.values():
            g["committed"] = g["rc"] + g["bc"] + g["fc"]
            g["paid"] = g["rp"] + g["bp"] + g["fp"]
        return out

    def _key(self, key: str, item: dict[str, Any]) -> Any:
        if key == "worker":
            if item["worker"] is None:
                return None
            return f"{item['worker']} ({item['provider']})"
        if key == "project":
            return item["project"] or None
        return item["task"]  # task and run: one run per task here


def make_plan(db: MephistoDB) -> Plan:
    plan = Plan(db)
    plan.task_run("survey", "mturk", "alpha")
    plan.task_run("label", "prolific", "alpha")
    plan.task_run("chat", "mock", "beta")
    plan.task_run("loose", "mturk", None)
    a1 = plan.unit("survey", 1.0, "accepted", "alice")
    plan.unit("survey", 1.0, "rejected", "bob")
    c1 = plan.unit("survey", 1.0, "completed", "carol")
    plan.unit("survey", 1.0, "launched")
    plan.unit("survey", 1.0, "expired")
    plan.unit("survey", 1.0, "soft_rejected", "alice")
    lab = plan.unit("label", 0.6, "accepted", "alice")
    plan.unit("label", 0.6, "assigned", "dave")
    plan.unit("label", 0.6, "created")
    plan.unit("label", 0.6, "created")
    chat = plan.unit("chat", 2.0, "accepted", "bob")
    plan.unit("chat", 2.0, "accepted", "carol")
    plan.unit("loose", 0.5, "completed", "dave")
    plan.unit("loose", 0.5, "launched")
    plan.bonus("survey", "alice", 0.5, "paid", a1)
    plan.bonus("chat", "bob", 1.0, "recorded", chat)
    plan.bonus("survey", "carol", 0.25, "failed", c1)
    plan.bonus("label", "alice", 0.3, "paid", lab)
    plan.bonus(None, "alice", 2.0, "paid", provider="mturk")  # for no unit
    return plan


def check(spent: Any, want: dict[str, Any]) -> None:
    assert spent.rewards_committed == pytest.approx(want["rc"])
    assert spent.rewards_paid == pytest.approx(want["rp"])
    assert spent.bonuses_committed == pytest.approx(want["bc"])
    assert spent.bonuses_paid == pytest.approx(want["bp"])
    assert spent.fees_committed == pytest.approx(want["fc"])
    assert spent.fees_paid == pytest.approx(want["fp"])
    assert spent.committed == pytest.approx(want["committed"])
    assert spent.paid == pytest.approx(want["paid"])
    assert spent.bonuses == want["n_bonuses"]
    assert spent.units == dict(want["units"])


def _report_by_name(report: Any) -> dict[Any, Any]:
    """The report's groups keyed as the plan keys them (names, None, "(no unit)")."""
    out: dict[Any, Any] = {}
    for gid, spent in report.groups.items():
        name = None if gid is None else report.names[gid]
        out[name] = spent
    if report.unattributed is not None:
        out["(no unit)"] = report.unattributed
    return out


# -- the grouped queries ----------------------------------------------------------------------


@pytest.mark.parametrize("by", ["project", "task", "run", "worker"])
def test_spending_by_each_grouping_matches_the_plan(db: MephistoDB, by: str) -> None:
    plan = make_plan(db)
    report = spend_report(db, by)
    got = _report_by_name(report)
    want = plan.expected(by)
    assert set(got) == set(want)
    for name, expected in want.items():
        check(got[name], expected)
    everything = plan.expected("project")
    total = {k: sum(g[k] for g in everything.values()) for k in ("committed", "paid")}
    assert report.total.committed == pytest.approx(total["committed"])
    assert report.total.paid == pytest.approx(total["paid"])


def test_spending_filtered_by_project_and_task(db: MephistoDB) -> None:
    plan = make_plan(db)
    by_worker = _report_by_name(spend_report(db, "worker", project="alpha"))
    want = plan.expected("worker", tasks={"survey", "label"})
    assert set(by_worker) == set(want)  # the bonus for no unit is in no project
    for name, expected in want.items():
        check(by_worker[name], expected)
    only = _report_by_name(spend_report(db, "project", task="loose"))
    assert set(only) == {None}
    check(only[None], plan.expected("project", tasks={"loose"})[None])
    assert spend_report(db, "task", project="beta").unattributed is None


def test_per_worker_spending_does_not_query_per_worker(db: MephistoDB) -> None:
    plan = make_plan(db)
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    sa.event.listen(db.engine, "before_cursor_execute", count)
    try:
        spend_report(db, "worker")
        few = len(statements)
        for i in range(25):  # 25 more workers, each with a unit and a bonus
            unit_id = plan.unit("survey", 0.1, "accepted", f"w{i:02d}")
            plan.bonus("survey", f"w{i:02d}", 0.05, "paid", unit_id)
        statements.clear()
        report = spend_report(db, "worker")
        assert len(statements) == few == 3  # units, bonuses, the groups' names
    finally:
        sa.event.remove(db.engine, "before_cursor_execute", count)
    got = _report_by_name(report)
    assert len(got) == len(plan.expected("worker"))
    check(got["w07 (mturk)"], plan.expected("worker")["w07 (mturk)"])


# -- mephisto spend ---------------------------------------------------------------------------


def test_spend_command_shows_each_worker(db: MephistoDB) -> None:
    plan = make_plan(db)
    result = run(db, "spend", "--by", "worker")
    assert result.exit_code == 0, result.output
    table = rows(result.output)
    want = plan.expected("worker")
    alice = table["alice (mturk)"]
    a = want["alice (mturk)"]
    assert alice[0] == "1 accepted, 1 soft_rejected"
    assert alice[1:] == [money(a["rc"]), f"{money(a['bc'])} (2)", money(a["fc"]),
                         money(a["committed"]), money(a["paid"])]
    assert table["(no worker yet)"][0] == "2 created, 2 launched, 1 expired"
    assert table["(no worker yet)"][4] == money(want[None]["committed"])
    total_committed = sum(g["committed"] for g in want.values())
    assert table["total"][4] == money(total_committed)
    by_project = rows(run(db, "spend").output)
    assert by_project["alpha"][4] == money(plan.expected("project")["alpha"]["committed"])
    assert "(bonuses for no unit)" in by_project and "(no project)" in by_project
    assert by_project["total"][4] == money(total_committed)
    one = run(db, "spend", "--by", "run", "--task", "chat")
    survey_run = plan.runs["chat"]["run_id"]
    assert rows(one.output)[f"{survey_run} (chat)"][0] == "2 accepted"


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--project", "nope"], 2, "no project named 'nope'; projects: 'alpha', 'beta'"),
    (["--task", "nope"], 2, "no task named 'nope'; tasks: 'survey', 'label', 'chat', 'loose'"),
    (["--project", "beta", "--task", "survey"], 2, "task 'survey' is not in project 'beta'"),
    (["--by", "planet"], 2, "Invalid value for '--by'"),
])
def test_spend_explains_bad_filters(db: MephistoDB, args: list[str], code: int,
                                    message: str) -> None:
    make_plan(db)
    result = run(db, "spend", *args)
    assert result.exit_code == code, result.output
    assert message in flat(result)


def test_spend_with_nothing_spent_says_so(db: MephistoDB) -> None:
    result = run(db, "spend")
    assert result.exit_code == 0 and "Nothing spent yet." in result.output


# -- mephisto budget ---------------------------------------------------------------------------


def _caps(db: MephistoDB) -> dict[str, Any]:
    """Every budget and every task's project: what must not change on a refusal."""
    return {
        "projects": {p.project_name: p.budget for p in db.find_projects()},  # type: ignore[attr-defined]
        "runs": {r.db_id: r.budget for r in db.find_task_runs()},  # type: ignore[attr-defined]
        "tasks": {t.task_name: t.project_id for t in db.find_tasks()},
    }


def test_budget_shows_and_sets_caps(db: MephistoDB) -> None:
    plan = make_plan(db)
    want = plan.expected("project")
    shown = run(db, "budget")
    assert shown.exit_code == 0, shown.output
    table = rows(shown.output)
    alpha = want["alpha"]
    assert table["alpha"] == ["none", money(alpha["committed"]), money(alpha["paid"]), "-"]
    survey = plan.runs["survey"]["run_id"]
    survey_want = plan.expected("task")["survey"]
    assert table[survey][:6] == ["survey", "alpha", "mturk", "no", "none",
                                 money(survey_want["committed"])]

    result = run(db, "budget", "--project", "alpha", "100")
    assert result.exit_code == 0, result.output
    left = 100 - alpha["committed"]
    assert (f"project 'alpha': budget $100.00, committed {money(alpha['committed'])}, "
            f"{money(left)} left.") in flat(result)
    assert db.find_projects(project_name="alpha")[0].budget == 100.0  # type: ignore[attr-defined]
    assert run(db, "budget", "--run", survey, "$7.50").exit_code == 0
    assert db.get_task_run(survey)["budget"] == 7.5
    table = rows(run(db, "budget").output)
    assert table["alpha"][0] == "$100.00" and table["alpha"][3] == money(left)
    assert table[survey][4] == "$7.50"
    assert table[survey][7] == money(7.5 - survey_want["committed"])
    over = run(db, "budget", "--run", survey, "1")
    assert over.exit_code == 0
    assert "has committed more than this budget: its launches and bonuses will be refused" \
        in flat(over)
    cleared = run(db, "budget", "--project", "alpha", "--clear")
    assert cleared.exit_code == 0 and "no budget" in flat(cleared)
    assert db.find_projects(project_name="alpha")[0].budget is None  # type: ignore[attr-defined]
    only = rows(run(db, "budget", "--project", "beta").output)
    assert "beta" in only and "alpha" not in only


def test_budget_puts_tasks_into_a_project(db: MephistoDB) -> None:
    plan = make_plan(db)
    result = run(db, "budget", "--project", "gamma", "10", "--add-task", "loose",
                 "--add-task", "chat")
    assert result.exit_code == 0, result.output
    assert "Created project 'gamma'." in result.output
    assert "Moved task(s) loose, chat into project 'gamma'." in flat(result)
    gamma = db.find_projects(project_name="gamma")[0]
    assert {t.task_name for t in db.find_tasks(project_id=gamma.db_id)} == {"loose", "chat"}
    committed = sum(plan.expected("task")[t]["committed"] for t in ("loose", "chat"))
    assert f"budget $10.00, committed {money(committed)}" in flat(result)
    table = rows(run(db, "budget").output)
    assert table["gamma"][1] == money(committed)
    assert table["beta"][1] == "$0.00"  # chat's runs now count under gamma
    again = run(db, "budget", "--project", "gamma", "--add-task", "chat")
    assert again.exit_code == 0 and "Moved" not in again.output


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--project", "alpha", "-5"], 2, "the budget cannot be negative (got -5); use --clear"),
    (["--project", "alpha", "ten"], 2, "the budget must be a number of dollars, such as 500"),
    (["--project", "alpha", "inf"], 2, "the budget must be a finite number of dollars"),
    (["--project", "alpha", "nan"], 2, "the budget must be a finite number of dollars"),
    (["--project", "alpha", "1", "2"], 2, "one amount only"),
    (["--project", "alpha", "5", "--clear"], 2, "give an amount or --clear, not both"),
    (["--project", "alpha", "--run", "1", "5"], 2, "give either --project NAME or --run ID"),
    (["5"], 2, "give either --project NAME or --run ID"),
    (["--run", "1", "--add-task", "chat"], 2, "--add-task puts a task into a project"),
    (["--project", "new", "5", "--add-task", "nosuch"], 2, "no task named 'nosuch'"),
    (["--projetc", "alpha", "5"], 2, "unknown option '--projetc'"),
    (["--run", "999", "5"], 1, "task run 999 does not exist"),
])
def test_budget_refuses_bad_input_and_changes_nothing(
    db: MephistoDB, args: list[str], code: int, message: str
) -> None:
    make_plan(db)
    db.set_project_budget(db.find_projects(project_name="alpha")[0].db_id, 40.0)
    before = _caps(db)
    result = run(db, "budget", *args)
    assert result.exit_code == code, result.output
    assert message in flat(result)
    assert "Traceback" not in result.output
    assert _caps(db) == before  # no budget changed, no project made, no task moved


# -- mephisto cost -----------------------------------------------------------------------------


def test_cost_of_a_new_run(db: MephistoDB) -> None:
    result = run(db, "cost", "--units", "100", "--reward", "0.5", "--provider", "mturk",
                 "--planned-bonus", "0.1", "--budget", "80")
    assert result.exit_code == 0, result.output
    table = rows(result.output)
    assert table["rewards: 100 x $0.50"] == ["$50.00"]
    assert table["planned bonuses: 100 x $0.10"] == ["$10.00"]
    assert table["mturk fee: 20.0% of $60.00"] == ["$12.00"]
    assert table["total"] == ["$72.00"]
    assert table["this run (mephisto.task.budget)"] == ["$80.00", "$0.00", "$72.00", "$8.00"]
    free = run(db, "cost", "--units", "3", "--reward", "1", "--provider", "inhouse")
    assert free.exit_code == 0 and rows(free.output)["total"] == ["$3.00"]
    assert "No budget caps this launch." in free.output


def test_cost_against_a_project_budget(db: MephistoDB) -> None:
    plan = make_plan(db)
    alpha = plan.expected("project")["alpha"]["committed"]
    db.set_project_budget(plan.projects["alpha"], alpha + 50)

    fits = run(db, "cost", "--units", "40", "--reward", "1", "--provider", "mturk",
               "--project", "alpha")  # 40 + 8 fee = 48
    assert fits.exit_code == 0, fits.output
    assert rows(fits.output)["project 'alpha'"] == [
        money(alpha + 50), money(alpha), "$48.00", "$2.00"]

    bonuses_pass = run(db, "cost", "--units", "40", "--reward", "1", "--provider", "mturk",
                       "--project", "alpha", "--planned-bonus", "0.1")  # 52.80
    assert bonuses_pass.exit_code == 0
    assert "with the planned bonuses project 'alpha' is $2.80 short" in flat(bonuses_pass)

    refused = run(db, "cost", "--units", "50", "--reward", "1", "--provider", "mturk",
                  "--project", "alpha")  # 60 > 50 left
    assert refused.exit_code == 1
    assert (f"launching 50 units at $1.00 would bring the spending of project 'alpha' to "
            f"{money(alpha + 60)}, over its budget of {money(alpha + 50)}") in flat(refused)

    new = run(db, "cost", "--units", "5", "--reward", "1", "--provider", "mock",
              "--project", "delta")
    assert new.exit_code == 0
    assert "project 'delta' does not exist yet (a launch makes it): no cap" in flat(new)
    assert not db.find_projects(project_name="delta")  # a preview creates nothing


def test_cost_of_more_units_of_an_existing_run(db: MephistoDB) -> None:
    plan = make_plan(db)
    survey = plan.runs["survey"]["run_id"]
    committed = plan.expected("task")["survey"]["committed"]
    db.set_task_run_budget(survey, committed + 20)
    result = run(db, "cost", "--units", "10", "--reward", "1", "--run", survey)
    assert result.exit_code == 0, result.output
    table = rows(result.output)
    assert table["total"] == ["$12.00"]  # the run's provider: mturk's 20%
    assert table[f"task run {survey}"] == [money(committed + 20), money(committed), "$12.00",
                                           "$8.00"]


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--units", "0", "--reward", "1", "--provider", "mock"], 2, "--units must be at least 1"),
    (["--units", "2", "--reward", "-1", "--provider", "mock"], 2,
     "the reward must be a number of dollars >= 0"),
    (["--units", "2", "--reward", "1", "--provider", "mock", "--planned-bonus", "-0.5"], 2,
     "the planned bonus must be a number of dollars >= 0"),
    (["--units", "2", "--reward", "1", "--provider", "mock", "--budget", "-3"], 2,
     "--budget must be a number of dollars >= 0"),
    (["--units", "2", "--reward", "1"], 2, "--provider is needed for a new run"),
    (["--units", "2", "--reward", "1", "--provider", "nope"], 2,
     "Unknown provider type 'nope'. Valid provider types:"),
    (["--units", "2", "--reward", "abc", "--provider", "mock"], 2, "'abc' is not a valid float"),
    (["--units", "2", "--reward", "1", "--run", "1", "--project", "alpha"], 2,
     "--run previews more units of an existing run"),
    (["--units", "2", "--reward", "1", "--run", "1", "--provider", "prolific"], 2,
     "task run 1 runs on 'mturk', not 'prolific'"),
    (["--units", "2", "--reward", "1", "--run", "999"], 1, "task run 999 does not exist"),
])
def test_cost_explains_bad_input(sqlite_db: MephistoDB, args: list[str], code: int,
                                 message: str) -> None:
    make_plan(sqlite_db)
    result = run(sqlite_db, "cost", *args)
    assert result.exit_code == code, result.output
    assert message in flat(result)
