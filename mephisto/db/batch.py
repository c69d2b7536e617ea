"""A live run's database work: typed operations for the writer thread, and bulk SQL.

`MephistoDB` (database.py) is Mephisto's entity-by-entity API; a live run needs
set-based statements instead, so that a commit of many requests costs a few statements,
not a few per request. Everything here takes the database first and runs on the
`DBWriter`'s thread (writes, in its group commit) or its reader threads (reads):

- bulk statements: `new_assignments_with_units`, `update_units_status`,
  `create_agents`, `complete_agents`, `find_or_new_workers`, `find_blocked_workers`;
- batches (`Batch`: one set-based call for every item of a commit, `run_one` to find the
  culprit when it fails): `CREATE_AGENTS`, `COMPLETE_AGENTS`, `LOAD_WORKERS`, and
  `FIRST_AGENTS` (a worker new to the run and its first agent in one commit);
- the run's other reads and writes (`load_run`, `finish_onboarding`, ...).

Status changes take their allowed current statuses from `data_model/status.py` and an
agent's saved state is merged by `merge_agent_state`: the same rules as `MephistoDB`'s
single-row methods, and the single-item path of each batch is the bulk path with one
item.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from mephisto.data_model.agent import OnboardingAgent, merge_agent_state
from mephisto.data_model.status import (
    AgentState,
    AssignmentState,
    agent_update_sources,
    unit_sources,
)
from mephisto.db import schema as s
from mephisto.db.rows import (
    dialect_insert,
    driver_insert_many,
    id_spans,
    key,
    now,
    sql_list,
    stored_states,
    translate,
)
from mephisto.errors import (
    DatabaseError,
    EntryAlreadyExists,
    EntryDoesNotExist,
    InvalidTransition,
    NotEligible,
)

if TYPE_CHECKING:
    from mephisto.db.database import MephistoDB

_DROPPED = frozenset(str(x) for x in AgentState.dropped())
_ACTIVE = [str(x) for x in AgentState.active()]

# -- bulk statements --------------------------------------------------------------------


def new_assignments_with_units(
    db: MephistoDB,
    task_run_id: str,
    assignment_data: Sequence[Any],
    pay_amount: float,
    units_per_assignment: int | Sequence[int] = 1,
    status: str = AssignmentState.CREATED,
    first_index: int = 0,
) -> list[tuple[str, list[str]]]:
    """Create assignments (one per `assignment_data` item) and their units at once.

    `units_per_assignment` is one count for all or one per assignment. Returns
    `[(assignment_id, [unit_id, ...]), ...]` in input order. Two multi-row INSERTs in one
    transaction: a 100,000-unit launch is one call. Units are numbered from `first_index`
    (a screening or gold unit is the one unit of its assignment, numbered -1 or -2).
    """
    n = len(assignment_data)
    counts = (
        [units_per_assignment] * n
        if isinstance(units_per_assignment, int)
        else list(units_per_assignment)
    )
    if len(counts) != n:
        raise DatabaseError("units_per_assignment must give one count per assignment")
    if any(c < 1 for c in counts):
        raise DatabaseError("every assignment needs at least one unit")
    status = str(AssignmentState(status))
    run = db.get_task_run(task_run_id)
    common = {
        "task_id": int(run["task_id"]),
        "task_run_id": int(run["task_run_id"]),
        "requester_id": int(run["requester_id"]),
        "task_type": run["task_type"],
        "provider_type": run["provider_type"],
        "sandbox": run["sandbox"],
        "creation_date": now(),
    }
    with db.transaction() as conn:
        a_ids = _insert_many(
            db, conn, s.assignments, "assignment_id",
            [{**common, "data": d} for d in assignment_data],
        )
        unit_rows = [
            {**common, "assignment_id": a_id, "unit_index": first_index + i,
             "pay_amount": pay_amount, "status": status}
            for a_id, count in zip(a_ids, counts, strict=True)
            for i in range(count)
        ]
        u_ids = _insert_many(db, conn, s.units, "unit_id", unit_rows)
    out: list[tuple[str, list[str]]] = []
    pos = 0
    for a_id, count in zip(a_ids, counts, strict=True):
        out.append((str(a_id), [str(u) for u in u_ids[pos : pos + count]]))
        pos += count
    return out


def _insert_many(
    db: MephistoDB, conn: sa.Connection, table: sa.Table, pk: str, rows: list[dict[str, Any]]
) -> list[int]:
    """Insert rows, returning their new ids in input order."""
    if not rows:
        return []
    if db.dialect == "sqlite":
        # Inside our write-locked transaction rowids are handed out consecutively from
        # max+1, so the ids are known without RETURNING (3x faster here).
        start = conn.execute(sa.select(sa.func.max(table.c[pk]))).scalar() or 0
        for i, row in enumerate(rows, start=start + 1):
            row[pk] = i
        driver_insert_many(conn, table, rows)
        return [r[pk] for r in rows]
    result = conn.execute(table.insert().returning(table.c[pk], sort_by_parameter_order=True), rows)
    return [r[0] for r in result]


def update_units_status(
    db: MephistoDB, unit_ids: Sequence[str], status: str, clear_agent: bool = False
) -> int:
    """Move many units to `status` in one statement; units for which the change is not
    legal are left alone. Returns how many changed."""
    if not unit_ids:
        return 0
    target = AssignmentState(status)
    t = s.units
    values: dict[str, Any] = {"status": str(target)}
    if clear_agent:
        values.update(agent_id=None, worker_id=None)
    spans = id_spans(key("units", u) for u in unit_ids)
    changed = 0
    with db.transaction() as conn:
        for start in range(0, len(spans), 500):  # stay under parameter limits
            res = conn.execute(
                t.update()
                .where(
                    sa.or_(*(t.c.unit_id.between(a, b) for a, b in spans[start : start + 500])),
                    t.c.status.in_([str(x) for x in unit_sources(target)]),
                )
                .values(values)
            )
            changed += res.rowcount
    return changed


# The bulk agent statements take their allowed current statuses from the same tables
# as MephistoDB's single-row methods (a new agent takes only a LAUNCHED unit).
_ASSIGN_UNIT = sa.text(
    f"UPDATE units SET status = '{AssignmentState.ASSIGNED}', agent_id = :agent_id, "
    f"worker_id = :worker_id WHERE unit_id = :unit_id AND status = '{AssignmentState.LAUNCHED}'"
)
_INSERT_AGENT = s.agents.insert()
_COMPLETE_AGENT = sa.text(
    f"UPDATE agents SET status = '{AgentState.COMPLETED}', state = :state, update_date = :now "
    f"WHERE agent_id = :agent_id "
    f"AND status IN ({sql_list(agent_update_sources(AgentState.COMPLETED))})"
).bindparams(sa.bindparam("state", type_=sa.JSON))
_COMPLETE_UNIT = sa.text(
    f"UPDATE units SET status = '{AssignmentState.COMPLETED}' WHERE unit_id = :unit_id "
    f"AND agent_id = :agent_id AND status IN ({sql_list(unit_sources(AssignmentState.COMPLETED))})"
)


def create_agents(db: MephistoDB, agents: Sequence[Mapping[str, Any]]) -> None:
    """Create agents and assign each its unit, in two statements. Each mapping has
    `agent_id`, `worker_id`, `unit_id`, `task_id`, `task_run_id`, `assignment_id`,
    `task_type`, `provider_type`, `status`, `state`, and optionally `task_maximum` (the
    task's `maximum_units_per_worker`; counted in the database, see
    `_check_task_maximums`). All or nothing: if a unit is not LAUNCHED,
    `InvalidTransition`; a worker's second agent on one assignment, `EntryAlreadyExists`;
    a worker past the maximum, `NotEligible`."""
    if agents:
        with db.savepoint() as conn:
            _insert_agents(conn, agents)


def _insert_agents(conn: sa.Connection, agents: Sequence[Mapping[str, Any]]) -> None:
    """`create_agents` without its savepoint, for the batches: the writer runs each
    batch call in a savepoint or a transaction of its own already, and undoes it all
    when this raises."""
    _check_task_maximums(conn, agents)
    stamp = now()
    rows = [
        {
            "agent_id": a["agent_id"],
            "worker_id": int(a["worker_id"]),
            "unit_id": int(a["unit_id"]),
            "task_id": int(a["task_id"]),
            "task_run_id": int(a["task_run_id"]),
            "assignment_id": int(a["assignment_id"]),
            "task_type": a["task_type"],
            "provider_type": a["provider_type"],
            "status": str(AgentState(a.get("status", AgentState.NONE))),
            "state": a.get("state"),
            "creation_date": stamp,
            "update_date": stamp,
        }
        for a in agents
    ]
    try:
        conn.execute(_INSERT_AGENT, rows[0] if len(rows) == 1 else rows)
    except sa.exc.IntegrityError as exc:
        raise translate(exc, "agents", {}) from None
    res = conn.execute(_ASSIGN_UNIT, rows)
    if res.rowcount != len(rows):
        raise InvalidTransition("unit", "(bulk)", "not launched", AssignmentState.ASSIGNED)


def _check_task_maximums(conn: sa.Connection, agents: Sequence[Mapping[str, Any]]) -> None:
    """`NotEligible` if a new agent would give its worker more than `task_maximum` units
    of the task (agents not dropped, in any run). Operators of two runs of one task, in
    two processes, each count only what they have seen, so the count is made here, with
    the workers' rows held (PostgreSQL: FOR NO KEY UPDATE, which plain agent inserts do
    not wait for; SQLite: the write lock) until the agents are committed."""
    capped = [a for a in agents if a.get("task_maximum")]
    if not capped:
        return
    w, a = s.workers, s.agents
    worker_ids = sorted({int(x["worker_id"]) for x in capped})
    task_ids = sorted({int(x["task_id"]) for x in capped})
    conn.execute(sa.select(w.c.worker_id).where(w.c.worker_id.in_(worker_ids))
                 .order_by(w.c.worker_id).with_for_update(key_share=True))
    held = {(wid, tid): n for wid, tid, n in conn.execute(
        sa.select(a.c.worker_id, a.c.task_id, sa.func.count())
        .where(a.c.worker_id.in_(worker_ids), a.c.task_id.in_(task_ids),
               a.c.status.not_in(_DROPPED))
        .group_by(a.c.worker_id, a.c.task_id))}
    for agent in capped:
        pair = (int(agent["worker_id"]), int(agent["task_id"]))
        held[pair] = held.get(pair, 0) + 1
        if held[pair] > int(agent["task_maximum"]):
            raise NotEligible(f"worker {pair[0]} has done the maximum of "
                              f"{agent['task_maximum']} units of task {pair[1]}", str(pair[0]))


def complete_agents(
    db: MephistoDB, submissions: Sequence[tuple[str, str, Any]],
    superseding: Collection[str] = (),
) -> None:
    """Submissions: `(agent_id, unit_id, state)` each, in at most three statements.
    Every agent must be at work (else `InvalidTransition`, nothing changed: a completion
    is never rewritten); its state is merged into the stored one; its unit, if still its
    own, becomes COMPLETED.

    `superseding` names agents whose submitted state is known to hold every key stored
    for them (a live run knows what it wrote): their stored state is not read, which
    spares a query per commit on the run's hot path."""
    if submissions:
        with db.savepoint() as conn:
            _complete_agents(conn, submissions, superseding)


