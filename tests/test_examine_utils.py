"""Mephisto's interactive review helpers (`mephisto.tools.examine_utils`), driven with
scripted answers over a real database."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from mephisto.data_model.agent import Agent
from mephisto.data_model.status import AgentState, AssignmentState
from mephisto.data_model.unit import Unit
from mephisto.data_model.worker import Worker
from mephisto.db import batch
from mephisto.errors import EntryDoesNotExist
from mephisto.testing.entities import get_test_task_run
from mephisto.tools.examine_utils import (
    format_worker_stats,
    get_worker_stats,
    print_results,
    run_examine_by_worker,
    run_examine_or_review,
)

TASK = "test_task"  # the task get_test_task_run makes


def submitted_units(db: Any, workers: Iterable[str]) -> list[Unit]:
    """One submitted unit per worker name, in a run of "test_task" (answer: the index)."""
    names = list(workers)
    run_id = get_test_task_run(db)
    run = db.get_task_run(run_id)
    made = batch.new_assignments_with_units(db,
        run_id, [{"i": i} for i in range(len(names))], pay_amount=0.5, status="launched"
    )
    units = []
    for i, ((assignment_id, [unit_id]), name) in enumerate(zip(made, names, strict=True)):
        worker = db.find_or_new_worker(name, "mock")
        agent_id = db.new_agent(worker.db_id, unit_id, run["task_id"], run_id, assignment_id,
                                "mock", "mock", status=AgentState.IN_TASK)
        Agent.get(db, agent_id).mark_done(outputs={"answer": i})
        units.append(Unit.get(db, unit_id))
    return units


def script(*answers: str) -> Callable[[str], str]:
    """An `ask` that gives `answers` in order and fails on any further question."""
    pending = list(answers)

    def ask(question: str) -> str:
        assert pending, f"unexpected question: {question!r}"
        return pending.pop(0)

    ask.pending = pending  # type: ignore[attr-defined]
    return ask


def show(data: dict[str, Any]) -> str:
    return f"{data['worker_name']} answered {data['data']['outputs']['answer']}"


def statuses(units: list[Unit]) -> list[str]:
    return [str(u.get_status()) for u in units]


def test_review_by_worker_records_each_decision(mephisto_db: Any) -> None:
    db = mephisto_db
    units = submitted_units(db, ["alice", "alice", "bob", "carol"])
    said: list[str] = []
    ask = script(
        "r",  # review, not examine
        TASK, "soft_blocked", "good", "",  # task, block and approve qualifications, enter
        "A", "y",  # alice: accept all of hers, and grant her "good"
        "r", "spam", "y", "bad faith",  # bob: reject, with a reason, and block him
        "x", "p", "y",  # carol: a wrong key is asked again; pass, and soft-block her
    )
    run_examine_or_review(db, show, ask=ask, say=said.append)

    assert ask.pending == []  # type: ignore[attr-defined]
    assert statuses(units) == ["accepted", "accepted", "rejected", "soft_rejected"]
    agents = [u.get_assigned_agent() for u in units]
    assert [a.get_status() if a else None for a in agents] == [
        AgentState.APPROVED, AgentState.APPROVED, AgentState.REJECTED, AgentState.SOFT_REJECTED
    ]
    alice, bob, carol = (db.find_workers(worker_name=n)[0] for n in ("alice", "bob", "carol"))
    assert alice.is_qualified("good") and not alice.is_qualified("soft_blocked")
    assert carol.is_qualified("soft_blocked")
    assert bob.is_blocked() and not alice.is_blocked() and not carol.is_blocked()
    assert "alice answered 0" in said and "alice answered 1" in said
    assert any(line.startswith("Worker alice (1/2)") for line in said)

    # every decision is a worker_review row, and the provider was told of it
    reviews = {r["unit_id"]: r for r in db.find_worker_reviews()}
    assert len(db.find_worker_reviews()) == 4
    good = db.find_qualifications(qualification_name="good")[0].db_id
    soft = db.find_qualifications(qualification_name="soft_blocked")[0].db_id
    first, second, bob_unit, carol_unit = (reviews[u.db_id] for u in units)
    assert (first["status"], first["updated_qualification_id"]) == ("approved", good)
    assert (second["status"], second["updated_qualification_id"]) == ("approved", None)
    assert (bob_unit["status"], bob_unit["review_note"], bob_unit["blocked_worker"]) == (
        "rejected", "spam", True)
    assert (carol_unit["status"], carol_unit["updated_qualification_id"]) == (
        "soft_rejected", soft)
    told = db.find_provider_records("mock", "review")
    assert {a.db_id: told[a.db_id]["decision"] for a in agents if a} == {
        a.db_id: s for a, s in zip(agents, ["approved", "approved", "rejected",
                                              "soft_rejected"], strict=True) if a}
    assert told[agents[2].db_id]["note"] == "spam"  # type: ignore[union-attr]


def test_review_shows_a_workers_record_and_skips_reviewed_work(mephisto_db: Any) -> None:
    db = mephisto_db
    first, second = submitted_units(db, ["dana", "dana"])
    agent = first.get_assigned_agent()
    assert agent is not None
    agent.approve_work()
    said: list[str] = []
    ask = script("p")  # only the unreviewed unit is shown; not asked to soft-block
    run_examine_by_worker(db, show, task_name=TASK, ask=ask, say=said.append)
    assert statuses([first, second]) == ["accepted", "soft_rejected"]
    assert any("previous (1 | 0(0) / 1)" in line for line in said)
    assert not any("dana answered 0" in line for line in said)


def test_worker_stats() -> None:
    class FakeUnit:
        def __init__(self, worker_id: str, status: str) -> None:
            self.worker_id, self.db_status = worker_id, status

    units: list[Any] = [FakeUnit("1", "accepted"), FakeUnit("1", "rejected"),
                        FakeUnit("1", "soft_rejected"), FakeUnit("2", "completed")]
    stats = get_worker_stats(units)
    assert format_worker_stats("1", stats) == "(1 | 2(1) / 3)"
    assert format_worker_stats("2", stats) == "(First time worker!)"


def test_examine_prints_newest_first_within_bounds(mephisto_db: Any) -> None:
    db = mephisto_db
    submitted_units(db, ["a", "b", "c", "d"])
    said: list[str] = []
    run_examine_or_review(db, show, ask=script("e 1 3", TASK), say=said.append)
    assert said == ["c answered 2", "b answered 1"]
    said.clear()
    print_results(db, TASK, show, say=said.append)
    assert said == ["d answered 3", "c answered 2", "b answered 1", "a answered 0"]


def test_a_failing_formatter_is_reported_and_the_rest_shown(mephisto_db: Any) -> None:
    db = mephisto_db
    submitted_units(db, ["a", "b"])

    def fussy(data: dict[str, Any]) -> str:
        if data["worker_name"] == "b":
            raise KeyError("no such field")
        return show(data)

    said: list[str] = []
    print_results(db, TASK, fussy, say=said.append)
    assert any("Formatting the data of unit" in line and "no such field" in line for line in said)
    assert "(data could not be formatted)" in said
    assert said[-1] == "a answered 0"


def test_unknown_task_is_an_error(mephisto_db: Any) -> None:
    with pytest.raises(EntryDoesNotExist):
        run_examine_by_worker(mephisto_db, show, task_name="nope", ask=script(), say=print)


def test_no_qualification_questions_when_none_given(mephisto_db: Any) -> None:
    db = mephisto_db
    (unit,) = submitted_units(db, ["erin"])
    ask = script("r", TASK, "", "", "", "A")  # no approve qualification: nothing to grant
    run_examine_or_review(db, show, ask=ask, say=lambda _line: None)
    assert ask.pending == []  # type: ignore[attr-defined]
    assert unit.get_status() == AssignmentState.ACCEPTED
    assert Worker.get(db, unit.worker_id or "").get_granted_qualifications() == {}


def test_a_rejection_needs_a_reason_and_reuses_it_for_the_rest(mephisto_db: Any) -> None:
    db = mephisto_db
    units = submitted_units(db, ["fay", "fay", "fay"])
    ask = script("R", "", "  ", "off topic", "n")  # empty reasons are asked again
    run_examine_by_worker(db, show, task_name=TASK, ask=ask, say=lambda _line: None)
    assert ask.pending == []  # type: ignore[attr-defined]
    assert statuses(units) == ["rejected"] * 3
    notes = [r["review_note"] for r in db.find_worker_reviews()]
    assert notes == ["off topic"] * 3
    assert not any(r["blocked_worker"] for r in db.find_worker_reviews())


def test_a_refused_decision_is_shown_and_the_review_goes_on(
    mephisto_db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mephisto.abstractions.providers.mock import MockProvider
    from mephisto.errors import ProviderError

    db = mephisto_db
    units = submitted_units(db, ["gus", "hal"])
    real = MockProvider.approve_work
    refused: list[str] = []

    def once_down(self: MockProvider, agent: Any, note: str | None = None) -> None:
        if not refused:
            refused.append(agent.db_id)
            raise ProviderError("mock", "unreachable", retryable=True)
        real(self, agent, note)

    monkeypatch.setattr(MockProvider, "approve_work", once_down)
    said: list[str] = []
    run_examine_by_worker(db, show, task_name=TASK, ask=script("a", "a"), say=said.append)
    assert statuses(units) == ["completed", "accepted"]
    assert any(f"Could not record the decision on unit {units[0].db_id}" in line
               and "unreachable" in line for line in said)
    assert [r["unit_id"] for r in db.find_worker_reviews()] == [units[1].db_id]
