"""Budgets: what runs and projects commit, the caps on launches and bonuses, the cost
preview at launch."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState
from mephisto.abstractions.providers.mock import MockProvider
from mephisto.db.database import MephistoDB
from mephisto.errors import BudgetExceeded
from mephisto.operations import budget
from mephisto.operations.operator import Operator
from mephisto.operations.payments import pay_bonus
from mephisto.testing.db_contract import Run
from mephisto.testing.fixtures import LaunchedRun, static_run_config


def _data(n: int) -> list[dict[str, Any]]:
    return [{"text": f"t{i}"} for i in range(n)]


# -- spending ----------------------------------------------------------------------------


def test_fee_rates_come_from_the_provider_classes() -> None:
    assert budget.fee_rate("mock") == 0.0
    assert budget.fee_rate("inhouse") == 0.0
    assert budget.fee_rate("mturk") == pytest.approx(0.2)
    assert budget.fee_rate("mturk_sandbox") == pytest.approx(0.2)
    assert budget.fee_rate("prolific") == pytest.approx(1 / 3)
    assert budget.fee_rate("no-such-provider") == 0.0


def _approve(db: MephistoDB, run: Run, unit_id: str, worker: str) -> str:
    agent_id = run.agent(unit_id, worker)
    db.update_agent(agent_id, status="completed")
    db.update_agent(agent_id, status="approved")
    return str(db.get_agent(agent_id)["worker_id"])


def test_spending_counts_what_will_be_paid(mephisto_db: MephistoDB) -> None:
    db, run = mephisto_db, Run(mephisto_db)
    launched = run.units(4)  # 4 x 0.25 committed
    run.units(2, status="created")  # created units will be launched: committed
    worker_id = _approve(db, run, launched[0], "w1")
    rejected = run.agent(launched[1], "w2")
    db.update_agent(rejected, status="completed")
    db.update_agent(rejected, status="rejected")  # a rejected unit is not paid
    paid = db.new_payment(run.requester_id, worker_id, "mock", 2.0, "great", unit_id=launched[0])
    db.update_payment(paid, "paid", provider_ref="r")
    db.new_payment(run.requester_id, worker_id, "mock", 1.0, "more", unit_id=launched[0])
    spent = budget.run_spending(db, run.task_run_id)
    assert spent.rewards_committed == pytest.approx(5 * 0.25)
    assert spent.rewards_paid == pytest.approx(0.25)
    assert (spent.bonuses_committed, spent.bonuses_paid, spent.bonuses) == (3.0, 2.0, 2)
    assert spent.committed == pytest.approx(1.25 + 3.0) and spent.fees_committed == 0
    assert spent.units == {"accepted": 1, "rejected": 1, "launched": 2, "created": 2}


def test_project_spending_adds_its_runs(mephisto_db: MephistoDB) -> None:
    db = mephisto_db
    project = db.new_project("study")
    a, b, outside = Run(db, "a"), Run(db, "b"), Run(db, "c")
    for r in (a, b):
        db.update_task(r.task_id, project_id=project)
    a.units(2)
    b.units(3)
    outside.units(10)
    assert budget.project_spending(db, project).rewards_committed == pytest.approx(5 * 0.25)
    assert budget.project_spending(db, project).units == {"launched": 5}


def test_check_spending_names_the_cap_and_counts_fees(mephisto_db: MephistoDB) -> None:
    db, run = mephisto_db, Run(mephisto_db)
    run.units(4)  # $1.00 committed
    db.set_task_run_budget(run.task_run_id, 2.0)
    budget.check_spending(db, run.task_run_id, 1.0, "x")  # exactly at the cap: fine
    with pytest.raises(BudgetExceeded) as refused:
        budget.check_spending(db, run.task_run_id, 1.01, "a bonus of $1.01")
    assert refused.value.cap == f"task run {run.task_run_id}" and refused.value.limit == 2.0
    assert "a bonus of $1.01" in str(refused.value) and "mephisto budget" in str(refused.value)
    project = db.new_project("p")
    db.update_task(run.task_id, project_id=project)
    db.set_task_run_budget(run.task_run_id, None)
    db.set_project_budget(project, 1.5)
    with pytest.raises(BudgetExceeded, match="project 'p'"):
        budget.check_spending(db, run.task_run_id, 0.6, "x")


# -- launching ---------------------------------------------------------------------------


@pytest.fixture
def launch(operator: Operator, task_html: Any) -> Callable[..., LaunchedRun]:
    def go(data: Any, **task: Any) -> LaunchedRun:
        task_run_id = operator.launch_task_run(static_run_config(task_html, **task),
                                               SharedStaticTaskState(static_task_data=data))
        return LaunchedRun(operator, task_run_id)

    return go


def test_a_launch_over_the_run_budget_is_refused_before_anything_is_made(
    launch: Callable[..., LaunchedRun], mephisto_db: MephistoDB
) -> None:
    with pytest.raises(BudgetExceeded) as refused:
        launch(_data(10), task_reward=0.5, budget=4.99)  # $5.00 of rewards
    assert refused.value.cap.startswith("task run ") and refused.value.needed == pytest.approx(5)
    (run,) = mephisto_db.find_task_runs()
    assert run.is_completed and mephisto_db.find_units(task_run_id=run.db_id) == []
    assert mephisto_db.find_provider_records("mock", "units") == {}  # nothing published


def test_a_launch_within_budget_logs_its_cost_preview(
    launch: Callable[..., LaunchedRun], mephisto_db: MephistoDB, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="mephisto.operations.task_launcher"):
        run = launch(_data(10), task_reward=0.5, budget=6, planned_bonus_per_unit=0.1,
                     project_name="pilot")
    lines = [r.getMessage() for r in caplog.records]
    preview = next(line for line in lines if "cost preview" in line)
    assert "10 units x $0.50 = $5.00" in preview and "planned bonuses $1.00" in preview
    assert preview.endswith("= $6.00")
    cap = next(line for line in lines if "budget $6.00" in line)
    assert "$0.00 left after this launch" in cap
    assert mephisto_db.get_task_run(run.task_run_id)["budget"] == 6.0
    (project,) = mephisto_db.find_projects(project_name="pilot")
    assert mephisto_db.get_task(mephisto_db.get_task_run(run.task_run_id)["task_id"])[
        "project_id"] == project.db_id
    assert run.unit_statuses() == {"launched": 10}


def test_the_project_budget_caps_its_runs_together(
    launch: Callable[..., LaunchedRun], mephisto_db: MephistoDB
) -> None:
    first = launch(_data(4), task_reward=1.0, project_name="study", task_name="one")
    (project,) = mephisto_db.find_projects(project_name="study")
    mephisto_db.set_project_budget(project.db_id, 6.0)
    with pytest.raises(BudgetExceeded) as refused:
        launch(_data(3), task_reward=1.0, project_name="study", task_name="two")
    assert refused.value.cap == "project 'study'" and refused.value.needed == pytest.approx(7)
    assert first.unit_statuses() == {"launched": 4}
    launch(_data(2), task_reward=1.0, project_name="study", task_name="three")  # fits


def test_a_data_stream_stops_at_the_cap_and_the_run_carries_on(
    operator: Operator, task_html: Any, mephisto_db: MephistoDB,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def items() -> Iterator[dict[str, str]]:
        for i in range(10):
            yield {"text": f"s{i}"}

    with caplog.at_level(logging.ERROR):
        task_run_id = operator.launch_task_run(
            static_run_config(task_html, task_reward=1.0, budget=5.0,
                              max_num_concurrent_units=2),
            SharedStaticTaskState(static_task_data=items()))
        run = LaunchedRun(operator, task_run_id)
        run.simulate(2)
        assert run.wait(30)
    counts = run.unit_statuses()
    assert sum(counts.values()) <= 5 and counts.get("completed", 0) == sum(counts.values())
    assert any("stops launching units" in r.getMessage() and "over its budget" in r.getMessage()
               for r in caplog.records)


# -- bonuses -----------------------------------------------------------------------------


def test_a_bonus_over_the_cap_is_refused_and_not_recorded(mephisto_db: MephistoDB) -> None:
    db, run = mephisto_db, Run(mephisto_db)
    (unit_id,) = run.units(1)
    worker_id = _approve(db, run, unit_id, "w1")
    db.set_task_run_budget(run.task_run_id, 1.25)  # the unit's $0.25 + $1.00 of bonuses
    provider = MockProvider(db)
    assert pay_bonus(db, provider, worker_id, 1.0, "great", unit_id=unit_id).is_paid
    with pytest.raises(BudgetExceeded, match=f"task run {run.task_run_id}"):
        pay_bonus(db, provider, worker_id, 0.01, "more", unit_id=unit_id)
    assert [p.amount for p in db.find_payments(unit_id=unit_id)] == [1.0]
    assert len(db.find_provider_records("mock", "bonus")) == 1


def test_a_start_that_fails_after_serving_began_stops_the_server(
    operator: Operator, task_html: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A provider refusing at set-up (after the server is up): the launch fails and no
    server is left running for the run that never began."""
    import asyncio

    from mephisto.errors import ProviderError

    def refuse(*_: Any) -> None:
        raise ProviderError("mock", "refused for the test")

    monkeypatch.setattr(MockProvider, "setup_resources_for_task_run", refuse)
    with pytest.raises(ProviderError, match="refused for the test"):
        operator.launch_task_run(static_run_config(task_html),
                                 SharedStaticTaskState(static_task_data=_data(2)))

    async def serving() -> list[str]:
        return [t.get_name() for t in asyncio.all_tasks() if "server" in t.get_name()]

    assert asyncio.run_coroutine_threadsafe(serving(), operator._loop).result(10) == []
