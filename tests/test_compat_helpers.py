"""Helpers that exist for Mephisto 1.x scripts and tests, at their real homes: the
test-entity helpers, `TaskRunArgs.get_mock_params`, and the database's refusals
Mephisto's contract expects."""

from __future__ import annotations

from typing import Any

import pytest
from omegaconf import OmegaConf

from mephisto.data_model.project import NO_PROJECT_NAME
from mephisto.data_model.status import AgentState, AssignmentState
from mephisto.data_model.task_run import TaskRun, TaskRunArgs
from mephisto.data_model.unit import Unit
from mephisto.errors import DatabaseError, EntryAlreadyExists, UnknownStatus
from mephisto.operations.hydra_config import check_run_config
from mephisto.testing.entities import (
    get_mock_requester,
    get_test_agent,
    get_test_project,
    get_test_task_run,
    get_test_unit,
    get_test_worker,
    make_completed_unit,
)


def test_mock_params_are_a_complete_run_config() -> None:
    params = TaskRunArgs.get_mock_params()
    check_run_config(params)
    assert OmegaConf.to_yaml(params).startswith("blueprint:")
    assert params["task"]["task_reward"] == 0.3


def test_test_entities_chain(mephisto_db: Any) -> None:
    db = mephisto_db
    assert get_test_project(db)[0] == "test_project"
    run = TaskRun.get(db, get_test_task_run(db))
    assert run.get_task().task_name == "test_task"
    assert run.get_requester().requester_name == "test_requester"
    assert run.args["task"]["task_title"] == "Mock task"
    with pytest.raises(EntryAlreadyExists):  # fixed names, as in Mephisto
        get_test_task_run(db)


def test_test_unit_is_created_and_test_agent_launches_it(mephisto_db: Any) -> None:
    db = mephisto_db
    unit = Unit.get(db, get_test_unit(db))
    assert unit.db_status == AssignmentState.CREATED
    agent_id = get_test_agent(db, unit.db_id)
    unit.refresh()
    assert (unit.db_status, unit.agent_id) == (AssignmentState.ASSIGNED, agent_id)
    assert db.get_agent(agent_id)["status"] == AgentState.NONE


def test_mock_requester_is_made_once(mephisto_db: Any) -> None:
    first = get_mock_requester(mephisto_db)
    assert first.requester_name == "MOCK_REQUESTER"
    assert get_mock_requester(mephisto_db) == first


def test_make_completed_unit(mephisto_db: Any) -> None:
    db = mephisto_db
    get_test_task_run(db)
    get_test_worker(db)
    unit = Unit.get(db, make_completed_unit(db))
    assert unit.db_status == AssignmentState.COMPLETED
    agent = unit.get_assigned_agent()
    assert agent is not None and agent.get_status() == AgentState.COMPLETED


def test_unknown_statuses_are_database_errors(mephisto_db: Any) -> None:
    db = mephisto_db
    unit_id = get_test_unit(db)
    with pytest.raises(DatabaseError):
        db.update_unit(unit_id, status="FAKE_STATUS")
    agent_id = get_test_agent(db, unit_id)
    with pytest.raises(UnknownStatus):
        db.update_agent(agent_id, status="FAKE_STATUS")
    with pytest.raises(ValueError):  # what the enum lookup raised before
        AssignmentState("FAKE_STATUS")


def test_reserved_project_name_is_refused(mephisto_db: Any) -> None:
    with pytest.raises(DatabaseError, match="reserved"):
        mephisto_db.new_project(NO_PROJECT_NAME)
    assert mephisto_db.find_projects() == []