def _complete_agents(
    conn: sa.Connection, submissions: Sequence[tuple[str, str, Any]],
    superseding: Collection[str],
) -> None:
    """`complete_agents` without its savepoint, for the batches (as `_insert_agents`)."""
    stamp = now()
    to_read = [a for a, _u, _st in submissions if a not in superseding]
    stored = stored_states(conn, "agents", to_read, lock=True) if to_read else {}
    agent_rows = [
        {"agent_id": a, "state": merge_agent_state(a, stored.get(a), st), "now": stamp}
        for a, _u, st in submissions
    ]
    unit_rows = [{"agent_id": a, "unit_id": int(u)} for a, u, _st in submissions]
    one = len(submissions) == 1
    res = conn.execute(_COMPLETE_AGENT, agent_rows[0] if one else agent_rows)
    if res.rowcount != len(agent_rows):
        raise InvalidTransition("agent", "(bulk)", "not active", AgentState.COMPLETED)
    conn.execute(_COMPLETE_UNIT, unit_rows[0] if one else unit_rows)


_FIND_WORKERS = sa.select(s.workers.c.worker_name, s.workers.c.worker_id).where(
    s.workers.c.provider_type == sa.bindparam("provider_type"),
    s.workers.c.worker_name.in_(sa.bindparam("names", expanding=True)),
)
# by dialect: built once (building a statement costs more than running it here)
_NEW_WORKERS = {
    dialect: dialect_insert(dialect, s.workers).on_conflict_do_nothing()
    .returning(s.workers.c.worker_name, s.workers.c.worker_id)
    for dialect in ("sqlite", "postgresql")
}


