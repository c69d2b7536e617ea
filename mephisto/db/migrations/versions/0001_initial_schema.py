"""initial schema

Revision ID: 0001
Revises: (none)
"""

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('projects',
    sa.Column('project_id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('project_name', sa.Text(), nullable=False),
    sa.Column('creation_date', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('project_id', name=op.f('pk_projects')),
    sa.UniqueConstraint('project_name', name=op.f('uq_projects_project_name'))
    )
    op.create_table('qualifications',
    sa.Column('qualification_id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('qualification_name', sa.Text(), nullable=False),
    sa.Column('creation_date', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('qualification_id', name=op.f('pk_qualifications')),
    sa.UniqueConstraint('qualification_name', name=op.f('uq_qualifications_qualification_name'))
    )
    op.create_table('requesters',
    sa.Column('requester_id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('requester_name', sa.Text(), nullable=False),
    sa.Column('provider_type', sa.Text(), nullable=False),
    sa.Column('creation_date', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('requester_id', name=op.f('pk_requesters')),
    sa.UniqueConstraint('requester_name', name=op.f('uq_requesters_requester_name'))
    )
    op.create_table('workers',
    sa.Column('worker_id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('worker_name', sa.Text(), nullable=False),
    sa.Column('provider_type', sa.Text(), nullable=False),
    sa.Column('creation_date', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('worker_id', name=op.f('pk_workers')),
    sa.UniqueConstraint('provider_type', 'worker_name', name=op.f('uq_workers_provider_type_worker_name'))
    )
    op.create_table('granted_qualifications',
    sa.Column('granted_qualification_id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('worker_id', sa.Integer(), nullable=False),
    sa.Column('qualification_id', sa.Integer(), nullable=False),
    sa.Column('value', sa.Integer(), nullable=False),
    sa.Column('creation_date', sa.Float(), nullable=False),
    sa.Column('update_date', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['qualification_id'], ['qualifications.qualification_id'], name=op.f('fk_granted_qualifications_qualification_id_qualifications'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['worker_id'], ['workers.worker_id'], name=op.f('fk_granted_qualifications_worker_id_workers')),
    sa.PrimaryKeyConstraint('granted_qualification_id', name=op.f('pk_granted_qualifications')),
    sa.UniqueConstraint('worker_id', 'qualification_id', name=op.f('uq_granted_qualifications_worker_id_qualification_id'))
    )
    op.create_table('tasks',
    sa.Column('task_id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('task_name', sa.Text(), nullable=False),
    sa.Column('task_type', sa.Text(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=True),
    sa.Column('parent_task_id', sa.Integer(), nullable=True),
    sa.Column('creation_date', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['parent_task_id'], ['tasks.task_id'], name=op.f('fk_tasks_parent_task_id_tasks')),
    sa.ForeignKeyConstraint(['project_id'], ['projects.project_id'], name=op.f('fk_tasks_project_id_projects')),
    sa.PrimaryKeyConstraint('task_id', name=op.f('pk_tasks')),
    sa.UniqueConstraint('task_name', name=op.f('uq_tasks_task_name'))
    )
    op.create_table('worker_blocks',
    sa.Column('worker_id', sa.Integer(), nullable=False),
    sa.Column('requester_id', sa.Integer(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('creation_date', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['requester_id'], ['requesters.requester_id'], name=op.f('fk_worker_blocks_requester_id_requesters')),
    sa.ForeignKeyConstraint(['worker_id'], ['workers.worker_id'], name=op.f('fk_worker_blocks_worker_id_workers')),
    sa.PrimaryKeyConstraint('worker_id', 'requester_id', name=op.f('pk_worker_blocks'))
    )
    op.create_table('task_runs',
    sa.Column('task_run_id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('requester_id', sa.Integer(), nullable=False),
    sa.Column('init_params', sa.Text(), nullable=False),
    sa.Column('is_completed', sa.Boolean(), nullable=False),
    sa.Column('provider_type', sa.Text(), nullable=False),
    sa.Column('task_type', sa.Text(), nullable=False),
    sa.Column('sandbox', sa.Boolean(), nullable=False),
    sa.Column('creation_date', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['requester_id'], ['requesters.requester_id'], name=op.f('fk_task_runs_requester_id_requesters')),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.task_id'], name=op.f('fk_task_runs_task_id_tasks')),
    sa.PrimaryKeyConstraint('task_run_id', name=op.f('pk_task_runs'))
    )
    with op.batch_alter_table('task_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_task_runs_task_id'), ['task_id'], unique=False)

    op.create_table('assignments',
    sa.Column('assignment_id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('task_run_id', sa.Integer(), nullable=False),
    sa.Column('requester_id', sa.Integer(), nullable=False),
    sa.Column('task_type', sa.Text(), nullable=False),
    sa.Column('provider_type', sa.Text(), nullable=False),
    sa.Column('sandbox', sa.Boolean(), nullable=False),
    sa.Column('data', sa.JSON(), nullable=True),
    sa.Column('creation_date', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['requester_id'], ['requesters.requester_id'], name=op.f('fk_assignments_requester_id_requesters')),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.task_id'], name=op.f('fk_assignments_task_id_tasks')),
    sa.ForeignKeyConstraint(['task_run_id'], ['task_runs.task_run_id'], name=op.f('fk_assignments_task_run_id_task_runs')),
    sa.PrimaryKeyConstraint('assignment_id', name=op.f('pk_assignments'))
    )
    with op.batch_alter_table('assignments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_assignments_task_run_id'), ['task_run_id'], unique=False)

    op.create_table('onboarding_agents',
    sa.Column('onboarding_agent_id', sa.Text(), nullable=False),
    sa.Column('worker_id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('task_run_id', sa.Integer(), nullable=False),
    sa.Column('task_type', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('state', sa.JSON(), nullable=True),
    sa.Column('creation_date', sa.Float(), nullable=False),
    sa.Column('update_date', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.task_id'], name=op.f('fk_onboarding_agents_task_id_tasks')),
    sa.ForeignKeyConstraint(['task_run_id'], ['task_runs.task_run_id'], name=op.f('fk_onboarding_agents_task_run_id_task_runs')),
    sa.ForeignKeyConstraint(['worker_id'], ['workers.worker_id'], name=op.f('fk_onboarding_agents_worker_id_workers')),
    sa.PrimaryKeyConstraint('onboarding_agent_id', name=op.f('pk_onboarding_agents'))
    )
    with op.batch_alter_table('onboarding_agents', schema=None) as batch_op:
        batch_op.create_index('ix_onboarding_agents_worker_run', ['worker_id', 'task_run_id'], unique=False)

    op.create_table('units',
    sa.Column('unit_id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('assignment_id', sa.Integer(), nullable=False),
    sa.Column('unit_index', sa.Integer(), nullable=False),
    sa.Column('pay_amount', sa.Float(), nullable=False),
    sa.Column('provider_type', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('agent_id', sa.Text(), nullable=True),
    sa.Column('worker_id', sa.Integer(), nullable=True),
    sa.Column('task_type', sa.Text(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('task_run_id', sa.Integer(), nullable=False),
    sa.Column('sandbox', sa.Boolean(), nullable=False),
    sa.Column('requester_id', sa.Integer(), nullable=False),
    sa.Column('creation_date', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['assignment_id'], ['assignments.assignment_id'], name=op.f('fk_units_assignment_id_assignments')),
    sa.ForeignKeyConstraint(['requester_id'], ['requesters.requester_id'], name=op.f('fk_units_requester_id_requesters')),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.task_id'], name=op.f('fk_units_task_id_tasks')),
    sa.ForeignKeyConstraint(['task_run_id'], ['task_runs.task_run_id'], name=op.f('fk_units_task_run_id_task_runs')),
    sa.PrimaryKeyConstraint('unit_id', name=op.f('pk_units')),
    sa.UniqueConstraint('assignment_id', 'unit_index', name=op.f('uq_units_assignment_id_unit_index'))
    )
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.create_index('ix_units_run_status', ['task_run_id', 'status', 'unit_id'], unique=False)

    op.create_table('agents',
    sa.Column('agent_id', sa.Text(), nullable=False),
    sa.Column('worker_id', sa.Integer(), nullable=False),
    sa.Column('unit_id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('task_run_id', sa.Integer(), nullable=False),
    sa.Column('assignment_id', sa.Integer(), nullable=False),
    sa.Column('task_type', sa.Text(), nullable=False),
    sa.Column('provider_type', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('state', sa.JSON(), nullable=True),
    sa.Column('creation_date', sa.Float(), nullable=False),
    sa.Column('update_date', sa.Float(), nullable=False),
    sa.ForeignKeyConstraint(['assignment_id'], ['assignments.assignment_id'], name=op.f('fk_agents_assignment_id_assignments')),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.task_id'], name=op.f('fk_agents_task_id_tasks')),
    sa.ForeignKeyConstraint(['task_run_id'], ['task_runs.task_run_id'], name=op.f('fk_agents_task_run_id_task_runs')),
    sa.ForeignKeyConstraint(['unit_id'], ['units.unit_id'], name=op.f('fk_agents_unit_id_units')),
    sa.ForeignKeyConstraint(['worker_id'], ['workers.worker_id'], name=op.f('fk_agents_worker_id_workers')),
    sa.PrimaryKeyConstraint('agent_id', name=op.f('pk_agents')),
    sa.UniqueConstraint('worker_id', 'assignment_id', name=op.f('uq_agents_worker_id_assignment_id'))
    )
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.create_index('ix_agents_run_status', ['task_run_id', 'status'], unique=False)
        batch_op.create_index(batch_op.f('ix_agents_unit_id'), ['unit_id'], unique=False)
        batch_op.create_index('ix_agents_worker_task', ['worker_id', 'task_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_index('ix_agents_worker_task')
        batch_op.drop_index(batch_op.f('ix_agents_unit_id'))
        batch_op.drop_index('ix_agents_run_status')

    op.drop_table('agents')
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.drop_index('ix_units_run_status')

    op.drop_table('units')
    with op.batch_alter_table('onboarding_agents', schema=None) as batch_op:
        batch_op.drop_index('ix_onboarding_agents_worker_run')

    op.drop_table('onboarding_agents')
    with op.batch_alter_table('assignments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_assignments_task_run_id'))

    op.drop_table('assignments')
    with op.batch_alter_table('task_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_task_runs_task_id'))

    op.drop_table('task_runs')
    op.drop_table('worker_blocks')
    op.drop_table('tasks')
    op.drop_table('granted_qualifications')
    op.drop_table('workers')
    op.drop_table('requesters')
    op.drop_table('qualifications')
    op.drop_table('projects')
