"""The tables, as SQLAlchemy Core metadata. Migrations create them; tests compare.

Ids of agents and onboarding agents are random text (they travel to browsers and act
as the worker's credential); every other id is an integer key, exposed as `str` by the
Python API as Mephisto does. Times are UNIX seconds (float). Statuses are the strings of
`mephisto.data_model.status`.

The index `ix_units_run_status` is what makes "next open unit of this run" and "progress
by status" cheap on both engines: no query on a hot path scans a run's units.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

_now = sa.Float
Id = sa.Integer


def _created() -> sa.Column:
    return sa.Column("creation_date", _now, nullable=False)


projects = sa.Table(
    "projects",
    metadata,
    sa.Column("project_id", Id, primary_key=True, autoincrement=True),
    sa.Column("project_name", sa.Text, nullable=False, unique=True),
    _created(),
    # the most the project's runs may spend (rewards, fees, bonuses), dollars; None: no cap
    sa.Column("budget", sa.Float, nullable=True),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("task_id", Id, primary_key=True, autoincrement=True),
    sa.Column("task_name", sa.Text, nullable=False, unique=True),
    sa.Column("task_type", sa.Text, nullable=False),
    sa.Column("project_id", Id, sa.ForeignKey("projects.project_id"), nullable=True),
    sa.Column("parent_task_id", Id, sa.ForeignKey("tasks.task_id"), nullable=True),
    _created(),
)

requesters = sa.Table(
    "requesters",
    metadata,
    sa.Column("requester_id", Id, primary_key=True, autoincrement=True),
    sa.Column("requester_name", sa.Text, nullable=False, unique=True),
    sa.Column("provider_type", sa.Text, nullable=False),
    _created(),
)

task_runs = sa.Table(
    "task_runs",
    metadata,
    sa.Column("task_run_id", Id, primary_key=True, autoincrement=True),
    sa.Column("task_id", Id, sa.ForeignKey("tasks.task_id"), nullable=False, index=True),
    sa.Column("requester_id", Id, sa.ForeignKey("requesters.requester_id"), nullable=False),
    sa.Column("init_params", sa.Text, nullable=False),
    sa.Column("is_completed", sa.Boolean, nullable=False, default=False),
    sa.Column("provider_type", sa.Text, nullable=False),
    sa.Column("task_type", sa.Text, nullable=False),
    sa.Column("sandbox", sa.Boolean, nullable=False, default=True),
    _created(),
    # the most this run may spend (rewards, fees, bonuses), dollars; None: no cap
    sa.Column("budget", sa.Float, nullable=True),
)

assignments = sa.Table(
    "assignments",
    metadata,
    sa.Column("assignment_id", Id, primary_key=True, autoincrement=True),
    sa.Column("task_id", Id, sa.ForeignKey("tasks.task_id"), nullable=False),
    sa.Column(
        "task_run_id", Id, sa.ForeignKey("task_runs.task_run_id"), nullable=False, index=True
    ),
    sa.Column("requester_id", Id, sa.ForeignKey("requesters.requester_id"), nullable=False),
    sa.Column("task_type", sa.Text, nullable=False),
    sa.Column("provider_type", sa.Text, nullable=False),
    sa.Column("sandbox", sa.Boolean, nullable=False, default=True),
    sa.Column("data", sa.JSON, nullable=True),
    _created(),
)

units = sa.Table(
    "units",
    metadata,
    sa.Column("unit_id", Id, primary_key=True, autoincrement=True),
    sa.Column(
        "assignment_id", Id, sa.ForeignKey("assignments.assignment_id"), nullable=False
    ),
    sa.Column("unit_index", sa.Integer, nullable=False),
    sa.Column("pay_amount", sa.Float, nullable=False),
    sa.Column("provider_type", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    # the current agent; no foreign key (agents reference units; the cycle buys nothing)
    sa.Column("agent_id", sa.Text, nullable=True),
    sa.Column("worker_id", Id, nullable=True),
    sa.Column("task_type", sa.Text, nullable=False),
    sa.Column("task_id", Id, sa.ForeignKey("tasks.task_id"), nullable=False),
    sa.Column("task_run_id", Id, sa.ForeignKey("task_runs.task_run_id"), nullable=False),
    sa.Column("sandbox", sa.Boolean, nullable=False, default=True),
    sa.Column("requester_id", Id, sa.ForeignKey("requesters.requester_id"), nullable=False),
    _created(),
    sa.UniqueConstraint("assignment_id", "unit_index"),
    sa.Index("ix_units_run_status", "task_run_id", "status", "unit_id"),
    # a worker's units in id order: the review app's worker filter and worker page
    sa.Index("ix_units_worker", "worker_id", "unit_id"),
)

workers = sa.Table(
    "workers",
    metadata,
    sa.Column("worker_id", Id, primary_key=True, autoincrement=True),
    sa.Column("worker_name", sa.Text, nullable=False),
    sa.Column("provider_type", sa.Text, nullable=False),
    _created(),
    sa.UniqueConstraint("provider_type", "worker_name"),
)

agents = sa.Table(
    "agents",
    metadata,
    sa.Column("agent_id", sa.Text, primary_key=True),
    sa.Column("worker_id", Id, sa.ForeignKey("workers.worker_id"), nullable=False),
    sa.Column("unit_id", Id, sa.ForeignKey("units.unit_id"), nullable=False, index=True),
    sa.Column("task_id", Id, sa.ForeignKey("tasks.task_id"), nullable=False),
    sa.Column("task_run_id", Id, sa.ForeignKey("task_runs.task_run_id"), nullable=False),
    sa.Column(
        "assignment_id", Id, sa.ForeignKey("assignments.assignment_id"), nullable=False
    ),
    sa.Column("task_type", sa.Text, nullable=False),
    sa.Column("provider_type", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("state", sa.JSON, nullable=True),
    _created(),
    sa.Column("update_date", _now, nullable=False),
    # a worker works on at most one unit of an assignment, ever
    sa.UniqueConstraint("worker_id", "assignment_id"),
    sa.Index("ix_agents_run_status", "task_run_id", "status"),
    sa.Index("ix_agents_worker_task", "worker_id", "task_id"),
    # when the unit was taken: the review app's date filter
    sa.Index("ix_agents_created", "creation_date"),
)

onboarding_agents = sa.Table(
    "onboarding_agents",
    metadata,
    sa.Column("onboarding_agent_id", sa.Text, primary_key=True),
    sa.Column("worker_id", Id, sa.ForeignKey("workers.worker_id"), nullable=False),
    sa.Column("task_id", Id, sa.ForeignKey("tasks.task_id"), nullable=False),
    sa.Column("task_run_id", Id, sa.ForeignKey("task_runs.task_run_id"), nullable=False),
    sa.Column("task_type", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("state", sa.JSON, nullable=True),
    _created(),
    sa.Column("update_date", _now, nullable=False),
    sa.Index("ix_onboarding_agents_worker_run", "worker_id", "task_run_id"),
)

qualifications = sa.Table(
    "qualifications",
    metadata,
    sa.Column("qualification_id", Id, primary_key=True, autoincrement=True),
    sa.Column("qualification_name", sa.Text, nullable=False, unique=True),
    _created(),
)

granted_qualifications = sa.Table(
    "granted_qualifications",
    metadata,
    sa.Column("granted_qualification_id", Id, primary_key=True, autoincrement=True),
    sa.Column("worker_id", Id, sa.ForeignKey("workers.worker_id"), nullable=False),
    sa.Column(
        "qualification_id",
        Id,
        sa.ForeignKey("qualifications.qualification_id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("value", sa.Integer, nullable=False),
    _created(),
    sa.Column("update_date", _now, nullable=False),
    sa.UniqueConstraint("worker_id", "qualification_id"),
)

worker_blocks = sa.Table(
    "worker_blocks",
    metadata,
    sa.Column("worker_id", Id, sa.ForeignKey("workers.worker_id"), primary_key=True),
    sa.Column(
        "requester_id", Id, sa.ForeignKey("requesters.requester_id"), primary_key=True
    ),
    sa.Column("reason", sa.Text, nullable=False),
    _created(),
)

# Money sent to workers beyond a unit's pay (bonuses). A payment is recorded (committed)
# before the provider is asked to make it, and carries a request token the provider
# sees on every try, so a retry or a crash never pays twice.
payments = sa.Table(
    "payments",
    metadata,
    sa.Column("payment_id", Id, primary_key=True, autoincrement=True),
    sa.Column("requester_id", Id, sa.ForeignKey("requesters.requester_id"), nullable=False),
    sa.Column("worker_id", Id, sa.ForeignKey("workers.worker_id"), nullable=False),
    sa.Column("unit_id", Id, sa.ForeignKey("units.unit_id"), nullable=True),
    sa.Column("provider_type", sa.Text, nullable=False),
    sa.Column("amount", sa.Float, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("request_token", sa.Text, nullable=False, unique=True),
    sa.Column("provider_ref", sa.Text, nullable=True),  # the provider's id, once known
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("error", sa.Text, nullable=True),  # why the last try failed
    # while a process asks the provider, it holds the payment until then (a time): no
    # other process sends it meanwhile; one that died gives it up when the time passes
    sa.Column("claimed_until", _now, nullable=True),
    _created(),
    sa.Column("update_date", _now, nullable=False),
    sa.Index("ix_payments_worker", "worker_id"),
    sa.Index("ix_payments_status", "provider_type", "status"),
)

# Review decisions (Mephisto's `worker_review`): one row per decision a reviewer made
# about a worker, with everything it did: the agent's new status and note, a bonus (its
# payment), a block or unblock, a qualification granted or revoked. Written in the same
# transaction as the change it records, so each decision is stored exactly once.
worker_review = sa.Table(
    "worker_review",
    metadata,
    sa.Column("id", Id, primary_key=True, autoincrement=True),
    sa.Column("unit_id", Id, sa.ForeignKey("units.unit_id"), nullable=True),
    sa.Column("worker_id", Id, sa.ForeignKey("workers.worker_id"), nullable=False),
    sa.Column("task_id", Id, sa.ForeignKey("tasks.task_id"), nullable=True),
    sa.Column("task_run_id", Id, sa.ForeignKey("task_runs.task_run_id"), nullable=True),
    sa.Column("agent_id", sa.Text, nullable=True),
    sa.Column("requester_id", Id, sa.ForeignKey("requesters.requester_id"), nullable=True),
    sa.Column("status", sa.Text, nullable=True),  # the agent's status it set, if any
    sa.Column("review_note", sa.Text, nullable=True),
    sa.Column("bonus", sa.Float, nullable=True),  # dollars
    sa.Column("payment_id", Id, sa.ForeignKey("payments.payment_id"), nullable=True),
    sa.Column("blocked_worker", sa.Boolean, nullable=False, default=False),
    sa.Column("unblocked_worker", sa.Boolean, nullable=False, default=False),
    sa.Column("updated_qualification_id", Id,
              sa.ForeignKey("qualifications.qualification_id", ondelete="SET NULL"),
              nullable=True),
    sa.Column("updated_qualification_value", sa.Integer, nullable=True),
    sa.Column("revoked_qualification_id", Id,
              sa.ForeignKey("qualifications.qualification_id", ondelete="SET NULL"),
              nullable=True),
    _created(),
    sa.Index("ix_worker_review_unit", "unit_id"),
    sa.Index("ix_worker_review_worker", "worker_id"),
    sa.Index("ix_worker_review_run", "task_run_id"),
)

# What a crowd provider keeps for itself (HITs of units, studies of runs, tokens of
# participants, ...): its records by kind and key, as JSON. Providers act on the plain
# entities; this is their own store. Never credentials: those live where each service
# keeps them.
provider_records = sa.Table(
    "provider_records",
    metadata,
    sa.Column("provider_type", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text, primary_key=True),
    sa.Column("record_key", sa.Text, primary_key=True),
    sa.Column("value", sa.JSON, nullable=False),
    _created(),
    sa.Column("update_date", _now, nullable=False),
)

# table name -> (table, primary key column name)
TABLES: dict[str, tuple[sa.Table, str]] = {
    "projects": (projects, "project_id"),
    "tasks": (tasks, "task_id"),
    "requesters": (requesters, "requester_id"),
    "task_runs": (task_runs, "task_run_id"),
    "assignments": (assignments, "assignment_id"),
    "units": (units, "unit_id"),
    "workers": (workers, "worker_id"),
    "agents": (agents, "agent_id"),
    "onboarding_agents": (onboarding_agents, "onboarding_agent_id"),
    "qualifications": (qualifications, "qualification_id"),
    "granted_qualifications": (granted_qualifications, "granted_qualification_id"),
    "payments": (payments, "payment_id"),
    "worker_review": (worker_review, "id"),
}
