"""`static_task`: a task written as one static HTML file with a form; and `StaticBlueprint`,
the base every "one data item per assignment" blueprint shares (`static_react_task` too).

The author gives `task_source` (an HTML file) and data (`static_task_data` in the shared
state, or a `data_json` / `data_jsonl` / `data_csv` file): one assignment per data item.
The server wraps the HTML in a page that loads our prebuilt client script
(`/_mephisto/static-task.js`), which fills `${field}` placeholders with the unit's data
and submits the form's fields. No npm anywhere.
"""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mephisto.abstractions.blueprint import Blueprint, BlueprintArgs, SharedTaskState
from mephisto.abstractions.blueprints.mixins.screen_task_required import (
    ScreenTaskRequired,
    ScreenTaskRequiredArgs,
    ScreenTaskSharedState,
)
from mephisto.abstractions.blueprints.mixins.use_gold_unit import (
    GoldUnitSharedState,
    UseGoldUnit,
    UseGoldUnitArgs,
)
from mephisto.data_model.agent import SavedAgentState, register_agent_state_class
from mephisto.data_model.assignment import InitializationData
from mephisto.errors import ConfigError

BLUEPRINT_TYPE_STATIC = "static_task"


@dataclass
class StaticBlueprintArgs(ScreenTaskRequiredArgs, UseGoldUnitArgs, BlueprintArgs):
    """Arguments of static blueprints (`mephisto.blueprint.*`), with those of screening
    and gold units."""

    _blueprint_type: str = BLUEPRINT_TYPE_STATIC
    units_per_assignment: int = field(
        default=1, metadata={"help": "How many workers should do each assignment."}
    )
    extra_source_dir: str = field(
        default="", metadata={"help": "Directory of extra files (images, css) the task page may load."}
    )
    data_json: str = field(default="", metadata={"help": "JSON file: a list of task data items."})
    data_jsonl: str = field(default="", metadata={"help": "JSON-lines file: one task data item per line."})
    data_csv: str = field(default="", metadata={"help": "CSV file with a header: one task data item per row."})


@dataclass
class StaticHTMLBlueprintArgs(StaticBlueprintArgs):
    task_source: str = field(
        default="???", metadata={"help": "Path to the task's HTML file.", "required": True}
    )
    preview_source: str = field(default="", metadata={"help": "HTML shown in preview (optional)."})
    onboarding_source: str = field(
        default="", metadata={"help": "HTML of the onboarding step (optional)."}
    )


@dataclass
class SharedStaticTaskState(ScreenTaskSharedState, GoldUnitSharedState, SharedTaskState):
    """Shared state of static tasks: the data, one item per assignment (and the
    screening and gold units' factories)."""

    static_task_data: Iterable[Any] = field(default_factory=list)


class StaticAgentState(SavedAgentState):
    """Saved data of a static task: the unit's inputs, the submitted outputs, timings."""

    def get_parsed_data(self) -> dict[str, Any]:
        data = self.get_data()
        times = data["times"] or {}
        start, end = times.get("task_start"), times.get("task_end")
        data["duration"] = None if start is None or end is None else end - start
        return data


register_agent_state_class(BLUEPRINT_TYPE_STATIC, StaticAgentState)


