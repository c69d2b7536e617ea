"""Review decisions that reach the run's crowd provider as well as the database.

`Agent.approve_work()` and friends record a decision in the data model only; the
provider's `approve_work` (pay on MTurk, record on the in-house provider) is a separate
call. These helpers make both: the agent's status is checked first (a decision the
transition table forbids raises `InvalidTransition` and reaches nobody), then the
provider is told, then the database; if the provider refuses or fails, the agent keeps
its status and the decision can be made again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mephisto.abstractions.crowd_provider import CrowdProvider
from mephisto.data_model.status import AGENT_TRANSITIONS, AgentState
from mephisto.errors import InvalidTransition
from mephisto.operations.registry import get_crowd_provider_from_type

if TYPE_CHECKING:
    from mephisto.data_model.agent import Agent

__all__ = ["approve_work", "provider_of", "reject_work", "soft_reject_work"]


def provider_of(agent: Agent) -> CrowdProvider:
    """The provider of the agent's run, configured as the run was launched."""
    run = agent.get_task_run()
    cls = get_crowd_provider_from_type(run.provider_type)
    provider: CrowdProvider = cls(agent.db, run.args)
    return provider


def _may_become(agent: Agent, target: AgentState) -> None:
    status = agent.get_status()
    if target not in AGENT_TRANSITIONS[status]:
        raise InvalidTransition("agent", agent.db_id, str(status), str(target))


def approve_work(agent: Agent, review_note: str | None = None,
                 provider: CrowdProvider | None = None) -> None:
    _may_become(agent, AgentState.APPROVED)
    (provider or provider_of(agent)).approve_work(agent, review_note)
    agent.approve_work(review_note)


def soft_reject_work(agent: Agent, review_note: str | None = None,
                     provider: CrowdProvider | None = None) -> None:
    _may_become(agent, AgentState.SOFT_REJECTED)
    (provider or provider_of(agent)).soft_reject_work(agent, review_note)
    agent.soft_reject_work(review_note)


def reject_work(agent: Agent, reason: str, provider: CrowdProvider | None = None) -> None:
    _may_become(agent, AgentState.REJECTED)
    (provider or provider_of(agent)).reject_work(agent, reason)
    agent.reject_work(reason)
