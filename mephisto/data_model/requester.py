"""A requester: the account on a crowd provider that launches and pays for work."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mephisto.data_model.entity import Entity

if TYPE_CHECKING:
    from mephisto.data_model.task_run import TaskRun


class Requester(Entity):
    _getter = "get_requester"
    requester_name: str
    provider_type: str

    def get_task_runs(self) -> list[TaskRun]:
        return self.db.find_task_runs(requester_id=self.db_id)

    def is_sandbox(self) -> bool:
        return self.provider_type.endswith("sandbox") or self.provider_type == "mock"
