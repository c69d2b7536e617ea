"""Review decisions that reach the run's crowd provider as well as the database, and are
recorded (Mephisto's `worker_review`).

`Agent.approve_work()` and friends record a status in the data model only; the
provider's `approve_work` (pay on MTurk, record on the in-house provider) is a separate
call. `review_unit` makes one reviewer's decision about one unit -- a status (approve,
reject with a reason, soft-reject), a bonus, a block or unblock, a qualification granted
or revoked, any of them together -- in an order that never does anything twice:

1. everything is checked first: the status change against the transition table
   (`InvalidTransition`), the bonus against the provider's capabilities and the budgets
   (`BudgetExceeded`), the qualification's name; a refused decision reaches nobody;
2. the provider is told of the status, block and qualification (calls it accepts
   twice, so a decision retried after a crash is safe);
3. one transaction records it all: the agent's status, the block, the grant, the bonus
   as a payment (`recorded`, the budgets checked again under lock) and the review row;
4. the bonus is paid (`operations.payments`): if that fails the payment stays to be
   retried (`retry_payment`, `settle_payments`) and is never made twice;
5. with `send_feedback`, the note goes to the worker through the provider's messages
   (`send_feedback_message`); the decision stands if that fails (a warning says so).

If step 2 fails nothing is recorded and the decision can be made again. `review_units`
makes the same decision over many units, unit by unit, and reports each outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mephisto.abstractions.crowd_provider import Capability, CrowdProvider
from mephisto.data_model.agent import Agent
from mephisto.data_model.status import AGENT_TRANSITIONS, AgentState
from mephisto.data_model.unit import Unit
from mephisto.errors import (
    EntryDoesNotExist,
    InvalidTransition,
    MephistoError,
    ProviderError,
)
from mephisto.operations import budget
from mephisto.operations.payments import send_payment
from mephisto.operations.registry import get_crowd_provider_from_type

if TYPE_CHECKING:
    from mephisto.data_model.payment import Payment
    from mephisto.db.database import MephistoDB

logger = logging.getLogger(__name__)

__all__ = [
    "Decision",
    "ReviewOutcome",
    "approve_work",
    "provider_of",
    "reject_work",
    "review_unit",
    "review_units",
    "soft_reject_work",
]

_STATUS_OF = {
    "approve": AgentState.APPROVED,
    "reject": AgentState.REJECTED,
    "soft_reject": AgentState.SOFT_REJECTED,
}
MAX_NOTE = 2000  # characters of a note or reason (providers cap theirs lower still)


@dataclass(frozen=True)
class Decision:
    """What a reviewer decided about a unit. `action`: "approve", "reject" (needs a
    `note`: the reason the worker sees), "soft_reject" or None (no status change).
    `bonus` in dollars, with `bonus_reason` (default: the note, else a thank-you).
    `grant`: (qualification name, value); `revoke`: a qualification name.
    `send_feedback`: also send the note to the worker as a message (where the provider
    has messages: `Capability.MESSAGES`)."""

    action: str | None = None
    note: str | None = None
    bonus: float | None = None
    bonus_reason: str | None = None
    block: bool = False
    block_reason: str | None = None
    unblock: bool = False
    grant: tuple[str, int] | None = None
    revoke: str | None = None
    send_feedback: bool = False

    def check(self) -> None:
        """Raise `MephistoError` for a decision that cannot be made, whatever the unit."""
        if self.action is not None and self.action not in _STATUS_OF:
            raise MephistoError(f"unknown review action {self.action!r}; "
                                f"valid: {', '.join(_STATUS_OF)}")
        for name, text in (("note", self.note), ("bonus reason", self.bonus_reason),
                           ("block reason", self.block_reason)):
            if text is not None and len(text) > MAX_NOTE:
                raise MephistoError(f"the {name} is {len(text)} characters; at most {MAX_NOTE}")
        if self.action == "reject" and not (self.note or "").strip():
            raise MephistoError("a rejection needs a reason: the worker is shown it")
        if self.bonus is not None:
            if isinstance(self.bonus, bool) or not isinstance(self.bonus, (int, float)) \
                    or not 0 < self.bonus < 1e6:
                raise MephistoError(f"a bonus is a positive amount of dollars, not {self.bonus!r}")
            if self.action == "reject":
                raise MephistoError("a rejected unit gets no bonus")
        if self.block and self.unblock:
            raise MephistoError("a decision cannot both block and unblock the worker")
        if self.grant is not None and self.revoke is not None \
                and self.grant[0] == self.revoke:
            raise MephistoError("a decision cannot both grant and revoke a qualification")
        if self.grant is not None and (not self.grant[0] or isinstance(self.grant[1], bool)
                                       or not isinstance(self.grant[1], int)):
            raise MephistoError("a grant is a qualification name and an integer value")
        if self.send_feedback and not (self.note or "").strip():
            raise MephistoError("feedback to the worker needs a note to send")
        if self.is_empty:
            raise MephistoError("the decision does nothing: choose an action, a bonus, "
                                "a block or a qualification")

    @property
    def is_empty(self) -> bool:
        return (self.action is None and self.bonus is None and not self.block
                and not self.unblock and self.grant is None and self.revoke is None)


@dataclass
class ReviewOutcome:
    """What a decision did to one unit: the review row's id, the bonus payment (None if
    no bonus; `payment.is_paid` False if paying failed and waits for a retry), or the
    `error` that stopped it (nothing recorded then)."""

    unit_id: str
    review_id: str | None = None
    payment: Payment | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    feedback_sent: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


def provider_of(agent: Agent) -> CrowdProvider:
    """The provider of the agent's run, configured as the run was launched."""
    return _provider_for_run(agent.db, agent.task_run_id)


