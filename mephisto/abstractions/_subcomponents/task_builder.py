"""The `TaskBuilder`: where a blueprint's front-end is built or found before a run
(Mephisto's hook). Our static blueprints check their sources in `assert_task_args` and
React tasks are built by `mephisto.tools.scripts.build_custom_bundle`, so the default
builds nothing; a blueprint with its own build step overrides `build_in_dir`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["TaskBuilder"]


class TaskBuilder:
    def __init__(self, task_run: Any, args: Any) -> None:
        self.task_run = task_run
        self.args = args

    def build_in_dir(self, build_dir: str | Path) -> None:
        """Put what the task's pages need into `build_dir` (default: nothing)."""