def find_or_new_workers(
    db: MephistoDB, worker_names: Sequence[str], provider_type: str,
    created: set[str] | None = None,
) -> dict[str, str]:
    """Worker ids by name, creating the missing workers: one statement when all are
    new (a crowd's common case: a new person each unit), two for any number of names
    otherwise (race-safe: a worker created meanwhile by another process is found). The
    names of the workers this call created go into `created` when given."""
    names = sorted(set(worker_names))
    if not names:
        return {}
    stamp = now()
    rows = [{"worker_name": n, "provider_type": provider_type, "creation_date": stamp}
            for n in names]
    with db.transaction() as conn:
        found = {n: str(i) for n, i in conn.execute(
            _NEW_WORKERS[db.dialect], rows[0] if len(rows) == 1 else rows)}
        if created is not None:
            created.update(found)
        if len(found) < len(names):  # the others exist already
            found.update((n, str(i)) for n, i in conn.execute(_FIND_WORKERS, {
                "provider_type": provider_type, "names": [n for n in names if n not in found]}))
    return found


def find_blocked_workers(
    db: MephistoDB, worker_ids: Sequence[str], requester_id: str | None = None
) -> set[str]:
    """Which of `worker_ids` are blocked (by `requester_id`, or by any requester)."""
    if not worker_ids:
        return set()
    t = s.worker_blocks
    keys = [key("workers", w) for w in worker_ids]
    query = sa.select(t.c.worker_id).where(t.c.worker_id.in_(keys)).distinct()
    if requester_id is not None:
        query = query.where(t.c.requester_id == key("requesters", requester_id))
    with db.read() as conn:
        return {str(row[0]) for row in conn.execute(query)}