def _provider_for_run(db: MephistoDB, task_run_id: str) -> CrowdProvider:
    from mephisto.data_model.task_run import TaskRun

    run = TaskRun(db, task_run_id)
    cls = get_crowd_provider_from_type(run.provider_type)
    provider: CrowdProvider = cls(db, run.args)
    return provider


def _may_become(agent: Agent, target: AgentState) -> None:
    status = agent.get_status()
    if target not in AGENT_TRANSITIONS[status]:
        raise InvalidTransition("agent", agent.db_id, str(status), str(target))


def _qualification_id(db: MephistoDB, name: str, create: bool) -> str:
    found = db.find_qualifications(qualification_name=name)
    if found:
        return found[0].db_id
    if not create:
        raise EntryDoesNotExist(f"no qualification named {name!r}")
    return db.find_or_make_qualification(name)  # another reviewer may make it meanwhile


def review_unit(
    db: MephistoDB, unit_id: str, decision: Decision, provider: CrowdProvider | None = None
) -> ReviewOutcome:
    """Make `decision` about the unit's current agent (see the module's docstring).
    Raises `MephistoError` (nothing recorded) when the decision cannot be made; a bonus
    the provider failed to pay is reported on the outcome's payment, not raised."""
    decision.check()
    unit = Unit(db, unit_id)
    agent = unit.get_assigned_agent()
    if agent is None:
        raise MephistoError(f"unit {unit_id} has no worker's submission to review")
    provider = provider or provider_of(agent)
    worker = agent.get_worker()
    requester = unit.get_requester()
    outcome = ReviewOutcome(str(unit_id))

    # 1. checks
    target = _STATUS_OF.get(decision.action or "")
    if target is not None:
        _may_become(agent, target)
    if decision.bonus is not None:
        if Capability.BONUS not in provider.CAPABILITIES:
            raise ProviderError(str(provider.PROVIDER_TYPE), "has no bonuses to pay")
        final = target or agent.get_status()
        if final not in (AgentState.APPROVED, AgentState.SOFT_REJECTED, AgentState.COMPLETED):
            raise MephistoError(f"unit {unit_id} is {final}: only approved or submitted "
                                "work gets a bonus")
        budget.check_spending(db, unit.task_run_id, float(decision.bonus),
                              f"a bonus of ${decision.bonus:,.2f}")
    if decision.revoke is not None:
        _qualification_id(db, decision.revoke, create=False)
    if decision.send_feedback and Capability.MESSAGES not in provider.CAPABILITIES:
        raise ProviderError(str(provider.PROVIDER_TYPE), "has no messages to workers: "
                            "leave out send_feedback")

    # 2. the provider
    if target is AgentState.APPROVED:
        provider.approve_work(agent, decision.note)
    elif target is AgentState.REJECTED:
        provider.reject_work(agent, decision.note or "")
    elif target is AgentState.SOFT_REJECTED:
        provider.soft_reject_work(agent, decision.note)
    block_reason = decision.block_reason or decision.note or "blocked after review"
    if Capability.BLOCK in provider.CAPABILITIES:
        if decision.block:
            provider.block_worker(worker, requester, block_reason)
        elif decision.unblock:
            provider.unblock_worker(worker, requester)
    if Capability.QUALIFICATIONS in provider.CAPABILITIES:
        if decision.grant is not None:
            provider.grant_qualification(worker, decision.grant[0], decision.grant[1])
        if decision.revoke is not None:
            provider.revoke_qualification(worker, decision.revoke)

    # 3. one transaction records it all
    payment_id = None
    with db.transaction() as conn:
        if target is not None:
            agent.update_status(target)
        if decision.block:
            db.block_worker(worker.db_id, requester.db_id, block_reason)
        elif decision.unblock:
            db.unblock_worker(worker.db_id, requester.db_id)
        granted = revoked = None
        if decision.grant is not None:
            granted = _qualification_id(db, decision.grant[0], create=True)
            db.grant_qualification(granted, worker.db_id, decision.grant[1])
        if decision.revoke is not None:
            revoked = _qualification_id(db, decision.revoke, create=False)
            db.revoke_qualification(revoked, worker.db_id)
        if decision.bonus is not None:
            db.lock_for_spending(conn, unit.task_run_id)
            budget.check_spending(db, unit.task_run_id, float(decision.bonus),
                                  f"a bonus of ${decision.bonus:,.2f}")
            payment_id = db.new_payment(
                requester.db_id, worker.db_id, str(provider.PROVIDER_TYPE),
                float(decision.bonus),
                decision.bonus_reason or decision.note or "Thank you for your work.",
                unit_id=unit.db_id,
            )
        review_id = db.new_worker_review(
            worker.db_id, status=None if target is None else str(target),
            unit_id=unit.db_id, review_note=decision.note, bonus=decision.bonus,
            agent_id=agent.db_id, task_id=unit.task_id, task_run_id=unit.task_run_id,
            requester_id=requester.db_id, payment_id=payment_id,
            blocked_worker=decision.block, unblocked_worker=decision.unblock,
        )
        if granted is not None:
            db.update_worker_review(unit.db_id, granted, worker.db_id,
                                    value=decision.grant[1] if decision.grant else None)
        if revoked is not None:
            db.update_worker_review(unit.db_id, revoked, worker.db_id, revoke=True)
    outcome.review_id = review_id
    if decision.block and Capability.BLOCK not in provider.CAPABILITIES:
        outcome.warnings.append(f"{provider.PROVIDER_TYPE} has no blocks of its own: the "
                                "worker is blocked from this requester's runs only here")

    # 4. pay
    if payment_id is not None:
        from mephisto.data_model.payment import Payment

        try:
            outcome.payment = send_payment(db, provider, Payment(db, payment_id))
        except ProviderError as exc:
            outcome.payment = Payment(db, payment_id)
            outcome.warnings.append(f"the bonus is recorded but not paid yet: {exc}")

    # 5. the note, to the worker
    if decision.send_feedback:
        try:
            provider.send_feedback_message(worker, unit, (decision.note or "").strip())
            outcome.feedback_sent = True
        except ProviderError as exc:
            outcome.warnings.append(f"the decision is recorded; the note did not reach the "
                                    f"worker: {exc}")
    return outcome


