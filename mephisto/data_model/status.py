"""Statuses of units, assignments and agents, and the transitions between them.

Values are Mephisto's stored strings, so data moves between the two systems. The
tables below are the one rule for status changes: the database takes the allowed
current statuses of every status-changing UPDATE from `unit_update_sources` /
`agent_update_sources`, bulk statements included, and an illegal change raises
`InvalidTransition`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from mephisto.errors import InvalidTransition, UnknownStatus


class AssignmentState(StrEnum):
    """Status of a unit, and (derived from its units) of an assignment."""

    CREATED = "created"
    LAUNCHED = "launched"
    ASSIGNED = "assigned"
    COMPLETED = "completed"
    ACCEPTED = "accepted"
    MIXED = "mixed"
    REJECTED = "rejected"
    SOFT_REJECTED = "soft_rejected"
    EXPIRED = "expired"

    @classmethod
    def _missing_(cls, value: object) -> Any:
        raise UnknownStatus(f"{value!r} is not a unit status; valid: {', '.join(cls)}")

    @staticmethod
    def valid() -> list[AssignmentState]:
        return list(AssignmentState)

    @staticmethod
    def valid_unit() -> list[AssignmentState]:
        return [s for s in AssignmentState if s is not AssignmentState.MIXED]

    @staticmethod
    def incomplete() -> list[AssignmentState]:
        """Work not yet done: the run is not over while a unit is in one of these."""
        return [AssignmentState.CREATED, AssignmentState.LAUNCHED, AssignmentState.ASSIGNED]

    @staticmethod
    def completed() -> list[AssignmentState]:
        """A worker submitted; it may or may not be reviewed yet."""
        return [
            AssignmentState.COMPLETED,
            AssignmentState.ACCEPTED,
            AssignmentState.REJECTED,
            AssignmentState.SOFT_REJECTED,
        ]

    @staticmethod
    def final_unit() -> list[AssignmentState]:
        """Nothing more will happen to a unit in one of these without a person acting."""
        return [
            AssignmentState.ACCEPTED,
            AssignmentState.REJECTED,
            AssignmentState.SOFT_REJECTED,
            AssignmentState.EXPIRED,
        ]

    @staticmethod
    def payable() -> list[AssignmentState]:
        return [
            AssignmentState.LAUNCHED,
            AssignmentState.ASSIGNED,
            AssignmentState.COMPLETED,
            AssignmentState.ACCEPTED,
            AssignmentState.SOFT_REJECTED,
        ]


class AgentState(StrEnum):
    """Status of an agent (a worker's attempt at one unit) or an onboarding agent."""

    NONE = "none"
    ACCEPTED = "accepted"
    ONBOARDING = "onboarding"
    WAITING = "waiting"
    IN_TASK = "in task"
    COMPLETED = "completed"
    DISCONNECT = "disconnect"
    TIMEOUT = "timeout"
    PARTNER_DISCONNECT = "partner disconnect"
    EXPIRED = "expired"
    RETURNED = "returned"
    APPROVED = "approved"
    SOFT_REJECTED = "soft_rejected"
    REJECTED = "rejected"

    # Mephisto's spellings (aliases of the members above).
    STATUS_NONE = "none"
    STATUS_ACCEPTED = "accepted"
    STATUS_ONBOARDING = "onboarding"
    STATUS_WAITING = "waiting"
    STATUS_IN_TASK = "in task"
    STATUS_COMPLETED = "completed"
    STATUS_DISCONNECT = "disconnect"
    STATUS_TIMEOUT = "timeout"
    STATUS_PARTNER_DISCONNECT = "partner disconnect"
    STATUS_EXPIRED = "expired"
    STATUS_RETURNED = "returned"
    STATUS_APPROVED = "approved"
    STATUS_SOFT_REJECTED = "soft_rejected"
    STATUS_REJECTED = "rejected"

    @classmethod
    def _missing_(cls, value: object) -> Any:
        raise UnknownStatus(f"{value!r} is not an agent status; valid: {', '.join(cls)}")

    @staticmethod
    def valid() -> list[AgentState]:
        return list(AgentState)

    @staticmethod
    def active() -> list[AgentState]:
        """The worker is still working on the unit."""
        return [
            AgentState.NONE,
            AgentState.ACCEPTED,
            AgentState.ONBOARDING,
            AgentState.WAITING,
            AgentState.IN_TASK,
        ]

    @staticmethod
    def complete() -> list[AgentState]:
        """The agent will not work on the unit any more (submitted or gone)."""
        return [s for s in AgentState if s not in AgentState.active()]

    @staticmethod
    def dropped() -> list[AgentState]:
        """Gone without submitting: the unit goes back to other workers."""
        return [
            AgentState.DISCONNECT,
            AgentState.TIMEOUT,
            AgentState.PARTNER_DISCONNECT,
            AgentState.EXPIRED,
            AgentState.RETURNED,
        ]

    @staticmethod
    def reviewed() -> list[AgentState]:
        return [AgentState.APPROVED, AgentState.SOFT_REJECTED, AgentState.REJECTED]


_A = AssignmentState
_G = AgentState

class PaymentStatus(StrEnum):
    """Status of a payment (a bonus): recorded before the provider is asked, then paid,
    or failed and tried again with the same request token."""

    RECORDED = "recorded"
    PAID = "paid"
    FAILED = "failed"


PAYMENT_TRANSITIONS: dict[PaymentStatus, frozenset[PaymentStatus]] = {
    PaymentStatus.RECORDED: frozenset({PaymentStatus.PAID, PaymentStatus.FAILED}),
    PaymentStatus.FAILED: frozenset({PaymentStatus.PAID, PaymentStatus.FAILED}),
    PaymentStatus.PAID: frozenset(),  # paid is final: nothing pays it again
}


def payment_sources(target: PaymentStatus) -> list[PaymentStatus]:
    """Payment statuses from which `target` may be reached."""
    return [s for s, targets in PAYMENT_TRANSITIONS.items() if target in targets]


# Legal unit status changes: from -> allowed targets.
UNIT_TRANSITIONS: dict[AssignmentState, frozenset[AssignmentState]] = {
    _A.CREATED: frozenset({_A.LAUNCHED, _A.EXPIRED}),
    _A.LAUNCHED: frozenset({_A.ASSIGNED, _A.EXPIRED}),
    # back to LAUNCHED when the agent drops out (timeout, return, disconnect)
    _A.ASSIGNED: frozenset({_A.LAUNCHED, _A.COMPLETED, _A.EXPIRED}),
    _A.COMPLETED: frozenset({_A.ACCEPTED, _A.REJECTED, _A.SOFT_REJECTED}),
    _A.ACCEPTED: frozenset(),
    _A.REJECTED: frozenset(),
    _A.SOFT_REJECTED: frozenset(),
    # an expired unit is re-launched when its run is resumed, or completed by a
    # submission that arrives after it expired (the work is kept, not redone)
    _A.EXPIRED: frozenset({_A.LAUNCHED, _A.COMPLETED}),
    _A.MIXED: frozenset(),  # assignments only; never stored on a unit
}

# Legal agent status changes: from -> allowed targets.
AGENT_TRANSITIONS: dict[AgentState, frozenset[AgentState]] = {
    _G.NONE: frozenset(
        {_G.ACCEPTED, _G.ONBOARDING, _G.WAITING, _G.IN_TASK, *AgentState.dropped()}
    ),
    _G.ACCEPTED: frozenset({_G.ONBOARDING, _G.WAITING, _G.IN_TASK, _G.COMPLETED, *AgentState.dropped()}),
    # onboarding agents end in COMPLETED (passed or pending review), APPROVED or REJECTED
    _G.ONBOARDING: frozenset(
        {_G.WAITING, _G.IN_TASK, _G.COMPLETED, _G.APPROVED, _G.REJECTED, *AgentState.dropped()}
    ),
    _G.WAITING: frozenset({_G.IN_TASK, _G.COMPLETED, *AgentState.dropped()}),
    _G.IN_TASK: frozenset({_G.COMPLETED, *AgentState.dropped()}),
    _G.COMPLETED: frozenset({_G.APPROVED, _G.SOFT_REJECTED, _G.REJECTED}),
    _G.DISCONNECT: frozenset(),
    _G.TIMEOUT: frozenset(),
    _G.PARTNER_DISCONNECT: frozenset(),
    _G.EXPIRED: frozenset(),
    _G.RETURNED: frozenset(),
    _G.APPROVED: frozenset(),
    # a soft rejection can be reconsidered
    _G.SOFT_REJECTED: frozenset({_G.APPROVED, _G.REJECTED}),
    _G.REJECTED: frozenset(),
}

# What a unit's status becomes when its agent's status changes.
UNIT_STATUS_FOR_AGENT: dict[AgentState, AssignmentState] = {
    _G.NONE: _A.ASSIGNED,
    _G.ACCEPTED: _A.ASSIGNED,
    _G.ONBOARDING: _A.ASSIGNED,
    _G.WAITING: _A.ASSIGNED,
    _G.IN_TASK: _A.ASSIGNED,
    _G.COMPLETED: _A.COMPLETED,
    _G.DISCONNECT: _A.LAUNCHED,
    _G.TIMEOUT: _A.LAUNCHED,
    _G.PARTNER_DISCONNECT: _A.LAUNCHED,
    _G.EXPIRED: _A.LAUNCHED,
    _G.RETURNED: _A.LAUNCHED,
    _G.APPROVED: _A.ACCEPTED,
    _G.SOFT_REJECTED: _A.SOFT_REJECTED,
    _G.REJECTED: _A.REJECTED,
}


def unit_sources(target: AssignmentState) -> list[AssignmentState]:
    """Unit statuses from which `target` may be reached."""
    return [s for s, targets in UNIT_TRANSITIONS.items() if target in targets]


def agent_sources(target: AgentState) -> list[AgentState]:
    """Agent statuses from which `target` may be reached (aliases folded)."""
    return [s for s, targets in AGENT_TRANSITIONS.items() if target in targets]


def unit_update_sources(target: AssignmentState) -> list[AssignmentState]:
    """Unit statuses from which an update setting `target` is accepted: the legal
    sources, plus `target` itself (setting the status a unit has is a no-op)."""
    return [*unit_sources(target), target]


def agent_update_sources(target: AgentState) -> list[AgentState]:
    """Agent statuses from which an update setting `target` is accepted: the legal
    sources, plus `target` itself while it is an active status (an agent at work may be
    refreshed). A final status is never set again, so a stored completion is never
    rewritten. Every agent status change, single or bulk, takes its sources from here."""
    same = [target] if target in AgentState.active() else []
    return [*agent_sources(target), *same]


def check_unit_transition(unit_id: str, old: str, new: str) -> None:
    old_s, new_s = AssignmentState(old), AssignmentState(new)
    if old_s not in unit_update_sources(new_s):
        raise InvalidTransition("unit", unit_id, old_s, new_s)


def check_agent_transition(agent_id: str, old: str, new: str) -> None:
    old_s, new_s = AgentState(old), AgentState(new)
    if old_s not in agent_update_sources(new_s):
        raise InvalidTransition("agent", agent_id, old_s, new_s)


def derive_assignment_status(unit_statuses: list[str]) -> AssignmentState:
    """An assignment's status from its units': all equal -> that; otherwise MIXED.

    Units still open make the assignment open (the least advanced open status wins), so
    an assignment counts as incomplete while any of its units is.
    """
    states = {AssignmentState(s) for s in unit_statuses}
    if not states:
        return AssignmentState.CREATED
    if len(states) == 1:
        return states.pop()
    for open_state in AssignmentState.incomplete():
        if open_state in states:
            return open_state
    return AssignmentState.MIXED
