"""The units of an export, read in keyset-paged chunks: constant memory at any size.

`ExportFilter` says which units (tasks, runs, unit statuses, a time window);
`resolve_filter` checks it against the database (unknown task or run: an error before
anything is read). `iter_units` yields one flat dict per unit, in unit id order, reading
`CHUNK` units at a time with three queries a chunk:

1. the units, joined with their task, assignment (the inputs), current agent (status,
   times, saved state: the outputs) and worker, a window of unit ids at a time
   (`_pages`: keyset paging whose cost does not depend on the planner's index);
2. the latest `worker_review` row of each unit of the chunk;
3. the bonuses of the chunk's units, summed by payment status.

An agent's outputs are its saved state in the database (uploaded files appear there as
their metadata and path), so no file is opened per unit. `snapshot` opens the read
transaction every query of one export runs in, so two passes over the units (the CSV
writer's column scan, then the rows) see the same data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from mephisto.data_model.status import AssignmentState, PaymentStatus
from mephisto.data_model.unit import GOLD_UNIT_INDEX, SCREENING_UNIT_INDEX, unit_kind
from mephisto.db import schema as s
from mephisto.errors import EntryDoesNotExist, MephistoError

if TYPE_CHECKING:
    from mephisto.db.database import MephistoDB

__all__ = [
    "CHUNK",
    "ExportFilter",
    "count_units",
    "iter_unit_data",
    "iter_units",
    "resolve_filter",
    "snapshot",
    "unit_inputs",
]

CHUNK = 1000  # units a query


@dataclass(frozen=True)
class ExportFilter:
    """Which units to export; every given condition must hold (empty: no condition).

    `since` / `until` are UNIX seconds compared with the time the unit's worker took it
    (its agent's creation): a window keeps only units a worker took in it."""

    task_names: Sequence[str] = ()
    run_ids: Sequence[str] = ()
    statuses: Sequence[str] = ()
    since: float | None = None
    until: float | None = None
    # "task" (units of the run's data), "screening", "gold" (units made to check a
    # worker: kept apart from the dataset); empty: all
    kinds: Sequence[str] = ()


UNIT_KINDS = ("task", "screening", "gold")


@dataclass(frozen=True)
class _Resolved:
    task_ids: tuple[int, ...]
    run_ids: tuple[int, ...]
    statuses: tuple[str, ...]
    since: float | None
    until: float | None
    kinds: tuple[str, ...] = ()


def _run_key(run_id: str) -> int:
    text = str(run_id).strip()
    if not text.isdigit() or int(text) < 1:
        raise MephistoError(f"a run id is a positive whole number, not {run_id!r}")
    return int(text)


def _time(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value):
        raise MephistoError(f"{name} is a time in UNIX seconds, not {value!r}")
    return float(value)


def resolve_filter(db: MephistoDB, flt: ExportFilter) -> _Resolved:
    """Check `flt` and turn names into ids. Raises `MephistoError` for a malformed value
    (`UnknownStatus` for a status) and `EntryDoesNotExist` for an unknown task or run,
    or a run that belongs to none of the given tasks."""
    statuses = tuple(dict.fromkeys(str(AssignmentState(x)) for x in flt.statuses))
    if str(AssignmentState.MIXED) in statuses:
        raise MephistoError("'mixed' is an assignment's status, never a unit's")
    since, until = _time("since", flt.since), _time("until", flt.until)
    if since is not None and until is not None and since > until:
        raise MephistoError("since is after until: no unit can match")
    kinds = tuple(dict.fromkeys(flt.kinds))
    unknown = [k for k in kinds if k not in UNIT_KINDS]
    if unknown:
        raise MephistoError(f"unknown unit kind {unknown[0]!r}; valid: {', '.join(UNIT_KINDS)}")
    run_keys = tuple(dict.fromkeys(_run_key(r) for r in flt.run_ids))
    t, r = s.tasks, s.task_runs
    with db.read() as conn:
        task_ids: dict[str, int] = {}
        names = list(dict.fromkeys(flt.task_names))
        if names:
            found = dict(conn.execute(sa.select(t.c.task_name, t.c.task_id)
                                      .where(t.c.task_name.in_(names))).all())
            missing = [n for n in names if n not in found]
            if missing:
                raise EntryDoesNotExist(
                    f"no task named {', '.join(repr(n) for n in missing)}")
            task_ids = {n: int(found[n]) for n in names}
        if run_keys:
            runs = dict(conn.execute(sa.select(r.c.task_run_id, r.c.task_id)
                                     .where(r.c.task_run_id.in_(run_keys))).all())
            missing_runs = [str(k) for k in run_keys if k not in runs]
            if missing_runs:
                raise EntryDoesNotExist(f"no task run {', '.join(missing_runs)}")
            if task_ids:
                outside = [str(k) for k in run_keys if runs[k] not in task_ids.values()]
                if outside:
                    raise EntryDoesNotExist(
                        f"task run {', '.join(outside)} is not a run of "
                        f"{', '.join(repr(n) for n in task_ids)}")
    return _Resolved(tuple(task_ids.values()), run_keys, statuses, since, until, kinds)


@contextmanager
def snapshot(db: MephistoDB) -> Iterator[sa.Connection]:
    """One read-only transaction for a whole export: on PostgreSQL REPEATABLE READ, on
    SQLite (WAL) a read transaction, which sees one state of the database throughout
    and does not block writers."""
    with db.engine.connect() as conn:
        if db.dialect == "postgresql":
            conn = conn.execution_options(isolation_level="REPEATABLE READ",
                                          postgresql_readonly=True)
        with conn.begin():
            yield conn


def _where(res: _Resolved) -> list[sa.ColumnElement[bool]]:
    u, a = s.units, s.agents
    clauses: list[sa.ColumnElement[bool]] = []
    if res.task_ids:
        clauses.append(u.c.task_id.in_(res.task_ids))
    if res.run_ids:
        clauses.append(u.c.task_run_id.in_(res.run_ids))
    if res.statuses:
        clauses.append(u.c.status.in_(res.statuses))
    if res.since is not None:
        clauses.append(a.c.creation_date >= res.since)
    if res.until is not None:
        clauses.append(a.c.creation_date <= res.until)
    if res.kinds and set(res.kinds) != set(UNIT_KINDS):
        index = {"task": u.c.unit_index >= 0, "screening": u.c.unit_index == SCREENING_UNIT_INDEX,
                 "gold": u.c.unit_index == GOLD_UNIT_INDEX}
        clauses.append(sa.or_(*(index[k] for k in res.kinds)))
    return clauses


def _from() -> Any:
    u, a, w, asg, t = s.units, s.agents, s.workers, s.assignments, s.tasks
    return (u.join(t, t.c.task_id == u.c.task_id)
            .join(asg, asg.c.assignment_id == u.c.assignment_id)
            .outerjoin(a, a.c.agent_id == u.c.agent_id)
            .outerjoin(w, w.c.worker_id == a.c.worker_id))


def count_units(conn: sa.Connection, res: _Resolved) -> int:
    """How many units the export will write (for a progress bar)."""
    query = sa.select(sa.func.count()).select_from(_from()).where(*_where(res))
    return int(conn.execute(query).scalar_one())


def _pages(conn: sa.Connection, res: _Resolved, columns: Sequence[Any],
           chunk: int) -> Iterator[Sequence[Any]]:
    """The units, `chunk` at a time, in unit id order (the id first in each row).

    Each query reads a window of unit ids (`last < unit_id <= last + span`), so that no
    query costs more than its window whichever index the planner picks: ordering a
    run's units by id from the `(task_run_id, status, unit_id)` index, say, would
    otherwise sort all of the run's remaining units for every chunk. The window follows
    the density of matching units: after a full chunk it is as wide as that chunk's
    ids were, and it doubles while windows come back less than half full."""
    u = s.units
    filtered = sa.select(u.c.unit_id).select_from(_from()).where(*_where(res)).subquery()
    low, high = conn.execute(sa.select(sa.func.min(filtered.c.unit_id),
                                       sa.func.max(filtered.c.unit_id))).one()
    if low is None:
        return
    base = sa.select(u.c.unit_id, *columns).select_from(_from()).where(*_where(res))
    last, span = low - 1, chunk
    while last < high:
        end = min(last + span, high)
        rows = conn.execute(base.where(u.c.unit_id > last, u.c.unit_id <= end)
                            .order_by(u.c.unit_id).limit(chunk)).all()
        if len(rows) == chunk:
            span = max(chunk, rows[-1][0] - last)
            last = rows[-1][0]
        else:
            if len(rows) < chunk // 2:
                span *= 2
            last = end
        if rows:
            yield rows


def unit_inputs(data: Any, unit_index: int) -> Any:
    """What the unit's worker was given: an assignment's `shared` data with the unit's
    own `unit_data` on top (as the launcher computes it), or the data as stored. A
    negative index (a screening or gold unit, alone in its assignment) has no own data."""
    if not (isinstance(data, dict) and "shared" in data and "unit_data" in data):
        return data
    shared, unit_data = data["shared"], data["unit_data"]
    own = unit_data[unit_index] if isinstance(unit_data, list) \
        and 0 <= unit_index < len(unit_data) else {}
    if isinstance(shared, dict) and isinstance(own, dict):
        return {**shared, **own}
    return own or shared


def iter_unit_data(conn: sa.Connection, res: _Resolved,
                   chunk: int = CHUNK) -> Iterator[tuple[Any, Any]]:
    """`(inputs, outputs)` of every unit, in the order of `iter_units`: the cheap pass
    a CSV export makes to learn its columns (one query a chunk, no joins beyond the
    filters')."""
    u, a, asg = s.units, s.agents, s.assignments
    for rows in _pages(conn, res, (u.c.unit_index, asg.c.data, a.c.state), chunk):
        for _unit_id, unit_index, data, state in rows:
            outputs = state.get("outputs") if isinstance(state, dict) else None
            yield unit_inputs(data, unit_index), outputs


def iter_units(conn: sa.Connection, res: _Resolved,
               chunk: int = CHUNK) -> Iterator[dict[str, Any]]:
    """Every unit of the export as a dict (see `mephisto.tools.export` for the fields),
    in unit id order, `chunk` units at a time."""
    u, a, w, asg, t = s.units, s.agents, s.workers, s.assignments, s.tasks
    columns = (u.c.assignment_id, u.c.unit_index, u.c.task_run_id, u.c.task_id,
               t.c.task_name, u.c.agent_id, a.c.worker_id, w.c.worker_name,
               u.c.provider_type, u.c.status, a.c.status, u.c.pay_amount,
               u.c.creation_date, a.c.creation_date, a.c.update_date, asg.c.data, a.c.state)
    for rows in _pages(conn, res, columns, chunk):
        ids = [row[0] for row in rows]
        reviews = _latest_reviews(conn, ids)
        bonuses = _bonuses(conn, ids)
        for (unit_id, assignment_id, unit_index, run_id, task_id, task_name, agent_id,
             worker_id, worker_name, provider_type, status, agent_status, reward,
             created, accepted, updated, data, state) in rows:
            state = state if isinstance(state, dict) else {}
            times = state.get("times")
            times = times if isinstance(times, dict) else {}
            start, end = times.get("task_start"), times.get("task_end")
            paid, unpaid = bonuses.get(unit_id, (0.0, 0.0))
            yield {
                "unit_id": str(unit_id),
                "assignment_id": str(assignment_id),
                "unit_index": unit_index,
                "unit_kind": unit_kind(unit_index),
                "task_run_id": str(run_id),
                "task_id": str(task_id),
                "task_name": task_name,
                "agent_id": agent_id,
                "worker_id": None if worker_id is None else str(worker_id),
                "worker_name": worker_name,
                "provider_type": provider_type,
                "unit_status": status,
                "agent_status": agent_status,
                "reward": reward,
                "created_at": created,
                "accepted_at": accepted,
                "started_at": start,
                "submitted_at": end,
                "duration": _duration(start, end),
                "updated_at": updated,
                "review": reviews.get(unit_id),
                "bonus_paid": paid,
                "bonus_unpaid": unpaid,
                "inputs": unit_inputs(data, unit_index),
                "outputs": state.get("outputs"),
            }


def _duration(start: Any, end: Any) -> float | None:
    if isinstance(start, (int, float)) and isinstance(end, (int, float)):
        return round(float(end) - float(start), 3)
    return None


def _latest_reviews(conn: sa.Connection, unit_ids: list[int]) -> dict[int, dict[str, Any]]:
    r = s.worker_review
    latest = (sa.select(sa.func.max(r.c.id)).where(r.c.unit_id.in_(unit_ids))
              .group_by(r.c.unit_id))
    query = sa.select(r.c.unit_id, r.c.status, r.c.review_note, r.c.bonus,
                      r.c.blocked_worker, r.c.creation_date).where(r.c.id.in_(latest))
    return {
        unit_id: {"status": status, "note": note, "bonus": bonus, "blocked_worker": blocked,
                  "time": stamp}
        for unit_id, status, note, bonus, blocked, stamp in conn.execute(query)
    }


def _bonuses(conn: sa.Connection, unit_ids: list[int]) -> dict[int, tuple[float, float]]:
    """Bonus dollars by unit: (paid, recorded or failed: not paid yet)."""
    p = s.payments
    query = (sa.select(p.c.unit_id, p.c.status, sa.func.sum(p.c.amount))
             .where(p.c.unit_id.in_(unit_ids)).group_by(p.c.unit_id, p.c.status))
    out: dict[int, tuple[float, float]] = {}
    for unit_id, status, amount in conn.execute(query):
        paid, unpaid = out.get(unit_id, (0.0, 0.0))
        if status == PaymentStatus.PAID:
            paid += float(amount)
        else:
            unpaid += float(amount)
        out[unit_id] = (paid, unpaid)
    return out
