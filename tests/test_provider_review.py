"""Review decisions (`tools/provider_review.py`): checked first, the provider told, one
transaction recording status, review row, block, grant and payment, then the payment;
each effect exactly once, also through failures and crashes."""

from __future__ import annotations

from typing import Any

import pytest

from mephisto.abstractions.providers.mock import MockProvider
from mephisto.db.database import MephistoDB
from mephisto.errors import (
    BudgetExceeded,
    EntryDoesNotExist,
    InvalidTransition,
    MephistoError,
    ProviderError,
)
from mephisto.operations import payments
from mephisto.testing.db_contract import Run
from mephisto.tools.provider_review import Decision, review_unit, review_units


@pytest.fixture
def run(mephisto_db: MephistoDB) -> Run:
    return Run(mephisto_db)


def submitted(db: MephistoDB, run: Run, n: int) -> list[str]:
    """`n` units whose workers (w0, w1, ...) submitted."""
    units = run.units(n)
    for i, unit_id in enumerate(units):
        db.update_agent(run.agent(unit_id, f"w{i}"), status="completed")
    return units


def agent_of(db: MephistoDB, unit_id: str) -> dict[str, Any]:
    return db.get_agent(db.get_unit(unit_id)["agent_id"])


def mock_records(db: MephistoDB, kind: str) -> dict[str, Any]:
    return db.find_provider_records("mock", kind)


def test_one_decision_does_everything_once(mephisto_db: MephistoDB, run: Run) -> None:
    db = mephisto_db
    (unit_id,) = submitted(db, run, 1)
    agent = agent_of(db, unit_id)
    outcome = review_unit(db, unit_id, Decision(
        "approve", note="well done", bonus=0.75, bonus_reason="careful work",
        grant=("trusted", 2)))
    assert outcome.ok and outcome.warnings == []
    assert agent_of(db, unit_id)["status"] == "approved"
    assert db.get_unit(unit_id)["status"] == "accepted"
    (review,) = db.find_worker_reviews(unit_id=unit_id)
    assert review["id"] == outcome.review_id
    assert (review["status"], review["review_note"], review["bonus"]) == (
        "approved", "well done", 0.75)
    assert review["agent_id"] == agent["agent_id"] and review["task_run_id"] == run.task_run_id
    qual = db.find_qualifications(qualification_name="trusted")[0].db_id
    assert (review["updated_qualification_id"], review["updated_qualification_value"]) == (
        qual, 2)
    assert db.get_granted_qualification(qual, agent["worker_id"])["value"] == 2
    (payment,) = db.find_payments(unit_id=unit_id)
    assert payment.db_id == review["payment_id"] == outcome.payment.db_id  # type: ignore[union-attr]
    assert payment.is_paid and payment.reason == "careful work" and payment.amount == 0.75
    assert mock_records(db, "review") == {
        agent["agent_id"]: {"decision": "approved", "note": "well done"}}
    assert len(mock_records(db, "bonus")) == 1 and len(mock_records(db, "qualification")) == 1


@pytest.mark.parametrize(("decision", "words"), [
    (Decision("reject"), "needs a reason"),
    (Decision("reject", note="bad", bonus=1.0), "no bonus"),
    (Decision("approve", bonus=-1.0), "positive amount"),
    (Decision("approve", bonus=True), "positive amount"),  # type: ignore[arg-type]
    (Decision("maybe"), "unknown review action"),
    (Decision(), "does nothing"),
    (Decision(block=True, unblock=True), "both block and unblock"),
    (Decision("approve", note="x" * 5000), "at most"),
    (Decision(grant=("q", "high")), "integer value"),  # type: ignore[arg-type]
    (Decision("approve", send_feedback=True), "needs a note"),
])
def test_a_decision_that_cannot_be_made_changes_nothing(
    mephisto_db: MephistoDB, run: Run, decision: Decision, words: str
) -> None:
    db = mephisto_db
    (unit_id,) = submitted(db, run, 1)
    with pytest.raises(MephistoError, match=words):
        review_unit(db, unit_id, decision)
    assert agent_of(db, unit_id)["status"] == "completed"
    assert db.find_worker_reviews() == [] and db.find_payments() == []
    assert mock_records(db, "review") == {}


