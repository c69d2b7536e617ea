"""Read collected data back: Mephisto's `MephistoDataBrowser`, plus a bulk loader and
statistics.

`get_data_from_unit(unit)` is Mephisto's per-unit call (a few queries each); for a
whole run use `load_results(...)`, which reads every unit with its agent and worker in
one query. `get_worker_stats` and `get_task_stats` are a few grouped queries each,
whatever the number of units (`mephisto review` shows them).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from mephisto.data_model.status import AgentState, AssignmentState, PaymentStatus
from mephisto.data_model.unit import Unit
from mephisto.db import schema as s
from mephisto.errors import EntryDoesNotExist
from mephisto.utils.memory import gc_paused

if TYPE_CHECKING:
    from mephisto.db.database import MephistoDB

_WITH_WORK = [str(x) for x in AssignmentState.completed()]
_PAID_UNITS = [str(AssignmentState.ACCEPTED), str(AssignmentState.SOFT_REJECTED)]
_REVIEWED = [str(x) for x in AgentState.reviewed()]
WORKER_UNITS_SHOWN = 500  # the latest units listed in a worker's history


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

    # -- statistics ----------------------------------------------------------------------

    def get_worker_stats(self, worker_id: str) -> dict[str, Any]:
        """A worker's history: units by status and the latest `WORKER_UNITS_SHOWN` of
        them (with task and run), approval rate, time spent, pay so far (rewards of
        accepted and soft-rejected units plus paid bonuses), blocks and qualifications."""
        wid = _key("worker", worker_id)
        u, a, w, t, p = s.units, s.agents, s.workers, s.tasks, s.payments
        b, r, g, q = s.worker_blocks, s.requesters, s.granted_qualifications, s.qualifications
        with self.db.read() as conn:
            worker = conn.execute(sa.select(w).where(w.c.worker_id == wid)).first()
            if worker is None:
                raise EntryDoesNotExist(f"worker {worker_id} does not exist")
            counts = _status_counts(conn, u.c.worker_id == wid)
            rewards = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(u.c.pay_amount), 0.0))
                                   .where(u.c.worker_id == wid, u.c.status.in_(_PAID_UNITS))
                                   ).scalar_one()
            bonuses = {status: (int(n), float(total)) for status, n, total in conn.execute(
                sa.select(p.c.status, sa.func.count(), sa.func.sum(p.c.amount))
                .where(p.c.worker_id == wid).group_by(p.c.status))}
            durations = _durations(conn, a.c.worker_id == wid)
            units = [{
                "unit_id": str(x.unit_id), "status": x.status, "task_name": x.task_name,
                "run_id": str(x.task_run_id), "pay_amount": x.pay_amount,
                "agent_status": x.agent_status, "taken": x.creation_date,
            } for x in conn.execute(
                sa.select(u.c.unit_id, u.c.status, t.c.task_name, u.c.task_run_id,
                          u.c.pay_amount, a.c.status.label("agent_status"), a.c.creation_date)
                .join(t, t.c.task_id == u.c.task_id)
                .outerjoin(a, a.c.agent_id == u.c.agent_id)
                .where(u.c.worker_id == wid)
                .order_by(u.c.unit_id.desc()).limit(WORKER_UNITS_SHOWN))]
            blocks = [{"requester_id": str(x.requester_id), "requester_name": x.requester_name,
                       "reason": x.reason, "creation_date": x.creation_date}
                      for x in conn.execute(
                          sa.select(b.c.requester_id, r.c.requester_name, b.c.reason,
                                    b.c.creation_date)
                          .join(r, r.c.requester_id == b.c.requester_id)
                          .where(b.c.worker_id == wid).order_by(b.c.creation_date))]
            quals = {name: int(value) for name, value in conn.execute(
                sa.select(q.c.qualification_name, g.c.value)
                .join(q, q.c.qualification_id == g.c.qualification_id)
                .where(g.c.worker_id == wid).order_by(q.c.qualification_name))}
        paid_bonuses = bonuses.get(str(PaymentStatus.PAID), (0, 0.0))[1]
        pending = sum(total for status, (_n, total) in bonuses.items()
                      if status != str(PaymentStatus.PAID))
        return {
            "worker_id": str(worker.worker_id), "worker_name": worker.worker_name,
            "provider_type": worker.provider_type, "units_by_status": counts,
            "units": units, "units_total": sum(counts.values()),
            "approval_rate": _approval_rate(counts),
            **_time_figures(durations),
            "rewards_paid": round(float(rewards), 2),
            "bonuses_paid": round(paid_bonuses, 2), "bonuses_pending": round(pending, 2),
            "total_paid": round(float(rewards) + paid_bonuses, 2),
            "blocks": blocks, "qualifications": quals,
        }

    def get_task_stats(self, task_name: str | None = None,
                       run_id: str | None = None) -> dict[str, Any]:
        """A task's (or one run's) units by status, approval rate, time per unit, what
        was paid (rewards of accepted and soft-rejected units plus paid bonuses), and
        how many workers took part."""
        if (task_name is None) == (run_id is None):
            raise EntryDoesNotExist("name a task or a run (one of them)")
        u, a, p = s.units, s.agents, s.payments
        with self.db.read() as conn:
            if run_id is not None:
                rid = _key("task run", run_id)
                if conn.execute(sa.select(s.task_runs.c.task_run_id)
                                .where(s.task_runs.c.task_run_id == rid)).first() is None:
                    raise EntryDoesNotExist(f"task run {run_id} does not exist")
                on_units, on_agents = u.c.task_run_id == rid, a.c.task_run_id == rid
            else:
                tid = int(self._task_id(str(task_name)))
                on_units, on_agents = u.c.task_id == tid, a.c.task_id == tid
            counts = _status_counts(conn, on_units)
            rewards, workers = conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(sa.case(
                    (u.c.status.in_(_PAID_UNITS), u.c.pay_amount), else_=0.0)), 0.0),
                    sa.func.count(sa.distinct(u.c.worker_id))).where(on_units)).one()
            bonuses = float(conn.execute(
                sa.select(sa.func.coalesce(sa.func.sum(p.c.amount), 0.0))
                .select_from(p.join(u, u.c.unit_id == p.c.unit_id))
                .where(on_units, p.c.status == str(PaymentStatus.PAID))).scalar_one())
            durations = _durations(conn, on_agents)
        return {
            "task_name": task_name, "run_id": run_id, "units_by_status": counts,
            "units_total": sum(counts.values()), "workers": int(workers),
            "approval_rate": _approval_rate(counts), **_time_figures(durations),
            "rewards_paid": round(float(rewards), 2), "bonuses_paid": round(bonuses, 2),
            "total_paid": round(float(rewards) + bonuses, 2),
        }


def _key(what: str, entity_id: str) -> int:
    try:
        return int(entity_id)
    except (TypeError, ValueError):
        raise EntryDoesNotExist(f"{what} {entity_id!r} does not exist (ids are integers)"
                                ) from None


def _status_counts(conn: sa.Connection, where: Any) -> dict[str, int]:
    u = s.units
    return {status: int(n) for status, n in conn.execute(
        sa.select(u.c.status, sa.func.count()).where(where).group_by(u.c.status))}


def _approval_rate(counts: dict[str, int]) -> float | None:
    """Accepted units over reviewed ones (accepted, soft-rejected, rejected)."""
    accepted = counts.get(str(AssignmentState.ACCEPTED), 0)
    reviewed = accepted + counts.get(str(AssignmentState.SOFT_REJECTED), 0) \
        + counts.get(str(AssignmentState.REJECTED), 0)
    return None if reviewed == 0 else round(accepted / reviewed, 4)


def _durations(conn: sa.Connection, where: Any) -> list[float]:
    """Seconds from start to submission of the agents matching `where` that submitted
    (their saved `times`), in one query."""
    a = s.agents
    start = a.c.state[("times", "task_start")].as_float()
    end = a.c.state[("times", "task_end")].as_float()
    done = [str(AgentState.COMPLETED), *_REVIEWED]
    rows = conn.execute(sa.select(start, end).where(where, a.c.status.in_(done)))
    return [e - b for b, e in rows if b is not None and e is not None and e >= b]


def _time_figures(durations: list[float]) -> dict[str, Any]:
    return {
        "timed_units": len(durations),
        "time_total_s": round(sum(durations), 1),
        "time_median_s": round(statistics.median(durations), 1) if durations else None,
    }


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
