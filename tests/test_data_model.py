"""Statuses, transitions, TaskRunArgs and qualification helpers (no database)."""

from __future__ import annotations

import dataclasses

import pytest

from mephisto.data_model.qualification import (
    QUAL_EXISTS,
    QUAL_GREATER,
    QUAL_IN_LIST,
    QUAL_NOT_EXIST,
    SUPPORTED_COMPARATORS,
    meets_requirement,
)
from mephisto.data_model.status import (
    AGENT_TRANSITIONS,
    UNIT_STATUS_FOR_AGENT,
    UNIT_TRANSITIONS,
    AgentState,
    AssignmentState,
    check_agent_transition,
    check_unit_transition,
    derive_assignment_status,
)
from mephisto.data_model.task_run import MISSING, TaskRunArgs
from mephisto.errors import ConfigError, InvalidTransition
from mephisto.utils.qualifications import make_qualification_dict, worker_meets_requirements


def test_stored_strings_are_mephistos() -> None:
    assert [s.value for s in AssignmentState] == [
        "created", "launched", "assigned", "completed", "accepted", "mixed",
        "rejected", "soft_rejected", "expired",
    ]
    assert [s.value for s in AgentState] == [
        "none", "accepted", "onboarding", "waiting", "in task", "completed", "disconnect",
        "timeout", "partner disconnect", "expired", "returned", "approved", "soft_rejected",
        "rejected",
    ]
    assert AgentState.STATUS_IN_TASK is AgentState.IN_TASK
    assert AgentState("in task") == "in task"


def test_tables_cover_every_status() -> None:
    assert set(UNIT_TRANSITIONS) == set(AssignmentState)
    assert set(AGENT_TRANSITIONS) == set(AgentState)
    assert set(UNIT_STATUS_FOR_AGENT) == set(AgentState)


@pytest.mark.parametrize("old", list(AssignmentState.valid_unit()))
@pytest.mark.parametrize("new", list(AssignmentState.valid_unit()))
def test_unit_transition_check(old: AssignmentState, new: AssignmentState) -> None:
    if old == new or new in UNIT_TRANSITIONS[old]:
        check_unit_transition("1", old, new)
    else:
        with pytest.raises(InvalidTransition, match=f"'{old}' to '{new}'"):
            check_unit_transition("1", old, new)


@pytest.mark.parametrize("old", list(AgentState))
@pytest.mark.parametrize("new", list(AgentState))
def test_agent_transition_check(old: AgentState, new: AgentState) -> None:
    # the same status again is a no-op only while the agent is at work: a completed (or
    # otherwise final) agent is never set to its status again
    if (old == new and old in AgentState.active()) or new in AGENT_TRANSITIONS[old]:
        check_agent_transition("a", old, new)
    else:
        with pytest.raises(InvalidTransition):
            check_agent_transition("a", old, new)


def test_final_statuses_are_final() -> None:
    for status in (AssignmentState.ACCEPTED, AssignmentState.REJECTED, AssignmentState.SOFT_REJECTED):
        assert UNIT_TRANSITIONS[status] == frozenset()
    for status in (AgentState.APPROVED, AgentState.REJECTED, AgentState.TIMEOUT, AgentState.RETURNED):
        assert AGENT_TRANSITIONS[status] == frozenset()


def test_derive_assignment_status() -> None:
    assert derive_assignment_status(["completed", "completed"]) == "completed"
    assert derive_assignment_status(["completed", "launched"]) == "launched"
    assert derive_assignment_status(["accepted", "rejected"]) == "mixed"
    assert derive_assignment_status([]) == "created"


# seed 002: name -> (type, default); MISSING = required
SEED_TASK_ARGS = {
    "task_name": (str, None),
    "task_title": (str, MISSING),
    "task_description": (str, MISSING),
    "task_reward": (float, MISSING),
    "task_tags": (str, MISSING),
    "task_lifetime_in_seconds": (int, 2678400),
    "assignment_duration_in_seconds": (int, 1800),
    "no_submission_patience": (int, 43200),
    "allowed_concurrent": (int, 0),
    "maximum_units_per_worker": (int, 0),
    "max_num_concurrent_units": (int, 0),
    "submission_timeout": (int, 600),
    "post_install_script": (str, ""),
    "force_rebuild": (bool, False),
    "resume_incomplete_run": (bool, False),
    "aux_parameters": (dict, {}),
}


# Ours beyond the seed's: spending caps (optional, so seed configs are unchanged).
EXTRA_TASK_ARGS = {"project_name": None, "budget": None, "planned_bonus_per_unit": 0.0}


def test_task_run_args_match_seed() -> None:
    args = TaskRunArgs()
    fields = {f.name: f for f in dataclasses.fields(TaskRunArgs)}
    assert set(fields) == set(SEED_TASK_ARGS) | set(EXTRA_TASK_ARGS)
    for name, default in EXTRA_TASK_ARGS.items():
        assert getattr(args, name) == default and fields[name].metadata["help"], name
    for name, (_type, default) in SEED_TASK_ARGS.items():
        assert getattr(args, name) == default, name
        assert fields[name].metadata["help"], name
    assert TaskRunArgs().aux_parameters is not TaskRunArgs().aux_parameters


def _valid() -> dict[str, object]:
    return {"task_title": "t", "task_description": "d", "task_reward": 0.5, "task_tags": "x"}


def test_task_run_args_check_accepts_valid() -> None:
    TaskRunArgs.check(_valid())
    TaskRunArgs.check({**_valid(), "task_reward": 1, "max_num_concurrent_units": 10})


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ({"task_title": MISSING}, "mephisto.task.task_title"),
        ({"task_title": None}, "mephisto.task.task_title"),
        ({"task_reward": "lots"}, "mephisto.task.task_reward"),
        ({"task_reward": -1.0}, "mephisto.task.task_reward"),
        ({"allowed_concurrent": "2"}, "mephisto.task.allowed_concurrent"),
        ({"allowed_concurrent": True}, "mephisto.task.allowed_concurrent"),
        ({"assignment_duration_in_seconds": -5}, "mephisto.task.assignment_duration_in_seconds"),
        ({"force_rebuild": "yes"}, "mephisto.task.force_rebuild"),
    ],
)
def test_task_run_args_check_names_the_key(override: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        TaskRunArgs.check({**_valid(), **override})
    assert info.value.key == key
    assert key in str(info.value)


def test_qualification_dicts() -> None:
    req = make_qualification_dict("allow", QUAL_EXISTS)
    assert req == {"qualification_name": "allow", "comparator": QUAL_EXISTS, "value": None,
                   "applicable_providers": None}
    with pytest.raises(ConfigError):
        make_qualification_dict("allow", "Bigger")
    with pytest.raises(ConfigError):
        make_qualification_dict("score", QUAL_GREATER)
    with pytest.raises(ConfigError):
        make_qualification_dict("score", QUAL_IN_LIST, 3)
    assert len(SUPPORTED_COMPARATORS) == 10


def test_requirements() -> None:
    reqs = [make_qualification_dict("allow", QUAL_EXISTS), make_qualification_dict("score", QUAL_GREATER, 2)]
    assert worker_meets_requirements({"allow": 0, "score": 3}, reqs)
    assert not worker_meets_requirements({"score": 3}, reqs)
    assert not worker_meets_requirements({"allow": 1, "score": 2}, reqs)
    assert worker_meets_requirements({}, [make_qualification_dict("block", QUAL_NOT_EXIST)])
    assert meets_requirement(2, QUAL_IN_LIST, [1, 2])
    with pytest.raises(ValueError):
        meets_requirement(1, "Nope", 1)
