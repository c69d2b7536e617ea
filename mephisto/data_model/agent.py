"""Agents: a worker's attempt at one unit (`Agent`) or at a run's onboarding
(`OnboardingAgent`), with the data they produce.

An agent's saved data lives in the database as JSON: `{"inputs", "outputs", "times"}`.
`agent.state` wraps it; a blueprint may register a richer class for its task type with
`register_agent_state_class` (its module does this when imported).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar

from mephisto.data_model.entity import Entity
from mephisto.data_model.status import AgentState
from mephisto.errors import InvalidTransition

if TYPE_CHECKING:
    from mephisto.data_model.assignment import Assignment
    from mephisto.data_model.task import Task
    from mephisto.data_model.task_run import TaskRun
    from mephisto.data_model.unit import Unit
    from mephisto.data_model.worker import Worker


def merge_agent_state(agent_id: str, stored: Any, update: Any) -> Any:
    """What an agent's saved state becomes when `update` is written over `stored`.

    Nothing stored is lost: keys only in `stored` stay (metadata a worker sent before
    submitting survives the submit), object values present in both (`metadata`,
    `times`) are merged key by key, and submitted `outputs` are never replaced by other
    outputs (`InvalidTransition`). Every write of an agent's state, single or bulk, goes
    through here.
    """
    if not stored:
        return update
    if not isinstance(stored, dict) or not isinstance(update, dict):
        raise InvalidTransition(
            "agent", agent_id, "", "", detail="its saved state is a JSON object: "
            f"cannot merge {type(update).__name__} into {type(stored).__name__}",
        )
    merged = dict(stored)
    for key, value in update.items():
        old = merged.get(key)
        if key == "outputs" and old is not None and value != old:
            raise InvalidTransition(
                "agent", agent_id, "", "",
                detail="its submitted outputs are saved and are never rewritten",
            )
        merged[key] = {**old, **value} if isinstance(old, dict) and isinstance(value, dict) \
            else value
    return merged


class SavedAgentState:
    """An agent's saved data. Subclasses may parse it differently for review/export."""

    def __init__(self, agent: _AgentBase) -> None:
        self.agent = agent
        self._data: dict[str, Any] = dict(agent._row.get("state") or {})

    def get_data(self) -> dict[str, Any]:
        data = {
            "inputs": self._data.get("inputs"),
            "outputs": self._data.get("outputs"),
            "times": self._data.get("times", {}),
        }
        if "live_updates" in self._data:  # a live task's packets, both ways, in order
            data["live_updates"] = self.get_live_updates()
        return data

    def get_live_updates(self) -> list[dict[str, Any]]:
        """Every live packet of the session in order: `{"sender": "worker" | "mephisto",
        "time": <UNIX seconds>, "data": ...}` (empty for a static task)."""
        return list(self._data.get("live_updates") or [])

    def get_parsed_data(self) -> dict[str, Any]:
        return self.get_data()

    @property
    def inputs(self) -> Any:
        return self._data.get("inputs")

    @property
    def outputs(self) -> Any:
        return self._data.get("outputs")

    def get_task_start(self) -> float | None:
        return self._data.get("times", {}).get("task_start")

    def get_task_end(self) -> float | None:
        return self._data.get("times", {}).get("task_end")

    def set_data(self, data: dict[str, Any]) -> None:
        """Save `data` as the state. It is merged into what is stored
        (`merge_agent_state`): stored keys are kept and submitted outputs stay."""
        self._data = dict(data)
        self.agent._save_state(self._data)

    def update_data(self, **fields: Any) -> None:
        self._data = merge_agent_state(self.agent.db_id, self._data, fields)
        self.agent._save_state(self._data)


_STATE_CLASSES: dict[str, type[SavedAgentState]] = {}


def register_agent_state_class(task_type: str, cls: type[SavedAgentState]) -> None:
    """Use `cls` for `agent.state` of agents whose task_type is `task_type`."""
    _STATE_CLASSES[task_type] = cls


class _AgentBase(Entity):
    _status_field = True
    db_status: str
    worker_id: str
    task_id: str
    task_run_id: str
    task_type: str
    _updater: ClassVar[str]

    @property
    def state(self) -> SavedAgentState:
        cls = _STATE_CLASSES.get(self.task_type, SavedAgentState)
        return cls(self)

    def _save_state(self, data: dict[str, Any]) -> None:
        getattr(self.db, self._updater)(self.db_id, state=data)
        self.refresh()  # the stored state is the merge of what was there and `data`

    def get_status(self) -> AgentState:
        """The stored status, read fresh from the database."""
        self.refresh()
        return AgentState(self.db_status)

    def update_status(self, new_status: str) -> None:
        """Change status (checked against the transition table)."""
        getattr(self.db, self._updater)(self.db_id, status=new_status)
        self.db_status = str(AgentState(new_status))

    def get_worker(self) -> Worker:
        from mephisto.data_model.worker import Worker

        return Worker(self.db, self.worker_id)

    def get_task_run(self) -> TaskRun:
        from mephisto.data_model.task_run import TaskRun

        return TaskRun(self.db, self.task_run_id)

    def get_task(self) -> Task:
        from mephisto.data_model.task import Task

        return Task(self.db, self.task_id)


class Agent(_AgentBase):
    _getter = "get_agent"
    _updater = "update_agent"
    unit_id: str
    assignment_id: str
    provider_type: str
    agent_id: str

    def get_unit(self) -> Unit:
        from mephisto.data_model.unit import Unit

        return Unit(self.db, self.unit_id)

    def get_assignment(self) -> Assignment:
        from mephisto.data_model.assignment import Assignment

        return Assignment(self.db, self.assignment_id)

    def get_data_dir(self) -> str:
        from mephisto.utils.dirs import get_run_dir

        return str(get_run_dir(self.task_run_id) / self.db_id)

    def mark_done(self, outputs: Any = None) -> None:
        """Record a submission: outputs saved and status COMPLETED in one transaction."""
        data = dict(self._row.get("state") or {})
        if outputs is not None:
            data["outputs"] = outputs
        data.setdefault("times", {})["task_end"] = time.time()
        self.db.update_agent(self.db_id, status=AgentState.COMPLETED, state=data)
        self.refresh()

    # Review (the provider-side effects -- payment, rejection notices -- are the
    # provider's; these record the decision).
    def approve_work(self, review_note: str | None = None, bonus: float | None = None) -> None:
        self.update_status(AgentState.APPROVED)

    def soft_reject_work(self, review_note: str | None = None) -> None:
        self.update_status(AgentState.SOFT_REJECTED)

    def reject_work(self, reason: str | None = None) -> None:
        self.update_status(AgentState.REJECTED)


class OnboardingAgent(_AgentBase):
    DISPLAY_PREFIX: ClassVar[str] = "onboarding_"
    _getter = "get_onboarding_agent"
    _updater = "update_onboarding_agent"

    @property
    def agent_id(self) -> str:
        return self.db_id

    @staticmethod
    def is_onboarding_id(agent_id: str) -> bool:
        return agent_id.startswith(OnboardingAgent.DISPLAY_PREFIX)
