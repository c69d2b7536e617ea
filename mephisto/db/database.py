"""`MephistoDB`: all durable state, on SQLite or PostgreSQL, entity by entity.

Method names and signatures follow Mephisto's (`new_unit`, `get_unit` -> dict row,
`find_units` -> list of `Unit`, `update_unit`, ...), so review scripts keep working;
most are a line or two over the generic `_insert/_get/_find_rows/_update`. Beyond
Mephisto:

- `transaction()` / `savepoint()`: calls made inside join one transaction (one commit
  for many writes); a savepoint's failure undoes only its own part.
- Status changes are checked against `data_model.status` in the UPDATE itself
  (`... WHERE status IN (allowed current statuses)`), and an agent's status change moves
  its unit's status in the same transaction; an agent's saved state is merged
  (`merge_agent_state`), never overwritten.

A live run's set-based statements (bulk launch, bulk agents, bulk workers) live in
`db/batch.py`, beside the writer that runs them (`db/writer.py`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import sqlalchemy as sa

from mephisto.data_model.agent import Agent, OnboardingAgent, merge_agent_state
from mephisto.data_model.assignment import Assignment
from mephisto.data_model.payment import Payment
from mephisto.data_model.project import NO_PROJECT_NAME, Project
from mephisto.data_model.qualification import GrantedQualification, Qualification
from mephisto.data_model.requester import Requester
from mephisto.data_model.status import (
    UNIT_STATUS_FOR_AGENT,
    UNIT_TRANSITIONS,
    AgentState,
    AssignmentState,
    PaymentStatus,
    agent_update_sources,
    derive_assignment_status,
    payment_sources,
    unit_sources,
    unit_update_sources,
)
from mephisto.data_model.task import Task
from mephisto.data_model.task_run import TaskRun
from mephisto.data_model.unit import Unit
from mephisto.data_model.worker import Worker
from mephisto.db import migrate
from mephisto.db import schema as s
from mephisto.db.engine import Transactions, create_engine
from mephisto.db.rows import (
    ENTITY_NAMES,
    coerce,
    dialect_insert,
    key,
    new_agent_id,
    now,
    out,
    stored_states,
    translate,
)
from mephisto.errors import (
    DatabaseError,
    EntryAlreadyExists,
    EntryDoesNotExist,
    InvalidTransition,
)

PAYMENT_CLAIM_SECONDS = 300.0  # how long a process sending a payment holds it at most


class MephistoDB:
    """The database. `url` is a SQLAlchemy URL; None means the configured default
    (`MEPHISTO_DATABASE_URL`, the config file, or SQLite under the data directory)."""

    def __init__(self, url: str | None = None) -> None:
        if url is None:
            from mephisto.utils.dirs import get_database_url

            url = get_database_url()
        self.engine = create_engine(url)
        self.url = self.engine.url.render_as_string(hide_password=True)
        self.dialect = self.engine.dialect.name
        self._tx = Transactions(self.engine)
        migrate.upgrade(self.engine)

    def __repr__(self) -> str:
        return f"MephistoDB({self.url!r})"

    # -- plumbing ---------------------------------------------------------------

    def shutdown(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    close = shutdown

    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """Group writes: every MephistoDB call in the block commits together (or not)."""
        with self._tx.begin(write=True) as conn:
            yield conn

    @contextmanager
    def savepoint(self) -> Iterator[sa.Connection]:
        """A part of the current transaction that fails alone: its changes are undone,
        the enclosing transaction's stay (outside a transaction: one of its own)."""
        with self._tx.savepoint() as conn:
            yield conn

    def read(self) -> AbstractContextManager[sa.Connection]:
        """A connection to read with (the current transaction's, if this thread has one)."""
        return self._tx.begin(write=False)

    @property
    def current_connection(self) -> sa.Connection | None:
        """The connection of this thread's open transaction, if any."""
        return self._tx.current

    def _filters(self, table: str, filters: Mapping[str, Any]) -> list[sa.ColumnElement[bool]]:
        t = s.TABLES[table][0]
        clauses: list[sa.ColumnElement[bool]] = []
        for name, value in filters.items():
            if value is None:
                continue
            col = t.c[name]
            if isinstance(value, (list, tuple, set, frozenset)):
                vals = [coerce(table, name, v) for v in value]
                clauses.append(col.in_(vals))
            else:
                clauses.append(col == coerce(table, name, value))
        return clauses

    def _insert(self, table: str, values: dict[str, Any]) -> str:
        t, pk = s.TABLES[table]
        values = {k: coerce(table, k, v) if v is not None else None for k, v in values.items()}
        values.setdefault("creation_date", now())
        try:
            with self.savepoint() as conn:
                new_id = conn.execute(t.insert().returning(t.c[pk]), values).scalar_one()
        except sa.exc.IntegrityError as exc:
            raise translate(exc, table, values) from None
        return str(new_id)

    def _get(self, table: str, entity_id: str | int) -> dict[str, Any]:
        t, pk = s.TABLES[table]
        with self.read() as conn:
            row = conn.execute(t.select().where(t.c[pk] == key(table, entity_id))).first()
        if row is None:
            raise EntryDoesNotExist(f"{ENTITY_NAMES[table]} {entity_id} does not exist")
        return out(table, row)

    def _find_rows(self, table: str, **filters: Any) -> list[dict[str, Any]]:
        t, pk = s.TABLES[table]
        query = t.select().where(*self._filters(table, filters)).order_by(t.c[pk])
        with self.read() as conn:
            return [out(table, row) for row in conn.execute(query)]

    def _update(self, table: str, entity_id: str | int, values: dict[str, Any]) -> None:
        t, pk = s.TABLES[table]
        values = {k: v for k, v in values.items() if v is not None}
        if not values:
            return
        try:
            with self.savepoint() as conn:
                res = conn.execute(
                    t.update().where(t.c[pk] == key(table, entity_id)).values(values)
                )
        except sa.exc.IntegrityError as exc:
            raise translate(exc, table, values) from None
        if res.rowcount == 0:
            raise EntryDoesNotExist(f"{ENTITY_NAMES[table]} {entity_id} does not exist")

    def _set_status(
        self,
        conn: sa.Connection,
        table: str,
        entity_id: str | int,
        new: str,
        sources: Iterable[str],
        extra: Mapping[str, Any] | None = None,
    ) -> Any:
        """Set a status if the current one is among `sources` (from the transition
        tables: `unit_update_sources` / `agent_update_sources`); returns the row."""
        t, pk = s.TABLES[table]
        row_key = key(table, entity_id)
        allowed = {str(x) for x in sources}
        res = conn.execute(
            t.update()
            .where(t.c[pk] == row_key, t.c.status.in_(allowed))
            .values(status=str(new), **(extra or {}))
            .returning(*t.c)
        ).first()
        if res is not None:
            return res
        current = conn.execute(sa.select(t.c.status).where(t.c[pk] == row_key)).scalar()
        if current is None:
            raise EntryDoesNotExist(f"{ENTITY_NAMES[table]} {entity_id} does not exist")
        kind = {"units": "unit", "payments": "payment"}.get(table, "agent")
        raise InvalidTransition(kind, str(entity_id), current, str(new))

    # -- projects ---------------------------------------------------------------

    def new_project(self, project_name: str) -> str:
        if project_name in ("", None):
            raise DatabaseError("a project needs a name")
        if project_name == NO_PROJECT_NAME:
            raise DatabaseError(f"{NO_PROJECT_NAME!r} is reserved: it means 'no project'")
        return self._insert("projects", {"project_name": project_name})

    def get_project(self, project_id: str) -> dict[str, Any]:
        return self._get("projects", project_id)

    def find_projects(self, project_name: str | None = None) -> list[Project]:
        rows = self._find_rows("projects", project_name=project_name)
        return [Project(self, r["project_id"], r) for r in rows]

    def set_project_budget(self, project_id: str, budget: float | None) -> None:
        """The most the project's runs may spend, in dollars (None: no cap)."""
        self._set_budget("projects", project_id, budget)

    def _set_budget(self, table: str, entity_id: str, budget: float | None) -> None:
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                                   or not 0 <= budget < float("inf")):
            raise DatabaseError(f"a budget is a number of dollars >= 0 (or None), not {budget!r}")
        t, pk = s.TABLES[table]
        with self.transaction() as conn:
            res = conn.execute(t.update().where(t.c[pk] == key(table, entity_id))
                               .values(budget=None if budget is None else float(budget)))
        if res.rowcount == 0:
            raise EntryDoesNotExist(f"{ENTITY_NAMES[table]} {entity_id} does not exist")

    # -- tasks ------------------------------------------------------------------

    def new_task(
        self,
        task_name: str,
        task_type: str,
        project_id: str | None = None,
        parent_task_id: str | None = None,
    ) -> str:
        if not task_name:
            raise DatabaseError("a task needs a task_name")
        return self._insert(
            "tasks",
            {
                "task_name": task_name,
                "task_type": task_type,
                "project_id": project_id,
                "parent_task_id": parent_task_id,
            },
        )

    def get_task(self, task_id: str) -> dict[str, Any]:
        return self._get("tasks", task_id)

    def find_tasks(
        self,
        task_name: str | None = None,
        project_id: str | None = None,
        task_type: str | None = None,
    ) -> list[Task]:
        rows = self._find_rows(
            "tasks", task_name=task_name, project_id=project_id, task_type=task_type
        )
        return [Task(self, r["task_id"], r) for r in rows]

    def update_task(
        self, task_id: str, task_name: str | None = None, project_id: str | None = None
    ) -> None:
        """Rename a task or move it to a project. A task with runs keeps its name: its
        runs' data and its onboarding qualification are known by it."""
        if task_name is not None and not task_name.strip():
            raise DatabaseError("a task needs a task_name")
        t = s.tasks
        with self.transaction() as conn:
            # the row held (FOR UPDATE): a run being created in another process, which
            # holds it in KEY SHARE for its foreign key, is committed before the check
            current = conn.execute(sa.select(t.c.task_name).where(
                t.c.task_id == key("tasks", task_id)).with_for_update()).scalar()
            if current is None:
                raise EntryDoesNotExist(f"task {task_id} does not exist")
            renamed = task_name is not None and task_name != current
            if renamed and self.find_task_runs(task_id=task_id):
                raise DatabaseError(
                    f"task {task_id} has task runs: its name cannot change any more")
            self._update("tasks", task_id, {"task_name": task_name, "project_id": project_id})

    # -- requesters ---------------------------------------------------------------

    def new_requester(self, requester_name: str, provider_type: str) -> str:
        if not requester_name:
            raise DatabaseError("a requester needs a requester_name")
        return self._insert(
            "requesters", {"requester_name": requester_name, "provider_type": provider_type}
        )

    def get_requester(self, requester_id: str) -> dict[str, Any]:
        return self._get("requesters", requester_id)

    def find_requesters(
        self, requester_name: str | None = None, provider_type: str | None = None
    ) -> list[Requester]:
        rows = self._find_rows(
            "requesters", requester_name=requester_name, provider_type=provider_type
        )
        return [Requester(self, r["requester_id"], r) for r in rows]

    # -- task runs ------------------------------------------------------------------

    def new_task_run(
        self,
        task_id: str,
        requester_id: str,
        init_params: str,
        provider_type: str,
        task_type: str,
        sandbox: bool = True,
    ) -> str:
        return self._insert(
            "task_runs",
            {
                "task_id": task_id,
                "requester_id": requester_id,
                "init_params": init_params,
                "is_completed": False,
                "provider_type": provider_type,
                "task_type": task_type,
                "sandbox": sandbox,
            },
        )

    def get_task_run(self, task_run_id: str) -> dict[str, Any]:
        return self._get("task_runs", task_run_id)

    def find_task_runs(
        self,
        task_id: str | None = None,
        requester_id: str | None = None,
        is_completed: bool | None = None,
    ) -> list[TaskRun]:
        rows = self._find_rows(
            "task_runs", task_id=task_id, requester_id=requester_id, is_completed=is_completed
        )
        return [TaskRun(self, r["task_run_id"], r) for r in rows]

    def set_task_run_budget(self, task_run_id: str, budget: float | None) -> None:
        """The most this run may spend, in dollars (None: no cap)."""
        self._set_budget("task_runs", task_run_id, budget)

    def lock_for_spending(self, conn: sa.Connection, task_run_id: str) -> None:
        """Inside a transaction about to commit money (units, a bonus): hold the run's row
        (and its project's) until the commit, so two spenders cannot both pass a cap
        check. SQLite's write transactions are already one at a time."""
        if self.dialect != "postgresql":
            return
        r, t = s.task_runs, s.tasks
        run_key = key("task_runs", task_run_id)
        conn.execute(sa.select(r.c.task_run_id).where(r.c.task_run_id == run_key)
                     .with_for_update())
        project = sa.select(t.c.project_id).join(r, r.c.task_id == t.c.task_id).where(
            r.c.task_run_id == run_key).scalar_subquery()
        conn.execute(sa.select(s.projects.c.project_id)
                     .where(s.projects.c.project_id == project).with_for_update())

    def get_spending(self, task_run_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """What these runs committed, by run: `units` {status: (count, dollars)} and
        `bonuses` {payment status: (count, dollars)} (bonuses of the runs' units), with
        the run's `provider_type`. Two grouped queries, whatever the number of units."""
        ids = [key("task_runs", i) for i in task_run_ids]
        u, p, r = s.units, s.payments, s.task_runs
        result: dict[str, dict[str, Any]] = {}
        if not ids:
            return result
        with self.read() as conn:
            for run_id, provider_type in conn.execute(
                sa.select(r.c.task_run_id, r.c.provider_type).where(r.c.task_run_id.in_(ids))
            ):
                result[str(run_id)] = {"provider_type": provider_type, "units": {},
                                       "bonuses": {}}
            units = (sa.select(u.c.task_run_id, u.c.status, sa.func.count(),
                               sa.func.coalesce(sa.func.sum(u.c.pay_amount), 0.0))
                     .where(u.c.task_run_id.in_(ids)).group_by(u.c.task_run_id, u.c.status))
            for run_id, status, n, amount in conn.execute(units):
                result[str(run_id)]["units"][status] = (int(n), float(amount))
            bonuses = (sa.select(u.c.task_run_id, p.c.status, sa.func.count(),
                                 sa.func.coalesce(sa.func.sum(p.c.amount), 0.0))
                       .join(u, u.c.unit_id == p.c.unit_id)
                       .where(u.c.task_run_id.in_(ids)).group_by(u.c.task_run_id, p.c.status))
            for run_id, status, n, amount in conn.execute(bonuses):
                result[str(run_id)]["bonuses"][status] = (int(n), float(amount))
        return result

    def update_task_run(self, task_run_id: str, is_completed: bool) -> None:
        t = s.task_runs
        with self.transaction() as conn:
            res = conn.execute(
                t.update()
                .where(t.c.task_run_id == key("task_runs", task_run_id))
                .values(is_completed=bool(is_completed))
            )
        if res.rowcount == 0:
            raise EntryDoesNotExist(f"task run {task_run_id} does not exist")

    # -- assignments and units ---------------------------------------------------------

    def new_assignment(
        self,
        task_id: str,
        task_run_id: str,
        requester_id: str,
        task_type: str,
        provider_type: str,
        sandbox: bool = True,
        data: Any = None,
    ) -> str:
        return self._insert(
            "assignments",
            {
                "task_id": task_id,
                "task_run_id": task_run_id,
                "requester_id": requester_id,
                "task_type": task_type,
                "provider_type": provider_type,
                "sandbox": sandbox,
                "data": data,
            },
        )

    def get_assignment(self, assignment_id: str) -> dict[str, Any]:
        return self._get("assignments", assignment_id)

    def find_assignments(
        self,
        task_run_id: str | None = None,
        task_id: str | None = None,
        requester_id: str | None = None,
        task_type: str | None = None,
        provider_type: str | None = None,
        sandbox: bool | None = None,
    ) -> list[Assignment]:
        rows = self._find_rows(
            "assignments",
            task_run_id=task_run_id,
            task_id=task_id,
            requester_id=requester_id,
            task_type=task_type,
            provider_type=provider_type,
            sandbox=sandbox,
        )
        return [Assignment(self, r["assignment_id"], r) for r in rows]

    def set_assignment_data(self, assignment_id: str, data: Any) -> None:
        t = s.assignments
        with self.transaction() as conn:
            res = conn.execute(
                t.update()
                .where(t.c.assignment_id == key("assignments", assignment_id))
                .values(data=data)
            )
        if res.rowcount == 0:
            raise EntryDoesNotExist(f"assignment {assignment_id} does not exist")

    def new_unit(
        self,
        task_id: str,
        task_run_id: str,
        requester_id: str,
        assignment_id: str,
        unit_index: int,
        pay_amount: float,
        provider_type: str,
        task_type: str,
        sandbox: bool = True,
        status: str = AssignmentState.CREATED,
    ) -> str:
        return self._insert(
            "units",
            {
                "task_id": task_id,
                "task_run_id": task_run_id,
                "requester_id": requester_id,
                "assignment_id": assignment_id,
                "unit_index": unit_index,
                "pay_amount": pay_amount,
                "provider_type": provider_type,
                "task_type": task_type,
                "sandbox": sandbox,
                "status": str(AssignmentState(status)),
            },
        )

    def get_unit(self, unit_id: str) -> dict[str, Any]:
        return self._get("units", unit_id)

    def find_units(
        self,
        task_id: str | None = None,
        task_run_id: str | None = None,
        requester_id: str | None = None,
        assignment_id: str | None = None,
        unit_index: int | None = None,
        provider_type: str | None = None,
        task_type: str | None = None,
        agent_id: str | None = None,
        worker_id: str | None = None,
        sandbox: bool | None = None,
        status: str | Sequence[str] | None = None,
    ) -> list[Unit]:
        rows = self._find_rows(
            "units",
            task_id=task_id,
            task_run_id=task_run_id,
            requester_id=requester_id,
            assignment_id=assignment_id,
            unit_index=unit_index,
            provider_type=provider_type,
            task_type=task_type,
            agent_id=agent_id,
            worker_id=worker_id,
            sandbox=sandbox,
            status=status,
        )
        return [Unit(self, r["unit_id"], r) for r in rows]

    def update_unit(
        self, unit_id: str, agent_id: str | None = None, status: str | None = None
    ) -> None:
        """Set a unit's agent and/or status (checked against the transition table)."""
        with self.transaction() as conn:
            if status is not None:
                target = AssignmentState(status)
                extra = {"agent_id": agent_id} if agent_id is not None else None
                self._set_status(
                    conn, "units", unit_id, target, unit_update_sources(target), extra
                )
            elif agent_id is not None:
                self._update("units", unit_id, {"agent_id": agent_id})

    def clear_unit_agent_assignment(self, unit_id: str) -> None:
        """Free a unit: back to LAUNCHED with no agent (Mephisto's name)."""
        with self.transaction() as conn:
            self._set_status(
                conn,
                "units",
                unit_id,
                AssignmentState.LAUNCHED,
                unit_update_sources(AssignmentState.LAUNCHED),
                {"agent_id": None, "worker_id": None},
            )

    def get_unit_status_counts(self, task_run_id: str) -> dict[str, int]:
        """Units of a run by status, from the (task_run_id, status) index."""
        t = s.units
        query = (
            sa.select(t.c.status, sa.func.count())
            .where(t.c.task_run_id == key("task_runs", task_run_id))
            .group_by(t.c.status)
        )
        with self.read() as conn:
            return {status: n for status, n in conn.execute(query)}

    def get_assignment_status_counts(self, task_run_id: str) -> dict[str, int]:
        """Assignments of a run by status (derived from their units)."""
        t = s.units
        query = (
            sa.select(t.c.assignment_id, t.c.status)
            .where(t.c.task_run_id == key("task_runs", task_run_id))
            .order_by(t.c.assignment_id)
        )
        by_assignment: dict[int, list[str]] = {}
        with self.read() as conn:
            for a_id, status in conn.execute(query):
                by_assignment.setdefault(a_id, []).append(status)
        counts: dict[str, int] = {}
        for statuses in by_assignment.values():
            status = str(derive_assignment_status(statuses))
            counts[status] = counts.get(status, 0) + 1
        return counts

    # -- workers -------------------------------------------------------------------

    def new_worker(self, worker_name: str, provider_type: str) -> str:
        if not worker_name:
            raise DatabaseError("a worker needs a worker_name")
        return self._insert("workers", {"worker_name": worker_name, "provider_type": provider_type})

    def get_worker(self, worker_id: str) -> dict[str, Any]:
        return self._get("workers", worker_id)

    def find_workers(
        self, worker_name: str | None = None, provider_type: str | None = None
    ) -> list[Worker]:
        rows = self._find_rows("workers", worker_name=worker_name, provider_type=provider_type)
        return [Worker(self, r["worker_id"], r) for r in rows]

    def find_or_new_worker(self, worker_name: str, provider_type: str) -> Worker:
        """The worker with this name, created on first sight (race-safe)."""
        found = self.find_workers(worker_name=worker_name, provider_type=provider_type)
        if found:
            return found[0]
        try:
            worker_id = self.new_worker(worker_name, provider_type)
        except EntryAlreadyExists:
            return self.find_workers(worker_name=worker_name, provider_type=provider_type)[0]
        return Worker(self, worker_id)

    def block_worker(self, worker_id: str, requester_id: str, reason: str) -> None:
        t = s.worker_blocks
        values = {
            "worker_id": key("workers", worker_id),
            "requester_id": key("requesters", requester_id),
            "reason": reason,
            "creation_date": now(),
        }
        self._upsert(t, values, ["worker_id", "requester_id"], {"reason": reason})

    def unblock_worker(self, worker_id: str, requester_id: str) -> None:
        t = s.worker_blocks
        with self.transaction() as conn:
            conn.execute(
                t.delete().where(
                    t.c.worker_id == key("workers", worker_id),
                    t.c.requester_id == key("requesters", requester_id),
                )
            )

    def is_worker_blocked(self, worker_id: str, requester_id: str | None = None) -> bool:
        """Whether `requester_id` (or any requester, when None) blocked this worker."""
        t = s.worker_blocks
        query = sa.select(t.c.worker_id).where(t.c.worker_id == key("workers", worker_id))
        if requester_id is not None:
            query = query.where(t.c.requester_id == key("requesters", requester_id))
        with self.read() as conn:
            return conn.execute(query.limit(1)).first() is not None

    def _upsert(
        self, table: sa.Table, values: dict[str, Any], keys: list[str], update: dict[str, Any],
        where: sa.ColumnElement[bool] | None = None,
    ) -> None:
        """INSERT, or UPDATE the row with the same `keys` (only where `where` holds): one
        statement, atomic on both databases."""
        stmt = dialect_insert(self.dialect, table).values(values)
        stmt = stmt.on_conflict_do_update(index_elements=keys, set_=update, where=where)
        try:
            with self.savepoint() as conn:
                conn.execute(stmt)
        except sa.exc.IntegrityError as exc:
            raise EntryDoesNotExist(f"cannot write {table.name}: {exc.orig}") from None

    # -- agents ------------------------------------------------------------------------

    def new_agent(
        self,
        worker_id: str,
        unit_id: str,
        task_id: str,
        task_run_id: str,
        assignment_id: str,
        task_type: str,
        provider_type: str,
        status: str = AgentState.NONE,
        state: Any = None,
        agent_id: str | None = None,
    ) -> str:
        """Create an agent and assign its unit to it (LAUNCHED -> ASSIGNED), atomically.

        Raises `EntryAlreadyExists` if the worker already has an agent on this
        assignment, `InvalidTransition` if the unit is not open.
        """
        agent_id = agent_id or new_agent_id()
        with self.transaction():
            self._insert(
                "agents",
                {
                    "agent_id": agent_id,
                    "worker_id": worker_id,
                    "unit_id": unit_id,
                    "task_id": task_id,
                    "task_run_id": task_run_id,
                    "assignment_id": assignment_id,
                    "task_type": task_type,
                    "provider_type": provider_type,
                    "status": str(AgentState(status)),
                    "state": state,
                    "update_date": now(),
                },
            )
            with self.transaction() as conn:
                self._set_status(
                    conn,
                    "units",
                    unit_id,
                    AssignmentState.ASSIGNED,
                    [AssignmentState.LAUNCHED],
                    {"agent_id": agent_id, "worker_id": int(worker_id)},
                )
        return agent_id

    def get_agent(self, agent_id: str) -> dict[str, Any]:
        return self._get("agents", agent_id)

    def find_agents(
        self,
        status: str | Sequence[str] | None = None,
        unit_id: str | None = None,
        worker_id: str | None = None,
        task_id: str | None = None,
        task_run_id: str | None = None,
        assignment_id: str | None = None,
        task_type: str | None = None,
        provider_type: str | None = None,
    ) -> list[Agent]:
        rows = self._find_rows(
            "agents",
            status=status,
            unit_id=unit_id,
            worker_id=worker_id,
            task_id=task_id,
            task_run_id=task_run_id,
            assignment_id=assignment_id,
            task_type=task_type,
            provider_type=provider_type,
        )
        return [Agent(self, r["agent_id"], r) for r in rows]

    def update_agent(self, agent_id: str, status: str | None = None, state: Any = None) -> None:
        """Change an agent's status and/or saved state; its unit follows in the same
        transaction (e.g. COMPLETED -> unit COMPLETED, TIMEOUT -> unit freed).

        The status change follows `agent_update_sources` (a completed agent is never
        completed again); `state` is merged into the stored state (`merge_agent_state`).
        """
        with self.transaction() as conn:
            row = self._update_agent_row(conn, "agents", agent_id, status, state)
            if row is not None and status is not None:
                self._move_unit_with_agent(conn, row.unit_id, agent_id, AgentState(status))

    def _update_agent_row(
        self, conn: sa.Connection, table: str, agent_id: str, status: str | None, state: Any
    ) -> Any:
        """The one path that changes an agent or onboarding agent row: the status by the
        transition table, the state merged. Returns the row if the status changed."""
        values: dict[str, Any] = {"update_date": now()}
        if state is not None:
            stored = stored_states(conn, table, [str(agent_id)], lock=True)
            if str(agent_id) not in stored:
                raise EntryDoesNotExist(f"{ENTITY_NAMES[table]} {agent_id} does not exist")
            values["state"] = merge_agent_state(str(agent_id), stored[str(agent_id)], state)
        if status is None:
            if state is not None:
                self._update(table, agent_id, values)
            return None
        target = AgentState(status)
        return self._set_status(conn, table, agent_id, target, agent_update_sources(target), values)

    def _move_unit_with_agent(
        self, conn: sa.Connection, unit_key: int, agent_id: str, agent_status: AgentState
    ) -> None:
        t = s.units
        unit = conn.execute(  # held: the unit must stay this agent's until it moves
            sa.select(t.c.status, t.c.agent_id).where(t.c.unit_id == unit_key).with_for_update()
        ).first()
        if unit is None or unit.agent_id != agent_id:
            return  # the unit has moved on (expired, or reassigned): leave it
        target = UNIT_STATUS_FOR_AGENT[agent_status]
        current = AssignmentState(unit.status)
        if current == target or target not in UNIT_TRANSITIONS[current]:
            return
        if current == AssignmentState.EXPIRED and target != AssignmentState.COMPLETED:
            return  # only a (late) submission changes an expired unit
        extra: dict[str, Any] = {}
        if agent_status in AgentState.dropped():
            extra = {"agent_id": None, "worker_id": None}
        self._set_status(conn, "units", unit_key, target, unit_sources(target), extra)

    # -- onboarding agents ---------------------------------------------------------------

    def new_onboarding_agent(
        self,
        worker_id: str,
        task_id: str,
        task_run_id: str,
        task_type: str,
        status: str = AgentState.NONE,
    ) -> str:
        agent_id = new_agent_id(prefix=OnboardingAgent.DISPLAY_PREFIX)
        self._insert(
            "onboarding_agents",
            {
                "onboarding_agent_id": agent_id,
                "worker_id": worker_id,
                "task_id": task_id,
                "task_run_id": task_run_id,
                "task_type": task_type,
                "status": str(AgentState(status)),
                "update_date": now(),
            },
        )
        return agent_id

    def get_onboarding_agent(self, onboarding_agent_id: str) -> dict[str, Any]:
        return self._get("onboarding_agents", onboarding_agent_id)

    def find_onboarding_agents(
        self,
        status: str | Sequence[str] | None = None,
        worker_id: str | None = None,
        task_id: str | None = None,
        task_run_id: str | None = None,
        task_type: str | None = None,
    ) -> list[OnboardingAgent]:
        rows = self._find_rows(
            "onboarding_agents",
            status=status,
            worker_id=worker_id,
            task_id=task_id,
            task_run_id=task_run_id,
            task_type=task_type,
        )
        return [OnboardingAgent(self, r["onboarding_agent_id"], r) for r in rows]

    def update_onboarding_agent(
        self, onboarding_agent_id: str, status: str | None = None, state: Any = None
    ) -> None:
        """As `update_agent`, for an onboarding agent (no unit to move)."""
        with self.transaction() as conn:
            self._update_agent_row(conn, "onboarding_agents", onboarding_agent_id, status, state)

    # -- qualifications ------------------------------------------------------------------

    def make_qualification(self, qualification_name: str) -> str:
        if not qualification_name:
            raise DatabaseError("a qualification needs a name")
        return self._insert("qualifications", {"qualification_name": qualification_name})

    def find_or_make_qualification(self, qualification_name: str) -> str:
        """The id of the qualification with this name, made if there is none. Safe when
        another process makes it at the same instant: the INSERT does nothing on the
        name's conflict, and the row that exists is read."""
        if not qualification_name:
            raise DatabaseError("a qualification needs a name")
        q = s.qualifications
        query = sa.select(q.c.qualification_id).where(q.c.qualification_name == qualification_name)
        with self.read() as conn:
            found = conn.execute(query).scalar()
        if found is not None:
            return str(found)
        insert = dialect_insert(self.dialect, q).values(
            qualification_name=qualification_name, creation_date=now()
        ).on_conflict_do_nothing(index_elements=["qualification_name"])
        with self.transaction() as conn:
            conn.execute(insert)
            return str(conn.execute(query).scalar_one())

    def get_qualification(self, qualification_id: str) -> dict[str, Any]:
        return self._get("qualifications", qualification_id)

    def find_qualifications(self, qualification_name: str | None = None) -> list[Qualification]:
        rows = self._find_rows("qualifications", qualification_name=qualification_name)
        return [Qualification(self, r["qualification_id"], r) for r in rows]

    def delete_qualification(self, qualification_name: str) -> None:
        """Delete a qualification and every grant of it."""
        q, g = s.qualifications, s.granted_qualifications
        with self.transaction() as conn:
            qid = conn.execute(
                sa.select(q.c.qualification_id).where(q.c.qualification_name == qualification_name)
            ).scalar()
            if qid is None:
                raise EntryDoesNotExist(f"qualification {qualification_name!r} does not exist")
            conn.execute(g.delete().where(g.c.qualification_id == qid))
            conn.execute(q.delete().where(q.c.qualification_id == qid))

    def grant_qualification(
        self, qualification_id: str, worker_id: str, value: int = 1, *, keep_zero: bool = False
    ) -> int:
        """Grant (or change the value of) a qualification, in one statement (an INSERT
        that updates the grant already there). With `keep_zero`, a grant of value 0 (a
        failed onboarding) is left as it is, decided in the same statement, so a grant
        made at the same instant by another process cannot slip between a check and the
        write. Returns the value the worker now holds."""
        g = s.granted_qualifications
        stamp = now()
        qid, wid = key("qualifications", qualification_id), key("workers", worker_id)
        with self.transaction():
            self._upsert(
                g,
                {"qualification_id": qid, "worker_id": wid, "value": int(value),
                 "creation_date": stamp, "update_date": stamp},
                ["worker_id", "qualification_id"],
                {"value": int(value), "update_date": stamp},
                where=(g.c.value != 0) if keep_zero else None,
            )
            if not keep_zero:
                return int(value)
            with self.read() as conn:
                return int(conn.execute(sa.select(g.c.value).where(
                    g.c.qualification_id == qid, g.c.worker_id == wid)).scalar_one())

    def add_to_qualification(self, qualification_id: str, worker_id: str, amount: int = 1) -> int:
        """Add `amount` to the worker's value of a qualification used as a counter (0
        when not granted yet), in one statement (`INSERT ... ON CONFLICT DO UPDATE SET
        value = value + amount`), so counts made by several processes at once all add
        up. Returns the new value."""
        g = s.granted_qualifications
        stamp = now()
        stmt = dialect_insert(self.dialect, g).values(
            qualification_id=key("qualifications", qualification_id),
            worker_id=key("workers", worker_id), value=int(amount),
            creation_date=stamp, update_date=stamp)
        stmt = stmt.on_conflict_do_update(
            index_elements=["worker_id", "qualification_id"],
            set_={"value": g.c.value + stmt.excluded.value, "update_date": stamp},
        ).returning(g.c.value)
        try:
            with self.savepoint() as conn:
                return int(conn.execute(stmt).scalar_one())
        except sa.exc.IntegrityError as exc:
            raise EntryDoesNotExist(f"cannot write granted_qualifications: {exc.orig}") from None

    def check_granted_qualifications(
        self,
        qualification_id: str | None = None,
        worker_id: str | None = None,
        value: int | None = None,
    ) -> list[GrantedQualification]:
        rows = self._find_rows(
            "granted_qualifications",
            qualification_id=qualification_id,
            worker_id=worker_id,
            value=value,
        )
        return [GrantedQualification(self, r) for r in rows]

    def get_granted_qualification(self, qualification_id: str, worker_id: str) -> dict[str, Any]:
        rows = self._find_rows(
            "granted_qualifications", qualification_id=qualification_id, worker_id=worker_id
        )
        if not rows:
            raise EntryDoesNotExist(
                f"worker {worker_id} has no grant of qualification {qualification_id}"
            )
        return rows[0]

    def revoke_qualification(self, qualification_id: str, worker_id: str) -> None:
        g = s.granted_qualifications
        with self.transaction() as conn:
            conn.execute(
                g.delete().where(
                    g.c.qualification_id == key("qualifications", qualification_id),
                    g.c.worker_id == key("workers", worker_id),
                )
            )

    # -- payments ------------------------------------------------------------------------

    def new_payment(
        self,
        requester_id: str,
        worker_id: str,
        provider_type: str,
        amount: float,
        reason: str,
        unit_id: str | None = None,
    ) -> str:
        """Record a payment about to be made (status `recorded`), with a fresh request
        token. Committed before any provider is asked."""
        if not amount or amount <= 0:
            raise DatabaseError(f"a payment needs a positive amount, got {amount!r}")
        if not reason or not reason.strip():
            raise DatabaseError("a payment needs a reason (workers see it)")
        stamp = now()
        return self._insert(
            "payments",
            {
                "requester_id": requester_id,
                "worker_id": worker_id,
                "unit_id": unit_id,
                "provider_type": provider_type,
                "amount": float(amount),
                "reason": reason,
                "status": str(PaymentStatus.RECORDED),
                "request_token": secrets.token_hex(16),
                "attempts": 0,
                "creation_date": stamp,
                "update_date": stamp,
            },
        )

    def get_payment(self, payment_id: str) -> dict[str, Any]:
        return self._get("payments", payment_id)

    def find_payments(
        self,
        worker_id: str | None = None,
        unit_id: str | None = None,
        requester_id: str | None = None,
        provider_type: str | None = None,
        status: str | Sequence[str] | None = None,
    ) -> list[Payment]:
        rows = self._find_rows(
            "payments", worker_id=worker_id, unit_id=unit_id, requester_id=requester_id,
            provider_type=provider_type, status=status,
        )
        return [Payment(self, r["payment_id"], r) for r in rows]

    def update_payment(
        self,
        payment_id: str,
        status: str,
        provider_ref: str | None = None,
        error: str | None = None,
    ) -> None:
        """Record the outcome of a try: `paid` (with the provider's reference) or
        `failed` (with the error). A paid payment is never changed again."""
        target = PaymentStatus(status)
        values: dict[str, Any] = {
            "update_date": now(),
            "attempts": s.payments.c.attempts + 1,
            "error": error if target is PaymentStatus.FAILED else None,
        }
        if provider_ref is not None:
            values["provider_ref"] = provider_ref
        values["claimed_until"] = None
        with self.transaction() as conn:
            self._set_status(conn, "payments", payment_id, target, payment_sources(target), values)

    def claim_payment(self, payment_id: str, seconds: float = PAYMENT_CLAIM_SECONDS) -> bool:
        """Hold a payment for `seconds` to ask the provider to make it: one conditional
        UPDATE (not paid, and not held by another process), so of several processes
        settling or retrying one payment at once only one sends it. `update_payment`
        lets it go. Returns False if it is paid already; raises `InvalidTransition` if
        another process holds it (one that died lets go when its time is up)."""
        t = s.payments
        stamp = now()
        pid = key("payments", payment_id)
        with self.transaction() as conn:
            res = conn.execute(t.update().where(
                t.c.payment_id == pid,
                t.c.status.in_([str(x) for x in payment_sources(PaymentStatus.PAID)]),
                sa.or_(t.c.claimed_until.is_(None), t.c.claimed_until < stamp),
            ).values(claimed_until=stamp + seconds))
            if res.rowcount == 1:
                return True
            row = conn.execute(sa.select(t.c.status, t.c.claimed_until)
                               .where(t.c.payment_id == pid)).first()
        if row is None:
            raise EntryDoesNotExist(f"payment {payment_id} does not exist")
        if row.status == PaymentStatus.PAID:
            return False
        raise InvalidTransition(
            "payment", str(payment_id), row.status, str(PaymentStatus.PAID),
            detail=f"another process is paying it now (held for {row.claimed_until - stamp:.0f}"
                   " s more); try again later")

    def release_payment(self, payment_id: str) -> None:
        """Let go of a payment held by `claim_payment` without recording an outcome."""
        t = s.payments
        with self.transaction() as conn:
            conn.execute(t.update().where(t.c.payment_id == key("payments", payment_id))
                         .values(claimed_until=None))

    # -- review decisions ----------------------------------------------------------------

    def new_worker_review(
        self,
        worker_id: str,
        status: str | None = None,
        task_id: str | None = None,
        unit_id: str | None = None,
        qualification_id: str | None = None,
        value: int | None = None,
        review_note: str | None = None,
        bonus: float | str | None = None,
        revoke: bool = False,
        *,
        agent_id: str | None = None,
        task_run_id: str | None = None,
        requester_id: str | None = None,
        payment_id: str | None = None,
        blocked_worker: bool = False,
        unblocked_worker: bool = False,
    ) -> str:
        """Record a review decision (Mephisto's arguments first: a qualification with
        `revoke=True` was revoked, else set to `value`). The unit's task, run, agent and
        requester are filled in from the unit when not given. Returns the review's id;
        call it inside the transaction of the change it records."""
        values: dict[str, Any] = {
            "worker_id": worker_id, "unit_id": unit_id, "task_id": task_id,
            "task_run_id": task_run_id, "agent_id": agent_id, "requester_id": requester_id,
            "status": None if status is None else str(status), "review_note": review_note,
            "bonus": None if bonus in (None, "") else float(bonus),  # type: ignore[arg-type]
            "payment_id": payment_id, "blocked_worker": bool(blocked_worker),
            "unblocked_worker": bool(unblocked_worker),
        }
        if qualification_id is not None:
            if revoke:
                values["revoked_qualification_id"] = qualification_id
            else:
                values["updated_qualification_id"] = qualification_id
                values["updated_qualification_value"] = 1 if value is None else int(value)
        if unit_id is not None and None in (task_id, task_run_id, requester_id, agent_id):
            unit = self.get_unit(unit_id)
            for name in ("task_id", "task_run_id", "requester_id", "agent_id"):
                if values[name] is None:
                    values[name] = unit[name]
        return self._insert("worker_review", values)

    def find_worker_reviews(
        self,
        worker_id: str | None = None,
        unit_id: str | None = None,
        task_id: str | None = None,
        task_run_id: str | None = None,
        agent_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Review decisions, oldest first (dict rows)."""
        return self._find_rows("worker_review", worker_id=worker_id, unit_id=unit_id,
                               task_id=task_id, task_run_id=task_run_id, agent_id=agent_id)

    def update_worker_review(
        self,
        unit_id: str,
        qualification_id: str,
        worker_id: str,
        value: int | None = None,
        revoke: bool = False,
    ) -> None:
        """Mephisto's call: add a qualification change to the latest review of the
        worker's unit."""
        t = s.worker_review
        latest = sa.select(sa.func.max(t.c.id)).where(
            t.c.unit_id == key("units", unit_id), t.c.worker_id == key("workers", worker_id)
        ).scalar_subquery()
        change: dict[str, Any] = (
            {"revoked_qualification_id": key("qualifications", qualification_id)} if revoke
            else {"updated_qualification_id": key("qualifications", qualification_id),
                  "updated_qualification_value": 1 if value is None else int(value)})
        with self.transaction() as conn:
            res = conn.execute(t.update().where(t.c.id == latest).values(change))
        if res.rowcount == 0:
            raise EntryDoesNotExist(f"no review of unit {unit_id} by worker {worker_id}")

    # -- provider records ----------------------------------------------------------------

    def put_provider_record(
        self, provider_type: str, kind: str, record_key: str, value: Any
    ) -> None:
        """Create or replace a provider's record (`value`: JSON)."""
        stamp = now()
        self._upsert(
            s.provider_records,
            {"provider_type": provider_type, "kind": kind, "record_key": str(record_key),
             "value": value, "creation_date": stamp, "update_date": stamp},
            ["provider_type", "kind", "record_key"],
            {"value": value, "update_date": stamp},
        )

    def add_provider_record(
        self, provider_type: str, kind: str, record_key: str, value: Any
    ) -> Any:
        """Store a provider's record unless one is there already (`INSERT ... ON
        CONFLICT DO NOTHING`); returns the record stored, this one or the earlier one.
        For a value that must be decided once, whichever process is first."""
        t = s.provider_records
        stamp = now()
        with self.transaction() as conn:
            conn.execute(dialect_insert(self.dialect, t).values(
                provider_type=provider_type, kind=kind, record_key=str(record_key),
                value=value, creation_date=stamp, update_date=stamp,
            ).on_conflict_do_nothing(index_elements=["provider_type", "kind", "record_key"]))
            return self.get_provider_record(provider_type, kind, record_key)

    def get_provider_record(self, provider_type: str, kind: str, record_key: str) -> Any:
        """A provider's record, or None."""
        t = s.provider_records
        query = sa.select(t.c.value).where(
            t.c.provider_type == provider_type, t.c.kind == kind,
            t.c.record_key == str(record_key),
        )
        with self.read() as conn:
            return conn.execute(query).scalar()

    def find_provider_records(self, provider_type: str, kind: str) -> dict[str, Any]:
        """Every record of this kind, by key."""
        t = s.provider_records
        query = sa.select(t.c.record_key, t.c.value).where(
            t.c.provider_type == provider_type, t.c.kind == kind
        ).order_by(t.c.record_key)
        with self.read() as conn:
            return {k: v for k, v in conn.execute(query)}

    def delete_provider_record(self, provider_type: str, kind: str, record_key: str) -> None:
        t = s.provider_records
        with self.transaction() as conn:
            conn.execute(t.delete().where(
                t.c.provider_type == provider_type, t.c.kind == kind,
                t.c.record_key == str(record_key),
            ))


class LocalMephistoDB(MephistoDB):
    """Mephisto's embedded database class: SQLite at `database_path` (or the default)."""

    def __init__(self, database_path: str | None = None) -> None:
        super().__init__(f"sqlite:///{database_path}" if database_path is not None else None)
