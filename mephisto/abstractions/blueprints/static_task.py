"""`static_task`: a task written as one static HTML file with a form.

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
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mephisto.abstractions.blueprint import Blueprint, BlueprintArgs, SharedTaskState
from mephisto.data_model.agent import SavedAgentState, register_agent_state_class
from mephisto.data_model.assignment import InitializationData
from mephisto.errors import ConfigError

BLUEPRINT_TYPE_STATIC = "static_task"


@dataclass
class StaticBlueprintArgs(BlueprintArgs):
    """Arguments of static blueprints (`mephisto.blueprint.*`)."""

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
class SharedStaticTaskState(SharedTaskState):
    """Shared state of static tasks: the data, one item per assignment."""

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


def _read_path(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"{what} file not found: {p}", key=f"mephisto.blueprint.{what}")
    return p


def load_data_file(args: Any) -> list[dict[str, Any]] | None:
    """Task data from the blueprint's data_json / data_jsonl / data_csv, if one is set."""
    bp = args.blueprint
    if bp.get("data_json"):
        items = json.loads(_read_path(bp.data_json, "data_json").read_text())
        if not isinstance(items, list):
            raise ConfigError("data_json must hold a JSON list", key="mephisto.blueprint.data_json")
        return items
    if bp.get("data_jsonl"):
        lines = _read_path(bp.data_jsonl, "data_jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]
    if bp.get("data_csv"):
        with _read_path(bp.data_csv, "data_csv").open(newline="") as f:
            return list(csv.DictReader(f))
    return None


class StaticTaskBlueprint(Blueprint):
    BLUEPRINT_TYPE = BLUEPRINT_TYPE_STATIC
    ArgsClass = StaticHTMLBlueprintArgs
    SharedStateClass = SharedStaticTaskState
    AgentStateClass = StaticAgentState

    @classmethod
    def assert_task_args(cls, args: Any, shared_state: SharedTaskState) -> None:
        super().assert_task_args(args, shared_state)
        bp = args.blueprint
        source = bp.get("task_source")
        if not source or source == "???":
            raise ConfigError(
                "mephisto.blueprint.task_source is required: the path of the task's HTML file",
                key="mephisto.blueprint.task_source",
            )
        _read_path(source, "task_source")
        for optional in ("preview_source", "onboarding_source"):
            if bp.get(optional):
                _read_path(bp.get(optional), optional)
        if bp.get("units_per_assignment", 1) < 1:
            raise ConfigError(
                "mephisto.blueprint.units_per_assignment must be >= 1",
                key="mephisto.blueprint.units_per_assignment",
            )
        if bp.get("extra_source_dir") and not Path(bp.extra_source_dir).is_dir():
            raise ConfigError(
                f"extra_source_dir is not a directory: {bp.extra_source_dir}",
                key="mephisto.blueprint.extra_source_dir",
            )
        has_file = any(bp.get(k) for k in ("data_json", "data_jsonl", "data_csv"))
        has_data = getattr(shared_state, "static_task_data", None)
        if not has_file and not has_data:
            raise ConfigError(
                "no task data: give SharedStaticTaskState(static_task_data=[...]) or "
                "mephisto.blueprint.data_json / data_jsonl / data_csv",
                key="mephisto.blueprint.data_json",
            )
        if bp.get("onboarding_qualification") and not bp.get("onboarding_source"):
            raise ConfigError(
                "onboarding_qualification is set but onboarding_source (its HTML) is not",
                key="mephisto.blueprint.onboarding_source",
            )

    def get_initialization_data(self) -> Iterable[InitializationData]:
        items = load_data_file(self.args)
        data: Iterable[Any] = items if items is not None else self.shared_state.static_task_data  # type: ignore[attr-defined]
        units = int(self.args.blueprint.get("units_per_assignment", 1))
        items = _as_init_data(data, units)
        # a list stays a list, so the launcher can create it all up front
        return list(items) if hasattr(data, "__len__") else items

    def task_page(self) -> str:
        bp = self.args.blueprint
        parts = [_template("mephisto-task-html", Path(bp.task_source).read_text())]
        if bp.get("onboarding_source"):
            parts.append(_template("mephisto-onboarding-html", Path(bp.onboarding_source).read_text()))
        if bp.get("preview_source"):
            parts.append(_template("mephisto-preview-html", Path(bp.preview_source).read_text()))
        return wrapper_page(str(self.args.task.get("task_title") or "Task"), "\n".join(parts))

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


def wrapper_page(title: str, templates: str) -> str:
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
</head>
<body>
{templates}
<div id="mephisto-root"></div>
<script src="/wrap_crowd_source.js"></script>
<script src="/_mephisto/static-task.js"></script>
</body>
</html>
"""
