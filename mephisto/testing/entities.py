"""Make one of each data-model entity in a database, for tests.

These are Mephisto's `get_test_*` helpers (its path `mephisto.utils.testing` re-exports
them), so database tests written for Mephisto run unchanged. They take any `MephistoDB`,
create rows through its public methods only, and use fixed names: calling one twice on
the same database raises `EntryAlreadyExists`, as in Mephisto.

What differs from Mephisto follows our status rules (`data_model.status`): a unit can be
given an agent only once it is launched, so `get_test_agent` launches the unit it works
on first; `get_test_unit` returns a unit as `new_unit` makes it (created).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mephisto.data_model.agent import Agent
from mephisto.data_model.assignment import Assignment
from mephisto.data_model.requester import Requester
from mephisto.data_model.status import AgentState, AssignmentState
from mephisto.data_model.task_run import TaskRun, TaskRunArgs
from mephisto.data_model.unit import Unit
from mephisto.db import batch
from mephisto.errors import EntryDoesNotExist

if TYPE_CHECKING:
    from mephisto.db.database import MephistoDB

MOCK = "mock"  # the provider and task type of everything made here
TEST_PAY = 15.0


def mock_init_params() -> str:
    """A run's stored configuration (YAML) for the mock plugins: `get_mock_params`."""
    import yaml

    return yaml.safe_dump(TaskRunArgs.get_mock_params(), sort_keys=False)


def get_test_project(db: MephistoDB) -> tuple[str, str]:
    """Create the project "test_project": (name, id)."""
    name = "test_project"
    return name, db.new_project(name)


def get_test_worker(db: MephistoDB) -> tuple[str, str]:
    """Create the mock worker "test_worker": (name, id)."""
    name = "test_worker"
    return name, db.new_worker(name, MOCK)


def get_test_requester(db: MephistoDB) -> tuple[str, str]:
    """Create the mock requester "test_requester": (name, id)."""
    name = "test_requester"
    return name, db.new_requester(name, MOCK)


def get_mock_requester(db: MephistoDB) -> Requester:
    """The first mock requester, created as "MOCK_REQUESTER" if there is none."""
    found = db.find_requesters(provider_type=MOCK)
    if found:
        return found[0]
    return Requester(db, db.new_requester("MOCK_REQUESTER", MOCK))


def get_test_task(db: MephistoDB) -> tuple[str, str]:
    """Create the mock task "test_task" (in no project): (name, id)."""
    name = "test_task"
    return name, db.new_task(name, MOCK)


def get_test_task_run(db: MephistoDB) -> str:
    """Create "test_task", "test_requester" and a run of that task: the run's id."""
    _name, task_id = get_test_task(db)
    _requester_name, requester_id = get_test_requester(db)
    return str(db.new_task_run(task_id, requester_id, mock_init_params(), MOCK, MOCK))


def get_test_assignment(db: MephistoDB) -> str:
    """Create a task run (`get_test_task_run`) and one assignment in it: its id."""
    run = TaskRun.get(db, get_test_task_run(db))
    return str(
        db.new_assignment(run.task_id, run.db_id, run.requester_id, run.task_type,
                          run.provider_type, run.sandbox)
    )


def get_test_unit(db: MephistoDB, unit_index: int = 0) -> str:
    """Create an assignment (`get_test_assignment`) and one unit of it, as `new_unit`
    leaves it (status created): the unit's id."""
    assignment = Assignment.get(db, get_test_assignment(db))
    return str(
        db.new_unit(assignment.task_id, assignment.task_run_id, assignment.requester_id,
                    assignment.db_id, unit_index, TEST_PAY, assignment.provider_type,
                    assignment.task_type, assignment.sandbox)
    )


def get_test_agent(db: MephistoDB, unit_id: str | None = None) -> str:
    """Create "test_worker" and an agent of it on `unit_id` (default: a new
    `get_test_unit`), launching the unit first if it is still created: the agent's id."""
    _name, worker_id = get_test_worker(db)
    if unit_id is None:
        unit_id = get_test_unit(db)
    unit = Unit.get(db, unit_id)
    if unit.db_status == AssignmentState.CREATED:
        db.update_unit(unit.db_id, status=AssignmentState.LAUNCHED)
    return str(
        db.new_agent(worker_id, unit.db_id, unit.task_id, unit.task_run_id,
                     unit.assignment_id, unit.task_type, unit.provider_type)
    )


def make_completed_unit(db: MephistoDB) -> str:
    """A unit that the newest worker has submitted, in the newest incomplete task run:
    a new assignment with one launched unit, an agent at work on it, and its submission. Needs
    a worker and an incomplete run in `db`. Returns the unit's id."""
    workers = db.find_workers()
    runs = db.find_task_runs(is_completed=False)
    if not workers or not runs:
        raise EntryDoesNotExist("make_completed_unit needs a worker and an incomplete run")
    worker, run = workers[-1], runs[-1]
    [(assignment_id, [unit_id])] = batch.new_assignments_with_units(db,
        run.db_id, [None], pay_amount=0.2, status=AssignmentState.LAUNCHED
    )
    agent_id = db.new_agent(worker.db_id, unit_id, run.task_id, run.db_id, assignment_id,
                            run.task_type, run.provider_type, status=AgentState.IN_TASK)
    Agent.get(db, agent_id).mark_done()
    return str(unit_id)
