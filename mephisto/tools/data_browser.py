"""Read collected data back: Mephisto's `MephistoDataBrowser`, plus a bulk loader.

`get_data_from_unit(unit)` is Mephisto's per-unit call (a few queries each); for a
whole run use `load_results(...)`, which reads every unit with its agent and worker in
one query.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from mephisto.data_model.status import AssignmentState
from mephisto.data_model.unit import Unit
from mephisto.db import schema as s
from mephisto.errors import EntryDoesNotExist
from mephisto.utils.memory import gc_paused

if TYPE_CHECKING:
    from mephisto.db.database import MephistoDB

_WITH_WORK = [str(x) for x in AssignmentState.completed()]


class DataBrowser:
    def __init__(self, db: MephistoDB | None = None) -> None:
        if db is None:
            from mephisto.db import MephistoDB

            db = MephistoDB()
        self.db = db

    def get_task_name_list(self) -> list[str]:
        return [t.task_name for t in self.db.find_tasks()]

    def _task_id(self, task_name: str) -> str:
        tasks = self.db.find_tasks(task_name=task_name)
        if not tasks:
            raise EntryDoesNotExist(f"no task named {task_name!r}")
        return str(tasks[0].db_id)

    def get_units_for_task_name(self, task_name: str) -> list[Unit]:
        """Units of every run of the task that a worker submitted."""
        return self.db.find_units(task_id=self._task_id(task_name), status=_WITH_WORK)

    def get_units_for_run_id(self, run_id: str) -> list[Unit]:
        return self.db.find_units(task_run_id=run_id, status=_WITH_WORK)

    def get_data_from_unit(self, unit: Unit) -> dict[str, Any]:
        agent = unit.get_assigned_agent()
        if agent is None:
            raise EntryDoesNotExist(f"unit {unit.db_id} has no agent")
        return _result(unit.db_id, unit.assignment_id, unit.db_status, agent.worker_id,
                       agent.get_worker().worker_name, agent.db_id, agent.db_status,
                       agent.state.get_parsed_data())

    def get_workers_with_qualification(self, qualification_name: str) -> list[Any]:
        quals = self.db.find_qualifications(qualification_name=qualification_name)
        if not quals:
            raise EntryDoesNotExist(f"no qualification named {qualification_name!r}")
        grants = self.db.check_granted_qualifications(qualification_id=quals[0].db_id)
        from mephisto.data_model.worker import Worker

        return [Worker(self.db, g.worker_id) for g in grants if g.value]

    def load_results(
        self,
        task_name: str | None = None,
        task_run_id: str | None = None,
        statuses: Iterable[str] = _WITH_WORK,
    ) -> list[dict[str, Any]]:
        """Every submitted unit of a task (or of one run) with its data, in one query."""
        u, a, w = s.units, s.agents, s.workers
        query = (
            sa.select(
                u.c.unit_id, u.c.assignment_id, u.c.status, a.c.worker_id, w.c.worker_name,
                a.c.agent_id, a.c.status.label("agent_status"), a.c.state,
            )
            .join(a, a.c.agent_id == u.c.agent_id)
            .join(w, w.c.worker_id == a.c.worker_id)
            .where(u.c.status.in_([str(x) for x in statuses]))
            .order_by(u.c.unit_id)
        )
        if task_run_id is not None:
            query = query.where(u.c.task_run_id == int(task_run_id))
        if task_name is not None:
            query = query.where(u.c.task_id == int(self._task_id(task_name)))
        with gc_paused():  # 100,000 results are millions of long-lived objects
            with self.db.engine.connect() as conn:
                rows = conn.execute(query).all()
            results = []
            for unit_id, assignment_id, status, worker_id, worker_name, agent_id, agent_status, state in rows:
                state = state or {}
                data = {"inputs": state.get("inputs"), "outputs": state.get("outputs"),
                        "times": state.get("times", {})}
                results.append(_result(str(unit_id), str(assignment_id), status, str(worker_id),
                                       worker_name, agent_id, agent_status, data))
        return results


def _result(
    unit_id: str, assignment_id: str, status: str, worker_id: str, worker_name: str,
    agent_id: str, agent_status: str, data: dict[str, Any],
) -> dict[str, Any]:
    times = data.get("times") or {}
    return {
        "unit_id": unit_id,
        "assignment_id": assignment_id,
        "status": status,
        "worker_id": worker_id,
        "worker_name": worker_name,
        "agent_id": agent_id,
        "agent_status": agent_status,
        "data": data,
        "task_start": times.get("task_start"),
        "task_end": times.get("task_end"),
    }


MephistoDataBrowser = DataBrowser

__all__ = ["DataBrowser", "MephistoDataBrowser"]
