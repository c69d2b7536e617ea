"""payments and provider records

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payments",
        sa.Column("payment_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("requester_id", sa.Integer(), nullable=False),
        sa.Column("worker_id", sa.Integer(), nullable=False),
        sa.Column("unit_id", sa.Integer(), nullable=True),
        sa.Column("provider_type", sa.Text(), nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("request_token", sa.Text(), nullable=False),
        sa.Column("provider_ref", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("creation_date", sa.Float(), nullable=False),
        sa.Column("update_date", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["requester_id"], ["requesters.requester_id"],
                                name=op.f("fk_payments_requester_id_requesters")),
        sa.ForeignKeyConstraint(["unit_id"], ["units.unit_id"],
                                name=op.f("fk_payments_unit_id_units")),
        sa.ForeignKeyConstraint(["worker_id"], ["workers.worker_id"],
                                name=op.f("fk_payments_worker_id_workers")),
        sa.PrimaryKeyConstraint("payment_id", name=op.f("pk_payments")),
        sa.UniqueConstraint("request_token", name=op.f("uq_payments_request_token")),
    )
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.create_index("ix_payments_status", ["provider_type", "status"], unique=False)
        batch_op.create_index("ix_payments_worker", ["worker_id"], unique=False)
    op.create_table(
        "provider_records",
        sa.Column("provider_type", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("record_key", sa.Text(), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("creation_date", sa.Float(), nullable=False),
        sa.Column("update_date", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("provider_type", "kind", "record_key",
                                name=op.f("pk_provider_records")),
    )


def downgrade() -> None:
    op.drop_table("provider_records")
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index("ix_payments_worker")
        batch_op.drop_index("ix_payments_status")
    op.drop_table("payments")
