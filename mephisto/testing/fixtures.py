"""pytest fixtures to launch a task run in a test.

Use them with `pytest_plugins = ["mephisto.testing.fixtures"]` in a conftest:

    def test_my_task(launch_static_run):
        run = launch_static_run([{"text": "a"}, {"text": "b"}])
        stats = run.simulate(workers=2)
        assert run.unit_statuses()["completed"] == 2

A run is served by the `local` architect on a free port of 127.0.0.1 and recorded in
a fresh SQLite file; the operator is shut down after the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

DEFAULT_HTML = """<p>${text}</p>
<input name="answer" required>
<button type="submit">Submit</button>
"""


def static_run_config(
    task_source: str | Path, blueprint_type: str = "static_task", **task: Any
) -> dict[str, Any]:
    """A run configuration for a static task (`static_task`, or `static_react_task` with
    a bundle as `task_source`) on the local architect and mock provider."""
    architect = {"_architect_type": "local", "port": "0", "hostname": "127.0.0.1"}
    blueprint = {"_blueprint_type": blueprint_type, "task_source": str(task_source)}
    for key in list(task):
        if key.startswith("blueprint__"):
            blueprint[key.removeprefix("blueprint__")] = task.pop(key)
    return {
        "blueprint": blueprint,
        "architect": architect,
        "provider": {"_provider_type": "mock"},
        "task": {
            "task_name": "test-task",
            "task_title": "Test task",
            "task_description": "A task made by a test",
            "task_reward": 0.1,
            "task_tags": "test",
            **task,
        },
    }


class LaunchedRun:
    """A launched run and helpers to drive and inspect it."""

    def __init__(self, operator: Any, task_run_id: str) -> None:
        self.operator = operator
        self.task_run_id = task_run_id
        self.live = operator._runs[task_run_id]
        self.url: str = self.live.url
        self.db = operator.db

    def simulate(self, workers: int, **kwargs: Any) -> Any:
        """Complete the run with simulated workers over real sockets (blocking)."""
        from mephisto.testing.worker import run_simulated_workers_sync

        return run_simulated_workers_sync(self.url, workers, **kwargs)

    def wait(self, timeout: float = 30.0) -> bool:
        """Wait until the run has finished by itself."""
        return self.live.done_sync.wait(timeout)

    def unit_statuses(self) -> dict[str, int]:
        return self.db.get_unit_status_counts(self.task_run_id)


@pytest.fixture
def mephisto_db(tmp_path: Path) -> Iterator[Any]:
    from mephisto.db import MephistoDB

    db = MephistoDB(f"sqlite:///{tmp_path / 'mephisto.db'}")
    yield db
    db.shutdown()


@pytest.fixture
def operator(mephisto_db: Any) -> Iterator[Any]:
    from mephisto.operations.operator import Operator

    op = Operator(mephisto_db)
    yield op
    op.shutdown()


@pytest.fixture
def task_html(tmp_path: Path) -> Path:
    path = tmp_path / "task.html"
    path.write_text(DEFAULT_HTML)
    return path


@pytest.fixture
def launch_static_run(operator: Any, task_html: Path) -> Callable[..., LaunchedRun]:
    """`launch_static_run(data, shared_state=None, **task_args)` -> LaunchedRun.

    Keys `blueprint__<name>` set blueprint arguments."""
    from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState

    def launch(data: Any, shared_state: Any = None, **task: Any) -> LaunchedRun:
        state = shared_state or SharedStaticTaskState()
        if data is not None:
            state.static_task_data = data
        task_run_id = operator.launch_task_run(static_run_config(task_html, **task), state)
        return LaunchedRun(operator, task_run_id)

    return launch
