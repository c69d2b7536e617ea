"""What the review app reads: tasks with work awaiting review, pages of units, one unit
with everything a reviewer looks at. SQLAlchemy Core on `MephistoDB`'s engine and the
`schema` tables, a few statements per request whatever the number of units.

Pages are keyset pages: units in `unit_id` order after a cursor (the last id of the
previous page), so the 1000th page costs what the first does. The index
`ix_units_run_status` (task_run_id, status, unit_id) serves a run's page;
`ix_units_status` and `ix_units_worker` serve pages over all runs and a worker's.
Counts are capped (`COUNT_CAP`): past it the app shows "1000+" instead of scanning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from mephisto.data_model.status import AssignmentState
from mephisto.db import schema as s
from mephisto.errors import EntryDoesNotExist, MephistoError

if TYPE_CHECKING:
    from mephisto.db.database import MephistoDB

__all__ = [
    "COUNT_CAP",
    "MAX_PAGE",
    "UnitFilter",
    "list_tasks",
    "page_units",
    "review_template_path",
    "run_ids_in_view",
    "unit_detail",
]

COUNT_CAP = 1000
NARROW_RANGE = 20_000  # agents in a date range that drive a page themselves
MAX_PAGE = 200
AWAITING = str(AssignmentState.COMPLETED)  # submitted, not reviewed yet
REVIEW_TEMPLATE = "review.html"


class BadFilter(MephistoError):
    """A filter or cursor the app cannot use (answered 400)."""


@dataclass(frozen=True)
class UnitFilter:
    """Which units a page shows. `status` None: any status; `since`/`until` bound the
    time the worker took the unit (the agent's creation, UNIX seconds)."""

    task_name: str | None = None
    run_id: str | None = None
    status: str | None = AWAITING
    worker: str | None = None  # a worker's name or id
    since: float | None = None
    until: float | None = None

    def check(self) -> None:
        if self.status is not None:
            try:
                AssignmentState(self.status)
            except ValueError as exc:
                raise BadFilter(str(exc)) from None
        if self.run_id is not None and not str(self.run_id).isdigit():
            raise BadFilter(f"run {self.run_id!r} is not a run id (ids are integers)")
        if self.since is not None and self.until is not None and self.since > self.until:
            raise BadFilter("the date range ends before it starts")


def _int(value: str | None, what: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        return int(str(value))
    except ValueError:
        raise BadFilter(f"{what} {value!r} is not an integer") from None


def list_tasks(db: MephistoDB) -> list[dict[str, Any]]:
    """Every task with its runs and their units by status (two queries)."""
    t, r, u = s.tasks, s.task_runs, s.units
    runs_q = (sa.select(r.c.task_run_id, r.c.task_id, r.c.provider_type, r.c.creation_date,
                        t.c.task_name)
              .join(t, t.c.task_id == r.c.task_id).order_by(r.c.task_run_id))
    counts_q = (sa.select(u.c.task_run_id, u.c.status, sa.func.count())
                .group_by(u.c.task_run_id, u.c.status))
    with db.read() as conn:
        runs = conn.execute(runs_q).all()
        counts: dict[int, dict[str, int]] = {}
        for run_id, status, n in conn.execute(counts_q):
            counts.setdefault(run_id, {})[status] = int(n)
    tasks: dict[str, dict[str, Any]] = {}
    for run_id, _task_id, provider, created, name in runs:
        task = tasks.setdefault(name, {"task_name": name, "awaiting": 0, "units": 0,
                                       "runs": []})
        by_status = counts.get(run_id, {})
        awaiting = by_status.get(AWAITING, 0)
        task["awaiting"] += awaiting
        task["units"] += sum(by_status.values())
        task["runs"].append({"run_id": str(run_id), "provider_type": provider,
                             "creation_date": created, "awaiting": awaiting,
                             "by_status": by_status})
    return sorted(tasks.values(), key=lambda x: (-x["awaiting"], x["task_name"]))


def run_ids_in_view(db: MephistoDB, task_name: str | None = None,
                    run_id: str | None = None) -> list[str]:
    """The runs a review session covers: one run, a task's runs, or all."""
    r, t = s.task_runs, s.tasks
    query = sa.select(r.c.task_run_id).order_by(r.c.task_run_id)
    if run_id is not None:
        query = query.where(r.c.task_run_id == _int(run_id, "run"))
    if task_name is not None:
        query = query.join(t, t.c.task_id == r.c.task_id).where(t.c.task_name == task_name)
    with db.read() as conn:
        found = [str(x) for x in conn.execute(query).scalars()]
    if not found and run_id is not None:
        raise EntryDoesNotExist(f"run {run_id} does not exist" if task_name is None
                                else f"run {run_id} is no run of task {task_name!r}")
    if not found and task_name is not None:
        raise EntryDoesNotExist(f"task {task_name!r} has no runs")
    return found


def _where(conn: sa.Connection, f: UnitFilter) -> list[sa.ColumnElement[bool]] | None:
    """The filter as clauses on `units` (None: nothing can match)."""
    u, w, t = s.units, s.workers, s.tasks
    clauses: list[sa.ColumnElement[bool]] = []
    if f.status is not None:
        clauses.append(u.c.status == f.status)
    if f.run_id is not None:
        clauses.append(u.c.task_run_id == _int(f.run_id, "run"))
    if f.task_name is not None:
        task_id = conn.execute(sa.select(t.c.task_id).where(t.c.task_name == f.task_name)
                               ).scalar()
        if task_id is None:
            return None
        clauses.append(u.c.task_id == task_id)
    if f.worker:
        match = w.c.worker_name == f.worker
        if f.worker.isdigit():
            match = sa.or_(match, w.c.worker_id == int(f.worker))
        ids = list(conn.execute(sa.select(w.c.worker_id).where(match)).scalars())
        if not ids:
            return None
        clauses.append(u.c.worker_id.in_(ids))
    if f.since is not None or f.until is not None:
        clauses.extend(_taken_between(conn, f.since, f.until))
    return clauses


def _taken_between(conn: sa.Connection, since: float | None,
                   until: float | None) -> list[sa.ColumnElement[bool]]:
    """Units whose current agent was made between `since` and `until`. A narrow range
    (at most `NARROW_RANGE` agents, counted on `ix_agents_created`) drives the page
    from the agents in it; a wide one is checked unit by unit along the unit order,
    where matches are dense enough to fill a page soon."""
    a, u = s.agents, s.units
    bounds = []
    if since is not None:
        bounds.append(a.c.creation_date >= since)
    if until is not None:
        bounds.append(a.c.creation_date <= until)
    in_range = sa.select(sa.literal(1)).select_from(a).where(*bounds).limit(NARROW_RANGE + 1)
    n = conn.execute(sa.select(sa.func.count()).select_from(in_range.subquery())).scalar_one()
    agents = sa.select(a.c.agent_id).where(*bounds)
    if n <= NARROW_RANGE:
        return [u.c.unit_id.in_(sa.select(a.c.unit_id).where(*bounds)),
                u.c.agent_id.in_(agents)]
    return [sa.exists(agents.where(a.c.agent_id == u.c.agent_id))]


def page_units(db: MephistoDB, f: UnitFilter, after: str | None = None,
               limit: int = 50) -> dict[str, Any]:
    """One page of units matching `f`, in unit id order after the cursor `after`.
    Returns {"units": [...], "next": cursor or None, "total": n, "total_capped": bool}:
    the total is counted up to `COUNT_CAP`."""
    f.check()
    if not 1 <= limit <= MAX_PAGE:
        raise BadFilter(f"a page holds 1 to {MAX_PAGE} units, not {limit}")
    cursor = _int(after, "cursor")
    u, a, w, t = s.units, s.agents, s.workers, s.tasks
    with db.read() as conn:
        clauses = _where(conn, f)
        if clauses is None:
            return {"units": [], "next": None, "total": 0, "total_capped": False}
        ids_q = sa.select(u.c.unit_id).where(*clauses)
        count_q = sa.select(sa.func.count()).select_from(ids_q.limit(COUNT_CAP + 1).subquery())
        total = int(conn.execute(count_q).scalar_one())
        if cursor is not None:
            ids_q = ids_q.where(u.c.unit_id > cursor)
        page = ids_q.order_by(u.c.unit_id).limit(limit + 1).subquery()
        rows_q = (
            sa.select(u.c.unit_id, u.c.status, u.c.task_run_id, u.c.pay_amount,
                      u.c.worker_id, w.c.worker_name, t.c.task_name,
                      a.c.creation_date.label("taken"), a.c.update_date.label("updated"),
                      a.c.status.label("agent_status"))
            .select_from(page.join(u, u.c.unit_id == page.c.unit_id)
                         .join(t, t.c.task_id == u.c.task_id)
                         .outerjoin(w, w.c.worker_id == u.c.worker_id)
                         .outerjoin(a, a.c.agent_id == u.c.agent_id))
            .order_by(u.c.unit_id)
        )
        rows = conn.execute(rows_q).all()
    more = len(rows) > limit
    rows = rows[:limit]
    units = [{
        "unit_id": str(r.unit_id), "status": r.status, "run_id": str(r.task_run_id),
        "task_name": r.task_name, "pay_amount": r.pay_amount,
        "worker_id": None if r.worker_id is None else str(r.worker_id),
        "worker_name": r.worker_name, "taken": r.taken, "updated": r.updated,
        "agent_status": r.agent_status,
    } for r in rows]
    return {"units": units, "next": units[-1]["unit_id"] if more else None,
            "total": min(total, COUNT_CAP), "total_capped": total > COUNT_CAP}


def unit_detail(db: MephistoDB, unit_id: str) -> dict[str, Any]:
    """A unit with its agent's inputs and outputs, its worker and its earlier reviews."""
    uid = _unit_key(unit_id)
    u, a, w, t, r = s.units, s.agents, s.workers, s.tasks, s.task_runs
    q = (sa.select(u.c.unit_id, u.c.status, u.c.task_run_id, u.c.pay_amount,
                   u.c.worker_id, u.c.agent_id, u.c.requester_id, w.c.worker_name,
                   t.c.task_name, r.c.provider_type, a.c.state,
                   a.c.status.label("agent_status"), a.c.creation_date.label("taken"),
                   a.c.update_date.label("updated"))
         .select_from(u.join(t, t.c.task_id == u.c.task_id)
                      .join(r, r.c.task_run_id == u.c.task_run_id)
                      .outerjoin(w, w.c.worker_id == u.c.worker_id)
                      .outerjoin(a, a.c.agent_id == u.c.agent_id))
         .where(u.c.unit_id == uid))
    wr = s.worker_review
    with db.read() as conn:
        row = conn.execute(q).first()
        if row is None:
            raise EntryDoesNotExist(f"unit {unit_id} does not exist")
        reviews = [dict(x._mapping) for x in conn.execute(
            sa.select(wr.c.id, wr.c.status, wr.c.review_note, wr.c.bonus, wr.c.blocked_worker,
                      wr.c.unblocked_worker, wr.c.updated_qualification_id,
                      wr.c.updated_qualification_value, wr.c.revoked_qualification_id,
                      wr.c.creation_date)
            .where(wr.c.unit_id == uid).order_by(wr.c.id))]
        blocked = row.worker_id is not None and conn.execute(
            sa.select(sa.func.count()).select_from(s.worker_blocks).where(
                s.worker_blocks.c.worker_id == row.worker_id,
                s.worker_blocks.c.requester_id == row.requester_id)).scalar_one() > 0
    state = row.state or {}
    for review in reviews:
        review["id"] = str(review["id"])
    return {
        "unit_id": str(row.unit_id), "status": row.status, "run_id": str(row.task_run_id),
        "task_name": row.task_name, "provider_type": row.provider_type,
        "pay_amount": row.pay_amount, "agent_id": row.agent_id,
        "agent_status": row.agent_status,
        "worker_id": None if row.worker_id is None else str(row.worker_id),
        "worker_name": row.worker_name, "worker_blocked": blocked,
        "taken": row.taken, "updated": row.updated,
        "inputs": state.get("inputs"), "outputs": state.get("outputs"),
        "times": state.get("times") or {}, "reviews": reviews,
        "live_updates": state.get("live_updates") or [],
        "has_review_template": review_template_path(db, str(row.task_run_id)) is not None,
    }


def _unit_key(unit_id: str) -> int:
    try:
        return int(unit_id)
    except (TypeError, ValueError):
        raise EntryDoesNotExist(f"unit {unit_id!r} does not exist (ids are integers)") from None


def review_template_path(db: MephistoDB, run_id: str) -> Path | None:
    """The run's review template: `review.html` in the directory of the run's
    `blueprint.task_source`, if there is one (None otherwise)."""
    import yaml

    with db.read() as conn:
        params = conn.execute(sa.select(s.task_runs.c.init_params).where(
            s.task_runs.c.task_run_id == int(run_id))).scalar()
    try:
        args = yaml.safe_load(params or "") or {}
    except yaml.YAMLError:
        return None
    blueprint = args.get("blueprint") if isinstance(args, dict) else None
    source = blueprint.get("task_source") if isinstance(blueprint, dict) else None
    if not source or not isinstance(source, str):
        return None
    candidate = Path(source).expanduser().parent / REVIEW_TEMPLATE
    return candidate if candidate.is_file() else None