# -- workers ------------------------------------------------------------------------------


@dataclass
class WorkerRecord:
    """What a live run reads of a worker when it first sees them."""

    worker_id: str
    worker_name: str
    assignments: set[str] = field(default_factory=set)  # of this run, ever worked on
    task_units: int = 0  # units of this task (all runs) counted toward the maximum
    granted: dict[str, int] = field(default_factory=dict)  # qualification name -> value
    blocked: bool = False  # by this run's requester


Standing = tuple[dict[str, int], bool]


# What a run reads of workers it has not seen yet, or whose standing is due to be read
# again: statements built once (building one costs more than running it here).
_GRANTED = sa.select(
    s.granted_qualifications.c.worker_id, s.qualifications.c.qualification_name,
    s.granted_qualifications.c.value,
).join_from(s.granted_qualifications, s.qualifications).where(
    s.granted_qualifications.c.worker_id.in_(sa.bindparam("workers", expanding=True)))
_BLOCKED_BY = sa.select(s.worker_blocks.c.worker_id).where(
    s.worker_blocks.c.worker_id.in_(sa.bindparam("workers", expanding=True)),
    s.worker_blocks.c.requester_id == sa.bindparam("requester"),
)
_PAST_AGENTS = sa.select(
    s.agents.c.worker_id, s.agents.c.task_run_id, s.agents.c.assignment_id,
    s.agents.c.status,
).where(
    s.agents.c.worker_id.in_(sa.bindparam("workers", expanding=True)),
    s.agents.c.task_id == sa.bindparam("task"),
)


