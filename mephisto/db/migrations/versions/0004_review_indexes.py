"""indexes for the review app: a worker's units, agents by the time they were taken

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("units", schema=None) as batch_op:
        batch_op.create_index("ix_units_worker", ["worker_id", "unit_id"], unique=False)
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.create_index("ix_agents_created", ["creation_date"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("agents", schema=None) as batch_op:
        batch_op.drop_index("ix_agents_created")
    with op.batch_alter_table("units", schema=None) as batch_op:
        batch_op.drop_index("ix_units_worker")
