"""A unit: one worker's place in an assignment; the thing a worker is given to do."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mephisto.data_model.entity import Entity
from mephisto.data_model.status import AssignmentState

if TYPE_CHECKING:
    from mephisto.data_model.agent import Agent
    from mephisto.data_model.assignment import Assignment, InitializationData
    from mephisto.data_model.requester import Requester
    from mephisto.data_model.task import Task
    from mephisto.data_model.task_run import TaskRun

# Units made for one worker to check them, outside the run's data (Mephisto's values):
# screening units (`ScreenTaskRequired`) and gold units (`UseGoldUnit`).
SCREENING_UNIT_INDEX = -1
GOLD_UNIT_INDEX = -2
INDEX_TO_TYPE_MAP = {SCREENING_UNIT_INDEX: "screening_unit", GOLD_UNIT_INDEX: "gold_unit"}


def unit_kind(unit_index: int) -> str:
    """"screening", "gold" or "task" (a unit of the run's data)."""
    return {SCREENING_UNIT_INDEX: "screening", GOLD_UNIT_INDEX: "gold"}.get(unit_index, "task")


class Unit(Entity):
    _getter = "get_unit"
    _status_field = True
    db_status: str
    assignment_id: str
    unit_index: int
    pay_amount: float
    provider_type: str
    agent_id: str | None
    worker_id: str | None
    task_type: str
    task_id: str
    task_run_id: str
    sandbox: bool
    requester_id: str

    def get_status(self) -> AssignmentState:
        """The stored status, read fresh from the database."""
        self.refresh()
        return AssignmentState(self.db_status)

    def set_db_status(self, status: str) -> None:
        self.db.update_unit(self.db_id, status=status)
        self.db_status = str(AssignmentState(status))

    def get_assigned_agent(self) -> Agent | None:
        """The agent working on (or that did) this unit, if any."""
        from mephisto.data_model.agent import Agent

        self.refresh()
        return None if self.agent_id is None else Agent(self.db, self.agent_id)

    def clear_assigned_agent(self) -> None:
        self.db.clear_unit_agent_assignment(self.db_id)
        self.refresh()

    def get_pay_amount(self) -> float:
        return self.pay_amount

    def get_assignment(self) -> Assignment:
        from mephisto.data_model.assignment import Assignment

        return Assignment(self.db, self.assignment_id)

    def get_assignment_data(self) -> InitializationData:
        return self.get_assignment().get_assignment_data()

    def get_task_run(self) -> TaskRun:
        from mephisto.data_model.task_run import TaskRun

        return TaskRun(self.db, self.task_run_id)

    def get_task(self) -> Task:
        from mephisto.data_model.task import Task

        return Task(self.db, self.task_id)

    def get_requester(self) -> Requester:
        from mephisto.data_model.requester import Requester

        return Requester(self.db, self.requester_id)