def workers_standing(
    db: MephistoDB, worker_ids: list[str], requester_id: str
) -> dict[str, Standing]:
    """Each worker's granted qualifications (name -> value) and whether this requester
    blocked them: two queries whatever the number of workers."""
    granted: dict[str, dict[str, int]] = {worker_id: {} for worker_id in worker_ids}
    keys = [key("workers", w) for w in worker_ids]
    with db.read() as conn:
        for worker, name, value in conn.execute(_GRANTED, {"workers": keys}):
            granted[str(worker)][name] = value
        blocked = {str(row[0]) for row in conn.execute(
            _BLOCKED_BY, {"workers": keys, "requester": key("requesters", requester_id)})}
    return {worker_id: (granted[worker_id], worker_id in blocked) for worker_id in worker_ids}


# name, provider type, task run, task, requester
LoadItem = tuple[str, str, str, str, str]


def load_workers(
    db: MephistoDB, items: Sequence[LoadItem]
) -> tuple[dict[str, WorkerRecord], set[str]]:
    """Workers seen for the first time (all with the same provider, run, task and
    requester), found or created together, by name; and the names of those created now.
    Their past agents on this task, qualifications and blocks are read with one query
    each (a worker made just now has none to read)."""
    provider_type, task_run_id, task_id, requester_id = items[0][1:]
    created: set[str] = set()
    ids = find_or_new_workers(db, [item[0] for item in items], provider_type, created)
    records = {name: WorkerRecord(ids[name], name) for name in ids}
    by_id = {record.worker_id: record for name, record in records.items()
             if name not in created}
    if not by_id:
        return records, created
    with db.read() as conn:
        past = conn.execute(_PAST_AGENTS, {
            "workers": [key("workers", w) for w in by_id], "task": key("tasks", task_id)})
        for worker, run, assignment, status in past:
            record = by_id[str(worker)]
            if str(run) == task_run_id:
                record.assignments.add(str(assignment))
            if status not in _DROPPED:
                record.task_units += 1
    for worker_id, (granted, blocked) in workers_standing(db, list(by_id), requester_id).items():
        by_id[worker_id].granted, by_id[worker_id].blocked = granted, blocked
    return records, created


class _LoadWorkers:
    """Workers seen for the first time, batched (`load_workers`)."""

    def run_many(self, db: MephistoDB, items: list[LoadItem]) -> list[WorkerRecord]:
        if any(item[1:] != items[0][1:] for item in items):
            return [self.run_one(db, item) for item in items]
        records, _created = load_workers(db, items)
        return [records[item[0]] for item in items]

    def run_one(self, db: MephistoDB, item: LoadItem) -> WorkerRecord:
        return self.run_many(db, [item])[0]


LOAD_WORKERS = _LoadWorkers()


# -- agents -------------------------------------------------------------------------------


class _CreateAgents:
    """Agent creation, batched: a commit's new agents in two statements."""

    def run_many(self, db: MephistoDB, items: list[dict[str, Any]]) -> list[str]:
        with db.transaction() as conn:  # the writer's: no savepoint of its own
            _insert_agents(conn, items)
        return [item["agent_id"] for item in items]

    def run_one(self, db: MephistoDB, item: dict[str, Any]) -> str:
        return self.run_many(db, [item])[0]


CREATE_AGENTS = _CreateAgents()

# a worker's first request on a run: the worker to find or create; the agent (every key
# `create_agents` takes but `worker_id`) to create if the worker is new; and whether it
# stands for a worker found in the database, given what was read of them (called on the
# writer's thread: it must only read its argument and the run's fixed settings)
FirstRequest = tuple[LoadItem, dict[str, Any], Callable[[WorkerRecord], bool]]


