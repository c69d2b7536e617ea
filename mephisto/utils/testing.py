"""Mephisto's import path for its test-entity helpers; the real home is
`mephisto.testing.entities`."""

from mephisto.testing.entities import (
    get_mock_requester,
    get_test_agent,
    get_test_assignment,
    get_test_project,
    get_test_requester,
    get_test_task,
    get_test_task_run,
    get_test_unit,
    get_test_worker,
    make_completed_unit,
)

__all__ = [
    "get_mock_requester",
    "get_test_agent",
    "get_test_assignment",
    "get_test_project",
    "get_test_requester",
    "get_test_task",
    "get_test_task_run",
    "get_test_unit",
    "get_test_worker",
    "make_completed_unit",
]
