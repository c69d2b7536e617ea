"""review decisions (worker_review) and budgets of projects and task runs

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("budget", sa.Float(), nullable=True))
    with op.batch_alter_table("task_runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("budget", sa.Float(), nullable=True))
    op.create_table(
        "worker_review",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=True),
        sa.Column("worker_id", sa.Integer(), nullable=False),
        sa.Column("task_id", sa.Integer(), nullable=True),
        sa.Column("task_run_id", sa.Integer(), nullable=True),
        sa.Column("agent_id", sa.Text(), nullable=True),
        sa.Column("requester_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.Text(), nullable=True),
        sa.Column("review_note", sa.Text(), nullable=True),
        sa.Column("bonus", sa.Float(), nullable=True),
        sa.Column("payment_id", sa.Integer(), nullable=True),
        sa.Column("blocked_worker", sa.Boolean(), nullable=False),
        sa.Column("unblocked_worker", sa.Boolean(), nullable=False),
        sa.Column("updated_qualification_id", sa.Integer(), nullable=True),
        sa.Column("updated_qualification_value", sa.Integer(), nullable=True),
        sa.Column("revoked_qualification_id", sa.Integer(), nullable=True),
        sa.Column("creation_date", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["payment_id"], ["payments.payment_id"],
                                name=op.f("fk_worker_review_payment_id_payments")),
        sa.ForeignKeyConstraint(["requester_id"], ["requesters.requester_id"],
                                name=op.f("fk_worker_review_requester_id_requesters")),
        sa.ForeignKeyConstraint(["revoked_qualification_id"],
                                ["qualifications.qualification_id"], ondelete="SET NULL",
                                name=op.f("fk_worker_review_revoked_qualification_id_qualifications")),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.task_id"],
                                name=op.f("fk_worker_review_task_id_tasks")),
        sa.ForeignKeyConstraint(["task_run_id"], ["task_runs.task_run_id"],
                                name=op.f("fk_worker_review_task_run_id_task_runs")),
        sa.ForeignKeyConstraint(["unit_id"], ["units.unit_id"],
                                name=op.f("fk_worker_review_unit_id_units")),
        sa.ForeignKeyConstraint(["updated_qualification_id"],
                                ["qualifications.qualification_id"], ondelete="SET NULL",
                                name=op.f("fk_worker_review_updated_qualification_id_qualifications")),
        sa.ForeignKeyConstraint(["worker_id"], ["workers.worker_id"],
                                name=op.f("fk_worker_review_worker_id_workers")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_worker_review")),
    )
    with op.batch_alter_table("worker_review", schema=None) as batch_op:
        batch_op.create_index("ix_worker_review_run", ["task_run_id"], unique=False)
        batch_op.create_index("ix_worker_review_unit", ["unit_id"], unique=False)
        batch_op.create_index("ix_worker_review_worker", ["worker_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("worker_review", schema=None) as batch_op:
        batch_op.drop_index("ix_worker_review_worker")
        batch_op.drop_index("ix_worker_review_unit")
        batch_op.drop_index("ix_worker_review_run")
    op.drop_table("worker_review")
    with op.batch_alter_table("task_runs", schema=None) as batch_op:
        batch_op.drop_column("budget")
    with op.batch_alter_table("projects", schema=None) as batch_op:
        batch_op.drop_column("budget")