def review_units(
    db: MephistoDB,
    unit_ids: Iterable[str],
    decision: Decision,
    progress: Callable[[int], None] | None = None,
) -> list[ReviewOutcome]:
    """The same decision over many units (a bulk approval, say): each unit on its own,
    so one refusal does not stop the others; its error is on its outcome. `progress`
    is called after each unit with the number done."""
    decision.check()
    providers: dict[str, CrowdProvider] = {}
    outcomes = []
    for done, unit_id in enumerate(unit_ids, 1):
        try:
            run_id = db.get_unit(unit_id)["task_run_id"]
            if run_id not in providers:
                providers[run_id] = _provider_for_run(db, run_id)
            outcomes.append(review_unit(db, unit_id, decision, providers[run_id]))
        except MephistoError as exc:
            outcomes.append(ReviewOutcome(str(unit_id), error=str(exc)))
        if progress is not None:
            progress(done)
    return outcomes


# -- one decision about one agent (the calls of earlier versions) -----------------------


def _about_agent(agent: Agent, decision: Decision, provider: CrowdProvider | None) -> None:
    unit = agent.get_unit()
    if unit.agent_id != agent.db_id:
        raise MephistoError(f"agent {agent.db_id} is no longer its unit's current agent")
    review_unit(agent.db, unit.db_id, decision, provider)


def approve_work(agent: Agent, review_note: str | None = None,
                 provider: CrowdProvider | None = None) -> None:
    _about_agent(agent, Decision("approve", review_note), provider)


def soft_reject_work(agent: Agent, review_note: str | None = None,
                     provider: CrowdProvider | None = None) -> None:
    _about_agent(agent, Decision("soft_reject", review_note), provider)


def reject_work(agent: Agent, reason: str, provider: CrowdProvider | None = None) -> None:
    _about_agent(agent, Decision("reject", reason), provider)