def require_file(path: str, what: str, hint: str = "") -> Path:
    """`mephisto.blueprint.<what>` as a path; `ConfigError` naming it (then `hint`) when
    it is not a file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(
            f"mephisto.blueprint.{what}: file not found: {p}{hint}", key=f"mephisto.blueprint.{what}"
        )
    return p


def load_data_file(args: Any) -> list[dict[str, Any]] | None:
    """Task data from the blueprint's data_json / data_jsonl / data_csv, if one is set."""
    bp = args.blueprint
    if bp.get("data_json"):
        items = json.loads(require_file(bp.data_json, "data_json").read_text())
        if not isinstance(items, list):
            raise ConfigError("data_json must hold a JSON list", key="mephisto.blueprint.data_json")
        return items
    if bp.get("data_jsonl"):
        lines = require_file(bp.data_jsonl, "data_jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    if bp.get("data_csv"):
        with require_file(bp.data_csv, "data_csv").open(newline="") as f:
            return list(csv.DictReader(f))
    return None


class StaticBlueprint(ScreenTaskRequired, UseGoldUnit, Blueprint):
    """Base of blueprints whose assignments are the items of a data list, each shown by a
    page made from `task_source` (`static_task`: HTML; `static_react_task`: a bundle).

    It checks the common arguments and makes the assignments; a subclass says what its
    `task_source` is (`TASK_SOURCE_HELP`, `check_task_source`) and serves the page.
    """

    ArgsClass = StaticBlueprintArgs
    SharedStateClass = SharedStaticTaskState
    AgentStateClass = StaticAgentState
    TASK_SOURCE_HELP: ClassVar[str] = "the path of the task's source file"

    @classmethod
    def check_task_source(cls, source: str) -> Path:
        """The task source file; `ConfigError` naming `task_source` when it is missing."""
        return require_file(source, "task_source")

    @classmethod
    def assert_task_args(cls, args: Any, shared_state: SharedTaskState) -> None:
        super().assert_task_args(args, shared_state)
        bp = args.blueprint
        source = bp.get("task_source")
        if not source or source == "???":
            raise ConfigError(
                f"mephisto.blueprint.task_source is required: {cls.TASK_SOURCE_HELP}",
                key="mephisto.blueprint.task_source",
            )
        cls.check_task_source(str(source))
        if bp.get("units_per_assignment", 1) < 1:
            raise ConfigError(
                "mephisto.blueprint.units_per_assignment must be >= 1",
                key="mephisto.blueprint.units_per_assignment",
            )
        if bp.get("extra_source_dir") and not Path(bp.extra_source_dir).expanduser().is_dir():
            raise ConfigError(
                f"extra_source_dir is not a directory: {bp.extra_source_dir}",
                key="mephisto.blueprint.extra_source_dir",
            )
        data_files = [k for k in ("data_json", "data_jsonl", "data_csv") if bp.get(k)]
        for key in data_files:
            require_file(str(bp.get(key)), key)
        has_file = bool(data_files)
        has_data = getattr(shared_state, "static_task_data", None)
        if not has_file and not has_data:
            raise ConfigError(
                "no task data: give SharedStaticTaskState(static_task_data=[...]) or "
                "mephisto.blueprint.data_json / data_jsonl / data_csv",
                key="mephisto.blueprint.data_json",
            )

    def get_initialization_data(self) -> Iterable[InitializationData]:
        from_file = load_data_file(self.args)
        data: Iterable[Any] = (
            from_file if from_file is not None else self.shared_state.static_task_data  # type: ignore[attr-defined]
        )
        units = int(self.args.blueprint.get("units_per_assignment", 1))
        assignments = _as_init_data(data, units)
        # a list stays a list, so the launcher can create it all up front
        return list(assignments) if hasattr(data, "__len__") else assignments

    @property
    def page_title(self) -> str:
        return str(self.args.task.get("task_title") or "Task")


class StaticTaskBlueprint(StaticBlueprint):
    BLUEPRINT_TYPE = BLUEPRINT_TYPE_STATIC
    ArgsClass = StaticHTMLBlueprintArgs
    TASK_SOURCE_HELP = "the path of the task's HTML file"

    @classmethod
    def assert_task_args(cls, args: Any, shared_state: SharedTaskState) -> None:
        super().assert_task_args(args, shared_state)
        bp = args.blueprint
        for optional in ("preview_source", "onboarding_source"):
            if bp.get(optional):
                require_file(bp.get(optional), optional)
        if bp.get("onboarding_qualification") and not bp.get("onboarding_source"):
            raise ConfigError(
                "onboarding_qualification is set but onboarding_source (its HTML) is not",
                key="mephisto.blueprint.onboarding_source",
            )

    def task_page(self) -> str:
        bp = self.args.blueprint
        parts = [_template("mephisto-task-html", Path(bp.task_source).read_text())]
        if bp.get("onboarding_source"):
            parts.append(_template("mephisto-onboarding-html", Path(bp.onboarding_source).read_text()))
        if bp.get("preview_source"):
            parts.append(_template("mephisto-preview-html", Path(bp.preview_source).read_text()))
        return wrapper_page(self.page_title, "\n".join(parts))

    def static_dir(self) -> Path | None:
        extra = self.args.blueprint.get("extra_source_dir")
        return Path(extra).resolve() if extra else Path(self.args.blueprint.task_source).resolve().parent


def _as_init_data(data: Iterable[Any], units: int) -> Iterator[InitializationData]:
    for item in data:
        if not isinstance(item, dict):
            raise ConfigError(f"each task data item must be a dict, got {type(item).__name__}")
        yield InitializationData(shared=item, unit_data=[{} for _ in range(units)])


def _template(template_id: str, body: str) -> str:
    # a <template> holds HTML inert; its content may not contain a closing </template>
    safe = body.replace("</template>", "<\\/template>")
    return f'<template id="{template_id}">{safe}</template>'


STATIC_TASK_SCRIPT = "/_mephisto/static-task.js"


def wrapper_page(
    title: str,
    body: str,
    *,
    root_id: str = "mephisto-root",
    scripts: Sequence[str] = (STATIC_TASK_SCRIPT,),
) -> str:
    """The task page: `body`, the element the client renders into (`root_id`), then the
    provider shim `/wrap_crowd_source.js` and `scripts`, in that order."""
    tags = "\n".join(f'<script src="{html.escape(src)}"></script>' for src in scripts)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
</head>
<body>
{body}
<div id="{html.escape(root_id)}"></div>
<script src="/wrap_crowd_source.js"></script>
{tags}
</body>
</html>
"""
