"""A project groups tasks that belong to one larger objective."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mephisto.data_model.entity import Entity

if TYPE_CHECKING:
    from mephisto.data_model.task import Task

# Mephisto's name for "no project": reserved, so no project may be given it.
NO_PROJECT_NAME = "NO_PROJECT"


class Project(Entity):
    _getter = "get_project"
    project_name: str

    def get_tasks(self) -> list[Task]:
        return self.db.find_tasks(project_id=self.db_id)
