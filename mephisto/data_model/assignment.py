"""An assignment: the smallest reviewable piece of a task, done by one or more units."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mephisto.data_model.entity import Entity
from mephisto.data_model.status import AssignmentState, derive_assignment_status

if TYPE_CHECKING:
    from mephisto.data_model.agent import Agent
    from mephisto.data_model.task_run import TaskRun
    from mephisto.data_model.unit import Unit


@dataclass
class InitializationData:
    """What a blueprint gives an assignment: data shared by its units, and per unit."""

    shared: dict[str, Any] = field(default_factory=dict)
    unit_data: list[dict[str, Any]] = field(default_factory=lambda: [{}])

    def to_dict(self) -> dict[str, Any]:
        return {"shared": self.shared, "unit_data": self.unit_data}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> InitializationData:
        if not data:
            return cls()
        return cls(shared=data.get("shared") or {}, unit_data=data.get("unit_data") or [{}])

    # Mephisto's names
    def dumpJSON(self) -> dict[str, Any]:
        return self.to_dict()

    loadFromJSON = from_dict


class Assignment(Entity):
    _getter = "get_assignment"
    task_id: str
    task_run_id: str
    requester_id: str
    task_type: str
    provider_type: str
    sandbox: bool
    data: dict[str, Any] | None

    def get_assignment_data(self) -> InitializationData:
        return InitializationData.from_dict(self.data)

    def write_assignment_data(self, data: InitializationData) -> None:
        self.db.set_assignment_data(self.db_id, data.to_dict())
        self.data = data.to_dict()

    def get_units(self, status: str | None = None) -> list[Unit]:
        return self.db.find_units(assignment_id=self.db_id, status=status)

    def get_agents(self) -> list[Agent]:
        return self.db.find_agents(assignment_id=self.db_id)

    def get_status(self) -> AssignmentState:
        return derive_assignment_status([u.db_status for u in self.get_units()])

    def get_task_run(self) -> TaskRun:
        from mephisto.data_model.task_run import TaskRun

        return TaskRun(self.db, self.task_run_id)