@dataclass
class FirstSight:
    """What a worker's first request committed: the worker as found or created, whether
    it was created now, whether its agent was created in the same commit (`agent_made`)
    and, for a new worker, why not (`agent_error`: `EntryAlreadyExists`,
    `InvalidTransition`, `EntryDoesNotExist`). A worker found in the database whose
    agent was not made is only loaded: the run decides its unit from what was read."""

    record: WorkerRecord
    created: bool
    agent_made: bool = False
    agent_error: Exception | None = None


_REFUSED_AGENT = (EntryAlreadyExists, InvalidTransition, EntryDoesNotExist)


class _FirstAgents:
    """Workers' first requests, batched, each in one commit with what it decides: a new
    worker (no past agents, qualifications or blocks, so the unit chosen for it stands)
    is created together with its agent; a worker found in the database gets the agent
    in that commit too when, from what was read of them, the unit chosen still stands."""

    def run_many(self, db: MephistoDB, items: list[FirstRequest]) -> list[FirstSight]:
        context = items[0][0][1:]
        if any(load[1:] != context for load, _agent, _stands in items):
            return [self.run_one(db, item) for item in items]
        records, created = load_workers(db, [load for load, _agent, _stands in items])
        made = [load[0] in created or stands(records[load[0]])
                for load, _agent, stands in items]
        agents = [{**agent, "worker_id": records[load[0]].worker_id}
                  for (load, agent, _stands), make in zip(items, made, strict=True) if make]
        if agents:
            # the writer's; on failure, run_one each: a refused agent is then only its own
            with db.transaction() as conn:
                _insert_agents(conn, agents)
        return [FirstSight(records[load[0]], load[0] in created, make)
                for (load, _agent, _stands), make in zip(items, made, strict=True)]

    def run_one(self, db: MephistoDB, item: FirstRequest) -> FirstSight:
        load, agent, stands = item
        records, created = load_workers(db, [load])
        record = records[load[0]]
        new = load[0] in created
        if not new and not stands(record):
            return FirstSight(record, False)
        try:
            with db.savepoint() as conn:  # the worker is kept when its agent is refused
                _insert_agents(conn, [{**agent, "worker_id": record.worker_id}])
        except _REFUSED_AGENT as exc:
            return FirstSight(record, new, False, exc if new else None)
        except NotEligible:  # at the task's maximum, counting other processes' runs
            if new:
                raise
            return FirstSight(record, False)  # the run's usual path refuses them
        return FirstSight(record, new, True)


FIRST_AGENTS = _FirstAgents()


def agent_worker(db: MephistoDB, agent_id: str) -> str | None:
    """The worker id of an agent, None if there is no such agent."""
    try:
        return str(db.get_agent(agent_id)["worker_id"])
    except EntryDoesNotExist:
        return None

# agent id, unit id, state, and whether the state holds every key stored for the agent
# (the live run knows: nothing but its own creation state was written, no metadata)
Submission = tuple[str, str, Any, bool]


class _CompleteAgents:
    """Submissions, batched: a commit's submits in a few statements."""

    def run_many(self, db: MephistoDB, items: list[Submission]) -> list[None]:
        with db.transaction() as conn:  # the writer's: no savepoint of its own
            _complete_agents(conn, [(a, u, st) for a, u, st, _whole in items],
                             superseding={a for a, _u, _st, whole in items if whole})
        return [None] * len(items)

    def run_one(self, db: MephistoDB, item: Submission) -> None:
        self.run_many(db, [item])


COMPLETE_AGENTS = _CompleteAgents()


def agent_exists(db: MephistoDB, agent_id: str) -> bool:
    try:
        db.get_agent(agent_id)
    except EntryDoesNotExist:
        return False
    return True


