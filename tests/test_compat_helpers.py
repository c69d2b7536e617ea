"""Helpers that exist for Mephisto 1.x scripts and tests, at their real homes (their
Mephisto paths are pinned by test_import_paths.py): the test-entity helpers,
`TaskRunArgs.get_mock_params`, the database's refusals Mephisto's contract expects,
`load_db_and_process_config`, `find_or_create_qualification`, `get_logger` and
`ConsoleWriter`."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from omegaconf import OmegaConf

from mephisto.data_model.project import NO_PROJECT_NAME
from mephisto.data_model.status import AgentState, AssignmentState
from mephisto.data_model.task_run import TaskRun, TaskRunArgs
from mephisto.data_model.unit import Unit
from mephisto.errors import ConfigError, DatabaseError, EntryAlreadyExists, UnknownStatus
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
from mephisto.tools.scripts import load_db_and_process_config
from mephisto.utils.console_writer import ConsoleWriter
from mephisto.utils.dirs import get_db_path
from mephisto.utils.logger_core import get_logger
from mephisto.utils.qualifications import find_or_create_qualification


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


def test_find_or_create_qualification(mephisto_db: Any) -> None:
    made = find_or_create_qualification(mephisto_db, "good")
    assert find_or_create_qualification(mephisto_db, "good") == made
    assert [q.db_id for q in mephisto_db.find_qualifications()] == [made]


def test_load_db_and_process_config(capsys: pytest.CaptureFixture[str]) -> None:
    cfg = OmegaConf.create({"mephisto": TaskRunArgs.get_mock_params(), "num_tasks": 2})
    db, same = load_db_and_process_config(cfg, print_config=True)
    try:
        assert same is cfg
        assert db.find_projects() == []
        assert get_db_path().is_file()  # the configured default database
        assert "num_tasks: 2" in capsys.readouterr().out
    finally:
        db.shutdown()


def test_load_db_and_process_config_checks_before_opening() -> None:
    params = TaskRunArgs.get_mock_params()
    params["blueprint"]["_blueprint_type"] = "no_such_blueprint"
    with pytest.raises(ConfigError, match="no_such_blueprint"):
        load_db_and_process_config(OmegaConf.create({"mephisto": params}))
    assert not get_db_path().exists()


def test_get_logger_configures_nothing() -> None:
    logger = get_logger(name="mephisto.test_compat")
    assert logger is logging.getLogger("mephisto.test_compat")
    assert logger.handlers == [] and logger.level == logging.NOTSET


def test_console_writer() -> None:
    lines: list[str] = []
    writer = ConsoleWriter(printer=lines.append)
    writer.info("hello")
    writer.warning(3)
    try:
        raise RuntimeError("oops [/x]")
    except RuntimeError:
        writer.exception("failed")
    assert lines[:3] == ["hello", "3", "failed"]
    assert "RuntimeError: oops [/x]" in lines[3]
