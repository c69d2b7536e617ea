"""A task: one kind of work, uniquely named by `task_name`, run in one or more task runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mephisto.data_model.entity import Entity

if TYPE_CHECKING:
    from mephisto.data_model.assignment import Assignment
    from mephisto.data_model.project import Project
    from mephisto.data_model.task_run import TaskRun


class Task(Entity):
    _getter = "get_task"
    task_name: str
    task_type: str
    project_id: str | None
    parent_task_id: str | None

    def get_runs(self) -> list[TaskRun]:
        return self.db.find_task_runs(task_id=self.db_id)

    def get_assignments(self) -> list[Assignment]:
        return self.db.find_assignments(task_id=self.db_id)

    def get_project(self) -> Project | None:
        from mephisto.data_model.project import Project

        return None if self.project_id is None else Project(self.db, self.project_id)
