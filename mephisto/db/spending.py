"""Spending grouped by run, task, project or worker: two grouped queries, whatever the
number of units, workers or runs (reports must not ask once per worker).

Units count by their reward (`pay_amount`), bonuses by the `payments` rows. Each group
comes with its `(provider_type, status)` pairs, so the caller can add each provider's
fee and tell committed money from paid (`mephisto.operations.budget.spending_by`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import sqlalchemy as sa

from mephisto.db import schema as s
from mephisto.db.rows import key

if TYPE_CHECKING:
    from mephisto.db.database import MephistoDB

__all__ = ["GROUPINGS", "Grouping", "SpendingGroups", "spending_groups"]

Grouping = Literal["run", "task", "project", "worker"]
GROUPINGS: tuple[Grouping, ...] = ("project", "task", "run", "worker")

# {(provider_type, status): (count, dollars)}
Amounts = dict[tuple[str, str], tuple[int, float]]


@dataclass
class SpendingGroups:
    """`groups`: group id (str; None for units without one: no project, no worker yet)
    -> {"units": Amounts, "bonuses": Amounts}. `unattributed`: bonuses paid for no unit,
    which belong to no run, task or project (grouped by worker they are in `groups`);
    only counted when the query is not limited to some tasks."""

    by: Grouping
    groups: dict[str | None, dict[str, Amounts]] = field(default_factory=dict)
    unattributed: Amounts = field(default_factory=dict)
    # names of the groups: task_name, project_name, worker_name (provider), run's task
    names: dict[str | None, str] = field(default_factory=dict)

    def _group(self, group: Any) -> dict[str, Amounts]:
        gid = None if group is None else str(group)
        return self.groups.setdefault(gid, {"units": {}, "bonuses": {}})


def _unit_column(by: Grouping) -> Any:
    u, t = s.units, s.tasks
    return {"run": u.c.task_run_id, "task": u.c.task_id, "project": t.c.project_id,
            "worker": u.c.worker_id}[by]


def spending_groups(db: MephistoDB, by: Grouping,
                    task_ids: Iterable[str] | None = None) -> SpendingGroups:
    """Units and bonuses of the tasks `task_ids` (None: all) grouped `by`."""
    if by not in GROUPINGS:
        raise ValueError(f"group by one of {', '.join(GROUPINGS)}, not {by!r}")
    u, p, t = s.units, s.payments, s.tasks
    keys = None if task_ids is None else [key("tasks", i) for i in task_ids]
    out = SpendingGroups(by)
    if keys is not None and not keys:
        return out
    group = _unit_column(by)
    units = sa.select(group, u.c.provider_type, u.c.status, sa.func.count(),
                      sa.func.coalesce(sa.func.sum(u.c.pay_amount), 0.0))
    if by == "project":
        units = units.select_from(u.join(t, t.c.task_id == u.c.task_id))
    if keys is not None:
        units = units.where(u.c.task_id.in_(keys))
    units = units.group_by(group, u.c.provider_type, u.c.status)

    # bonuses: through their unit (outer: a bonus may be for no unit)
    bonus_group = p.c.worker_id if by == "worker" else group
    joined = p.outerjoin(u, u.c.unit_id == p.c.unit_id)
    if by == "project":
        joined = joined.outerjoin(t, t.c.task_id == u.c.task_id)
    bonuses = (sa.select(bonus_group, p.c.unit_id.is_(None), p.c.provider_type, p.c.status,
                         sa.func.count(), sa.func.coalesce(sa.func.sum(p.c.amount), 0.0))
               .select_from(joined))
    if keys is not None:
        bonuses = bonuses.where(u.c.task_id.in_(keys))
    bonuses = bonuses.group_by(bonus_group, p.c.unit_id.is_(None), p.c.provider_type,
                               p.c.status)
    with db.read() as conn:
        for gid, provider_type, status, n, amount in conn.execute(units):
            out._group(gid)["units"][(provider_type, status)] = (int(n), float(amount))
        for gid, unitless, provider_type, status, n, amount in conn.execute(bonuses):
            if unitless and by != "worker":
                target = out.unattributed
            else:
                target = out._group(gid)["bonuses"]
            n0, a0 = target.get((provider_type, status), (0, 0.0))
            target[(provider_type, status)] = (n0 + int(n), a0 + float(amount))
        out.names = _names(conn, by, [g for g in out.groups if g is not None])
    return out


def _names(conn: sa.Connection, by: Grouping, ids: list[str]) -> dict[str | None, str]:
    """One query for the names of the groups found."""
    if not ids:
        return {}
    if by == "worker":
        w = s.workers
        query = sa.select(w.c.worker_id, w.c.worker_name + " (" + w.c.provider_type + ")")
        column = w.c.worker_id
    elif by == "project":
        query, column = sa.select(s.projects.c.project_id, s.projects.c.project_name), \
            s.projects.c.project_id
    elif by == "task":
        query, column = sa.select(s.tasks.c.task_id, s.tasks.c.task_name), s.tasks.c.task_id
    else:
        r, t = s.task_runs, s.tasks
        query = sa.select(r.c.task_run_id, t.c.task_name).join(t, t.c.task_id == r.c.task_id)
        column = r.c.task_run_id
    table = {"worker": "workers", "project": "projects", "task": "tasks", "run": "task_runs"}[by]
    names: dict[str | None, str] = {}
    for start in range(0, len(ids), 1000):  # stay under parameter limits
        chunk = [key(table, i) for i in ids[start:start + 1000]]
        for gid, name in conn.execute(query.where(column.in_(chunk))):
            names[str(gid)] = str(name)
    return names