def stored_agent(db: MephistoDB, agent_id: str, task_run_id: str) -> dict[str, Any] | None:
    """An agent (or onboarding agent) of this run as stored: whether it is onboarding,
    its worker's name, status and outputs; None if it is not one of this run's."""
    onboarding = OnboardingAgent.is_onboarding_id(agent_id)
    try:
        row = db.get_onboarding_agent(agent_id) if onboarding else db.get_agent(agent_id)
    except EntryDoesNotExist:
        return None
    if row["task_run_id"] != task_run_id:
        return None
    state = row.get("state") or {}
    return {
        "onboarding": onboarding,
        "status": row["status"],
        "worker_name": db.get_worker(row["worker_id"])["worker_name"],
        "outputs": state.get("outputs") if isinstance(state, dict) else None,
    }


def merge_metadata(db: MephistoDB, agent_id: str, metadata: dict[str, Any]) -> None:
    if OnboardingAgent.is_onboarding_id(agent_id):
        db.update_onboarding_agent(agent_id, state={"metadata": metadata})
    else:
        db.update_agent(agent_id, state={"metadata": metadata})


def update_agent_status(db: MephistoDB, agent_id: str, status: str) -> None:
    if OnboardingAgent.is_onboarding_id(agent_id):
        db.update_onboarding_agent(agent_id, status=status)
    else:
        db.update_agent(agent_id, status=status)


def create_onboarding_agent(
    db: MephistoDB, worker_id: str, task_id: str, task_run_id: str, task_type: str
) -> str:
    return db.new_onboarding_agent(
        worker_id, task_id, task_run_id, task_type, status=AgentState.ONBOARDING
    )


def finish_onboarding(
    db: MephistoDB, agent_id: str, worker_id: str, qualification: str, passed: bool,
    data: dict[str, Any],
) -> bool:
    """Record an onboarding's outcome; True if the worker now holds the qualification.
    A failure recorded before (another run, another tab) stands until a requester clears
    it: a pass does not overturn it."""
    status = AgentState.APPROVED if passed else AgentState.REJECTED
    db.update_onboarding_agent(agent_id, status=status, state=data)
    qid = db.find_or_make_qualification(qualification)
    if passed:  # one statement: a failure recorded by another run meanwhile stands
        return bool(db.grant_qualification(qid, worker_id, 1, keep_zero=True))
    db.grant_qualification(qid, worker_id, 0)
    return False


# -- the run ------------------------------------------------------------------------------


def mark_launched(db: MephistoDB, unit_ids: list[str]) -> int:
    return update_units_status(db, unit_ids, AssignmentState.LAUNCHED)


def mark_expired(db: MephistoDB, unit_ids: list[str]) -> int:
    return update_units_status(db, unit_ids, AssignmentState.EXPIRED)


def mark_completed(db: MephistoDB, task_run_id: str) -> None:
    db.update_task_run(task_run_id, is_completed=True)


@dataclass
class StoredRun:
    """A run as stored, for resuming it: its units (rows with their status), its
    assignments' data by id, and its agents at work (rows with their worker's name)."""

    units: list[dict[str, Any]]
    assignments: dict[str, Any]
    agents: list[dict[str, Any]]


def load_run(db: MephistoDB, task_run_id: str) -> StoredRun:
    units = [u._row | {"status": u.db_status} for u in db.find_units(task_run_id=task_run_id)]
    assignments = {a.db_id: a.data for a in db.find_assignments(task_run_id=task_run_id)}
    agents = []
    names: dict[str, str] = {}
    for agent in db.find_agents(task_run_id=task_run_id, status=_ACTIVE):
        if agent.worker_id not in names:
            names[agent.worker_id] = db.get_worker(agent.worker_id)["worker_name"]
        agents.append(agent._row | {"status": agent.db_status,
                                    "worker_name": names[agent.worker_id]})
    return StoredRun(units, assignments, agents)


def expire_stale_onboarding(db: MephistoDB, task_run_id: str) -> None:
    """Onboarding agents a stopped run left at work: a resumed run starts them anew."""
    for agent in db.find_onboarding_agents(task_run_id=task_run_id, status=_ACTIVE):
        db.update_onboarding_agent(agent.db_id, status=AgentState.EXPIRED)