def test_a_decision_the_status_table_forbids_reaches_nobody(
    mephisto_db: MephistoDB, run: Run
) -> None:
    db = mephisto_db
    (unit_id,) = submitted(db, run, 1)
    review_unit(db, unit_id, Decision("approve"))
    with pytest.raises(InvalidTransition):
        review_unit(db, unit_id, Decision("reject", note="changed my mind"))
    assert len(db.find_worker_reviews(unit_id=unit_id)) == 1
    assert [r["decision"] for r in mock_records(db, "review").values()] == ["approved"]
    with pytest.raises(EntryDoesNotExist):
        review_unit(db, unit_id, Decision(revoke="never-made"))
    unreviewed = run.units(1)[0]
    with pytest.raises(MephistoError, match="no worker's submission"):
        review_unit(db, unreviewed, Decision("approve"))


def test_a_provider_refusal_records_nothing_and_the_decision_can_be_made_again(
    mephisto_db: MephistoDB, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = mephisto_db
    (unit_id,) = submitted(db, run, 1)
    real = MockProvider.approve_work

    def down(self: MockProvider, agent: Any, note: str | None = None) -> None:
        raise ProviderError("mock", "unreachable", retryable=True)

    monkeypatch.setattr(MockProvider, "approve_work", down)
    with pytest.raises(ProviderError):
        review_unit(db, unit_id, Decision("approve", bonus=1.0))
    assert agent_of(db, unit_id)["status"] == "completed"
    assert db.find_worker_reviews() == [] and db.find_payments() == []
    monkeypatch.setattr(MockProvider, "approve_work", real)
    assert review_unit(db, unit_id, Decision("approve", bonus=1.0)).ok
    assert len(db.find_worker_reviews()) == 1 and len(db.find_payments()) == 1


def test_a_bonus_the_provider_fails_to_pay_waits_and_is_paid_once(
    mephisto_db: MephistoDB, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = mephisto_db
    (unit_id,) = submitted(db, run, 1)
    real = MockProvider.pay_bonus

    def flaky(self: MockProvider, payment: Any) -> str:
        raise ProviderError("mock", "timed out", retryable=True)

    monkeypatch.setattr(MockProvider, "pay_bonus", flaky)
    outcome = review_unit(db, unit_id, Decision("approve", bonus=2.0))
    assert outcome.ok and outcome.payment is not None and not outcome.payment.is_paid
    assert "recorded but not paid" in outcome.warnings[0]
    assert agent_of(db, unit_id)["status"] == "approved"  # the decision itself stands
    monkeypatch.setattr(MockProvider, "pay_bonus", real)
    settled = payments.settle_payments(db, MockProvider(db))
    assert [p.is_paid for p in settled] == [True]
    assert payments.settle_payments(db, MockProvider(db)) == []  # nothing left to do
    assert len(db.find_payments()) == 1 and len(mock_records(db, "bonus")) == 1


def test_a_crash_between_recording_and_paying_is_settled_once(
    mephisto_db: MephistoDB, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies after the decision's transaction committed, before the provider
    was asked to pay: the payment is `recorded`, and settling pays it exactly once."""
    db = mephisto_db
    (unit_id,) = submitted(db, run, 1)

    class Crash(BaseException):
        pass

    def die(*_: Any) -> Any:
        raise Crash

    from mephisto.tools import provider_review

    monkeypatch.setattr(provider_review, "send_payment", die)
    with pytest.raises(Crash):
        review_unit(db, unit_id, Decision("approve", bonus=1.5))
    (payment,) = db.find_payments()
    assert payment.status == "recorded" and mock_records(db, "bonus") == {}
    assert len(db.find_worker_reviews()) == 1 and agent_of(db, unit_id)["status"] == "approved"
    monkeypatch.undo()
    payments.settle_payments(db, MockProvider(db))
    payments.settle_payments(db, MockProvider(db))
    (payment,) = db.find_payments()
    assert payment.is_paid and len(mock_records(db, "bonus")) == 1


def test_a_bonus_over_budget_is_refused_before_the_provider_hears(
    mephisto_db: MephistoDB, run: Run
) -> None:
    db = mephisto_db
    (unit_id,) = submitted(db, run, 1)
    db.set_task_run_budget(run.task_run_id, 1.0)  # the unit's 0.25 leaves 0.75
    with pytest.raises(BudgetExceeded, match=f"task run {run.task_run_id}"):
        review_unit(db, unit_id, Decision("approve", bonus=0.8))
    assert agent_of(db, unit_id)["status"] == "completed" and mock_records(db, "review") == {}
    assert db.find_payments() == [] and db.find_worker_reviews() == []
    assert review_unit(db, unit_id, Decision("approve", bonus=0.75)).payment.is_paid  # type: ignore[union-attr]


def test_blocks_and_unblocks_reach_the_provider_and_the_pool(
    mephisto_db: MephistoDB, run: Run
) -> None:
    db = mephisto_db
    first, second = submitted(db, run, 2)
    worker_id = agent_of(db, first)["worker_id"]
    review_unit(db, first, Decision("reject", note="copied answers", block=True))
    assert db.is_worker_blocked(worker_id, run.requester_id)
    assert mock_records(db, "block") == {
        f"{run.requester_id}:{worker_id}": {"reason": "copied answers"}}
    (review,) = db.find_worker_reviews(unit_id=first)
    assert review["blocked_worker"] is True and review["status"] == "rejected"
    review_unit(db, first, Decision(unblock=True))
    assert not db.is_worker_blocked(worker_id, run.requester_id)
    assert mock_records(db, "block") == {}
    assert [r["unblocked_worker"] for r in db.find_worker_reviews(unit_id=first)] == [
        False, True]
    assert not db.is_worker_blocked(agent_of(db, second)["worker_id"])


def test_a_bulk_decision_reports_each_unit(mephisto_db: MephistoDB, run: Run) -> None:
    db = mephisto_db
    units = submitted(db, run, 5)
    review_unit(db, units[2], Decision("reject", note="empty"))
    done: list[int] = []
    outcomes = review_units(db, [*units, "999999"], Decision("approve"), progress=done.append)
    assert [o.unit_id for o in outcomes] == [*units, "999999"]
    assert [o.ok for o in outcomes] == [True, True, False, True, True, False]
    assert "rejected" in (outcomes[2].error or "") and "999999" in (outcomes[5].error or "")
    assert done == [1, 2, 3, 4, 5, 6]
    statuses = [agent_of(db, u)["status"] for u in units]
    assert statuses == ["approved", "approved", "rejected", "approved", "approved"]
    assert len(db.find_worker_reviews()) == 5  # 4 approvals + the rejection


def test_feedback_reaches_the_worker_once_and_a_failure_does_not_undo_the_decision(
    mephisto_db: MephistoDB, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = mephisto_db
    first, second = submitted(db, run, 2)
    outcome = review_unit(db, first, Decision("soft_reject", note="Answers too short.",
                                              send_feedback=True))
    assert outcome.ok and outcome.feedback_sent and outcome.warnings == []
    (message,) = mock_records(db, "message").values()
    assert message == {"worker_id": agent_of(db, first)["worker_id"], "unit_id": first,
                       "text": "Answers too short."}

    def down(self: MockProvider, worker: Any, unit: Any, text: str) -> None:
        raise ProviderError("mock", "messages are down", retryable=True)

    monkeypatch.setattr(MockProvider, "send_feedback_message", down)
    outcome = review_unit(db, second, Decision("approve", note="Great.", send_feedback=True))
    assert outcome.ok and not outcome.feedback_sent
    assert "did not reach the worker" in outcome.warnings[0]
    assert agent_of(db, second)["status"] == "approved"
    assert len(db.find_worker_reviews(unit_id=second)) == 1
    assert len(mock_records(db, "message")) == 1


def test_feedback_where_the_provider_has_no_messages_is_refused_first(
    mephisto_db: MephistoDB, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mephisto.abstractions.crowd_provider import Capability

    db = mephisto_db
    (unit_id,) = submitted(db, run, 1)
    monkeypatch.setattr(MockProvider, "CAPABILITIES",
                        frozenset(Capability) - {Capability.MESSAGES})
    with pytest.raises(ProviderError, match="no messages"):
        review_unit(db, unit_id, Decision("approve", note="Great.", send_feedback=True))
    assert agent_of(db, unit_id)["status"] == "completed"
    assert db.find_worker_reviews() == [] and mock_records(db, "review") == {}
