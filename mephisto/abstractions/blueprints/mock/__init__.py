"""`mock`: a blueprint for tests. Assignments carry `{"index": i}`; the page is a form
with one text field. Onboarding is on when `use_onboarding` is set.

A package only so that Mephisto's path `mock.mock_blueprint` (a thin re-export) can sit
beside it; the plugin is this module."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from mephisto.abstractions.blueprint import Blueprint, BlueprintArgs, SharedTaskState
from mephisto.abstractions.blueprints.static_task import wrapper_page
from mephisto.data_model.assignment import InitializationData
from mephisto.errors import ConfigError

_FORM = '<p>Unit ${index}</p><input name="answer" value="mock"><button type="submit">Submit</button>'
_ONBOARDING = '<p>Onboarding</p><input name="answer"><button type="submit">Submit</button>'


@dataclass
class MockBlueprintArgs(BlueprintArgs):
    _blueprint_type: str = "mock"
    num_assignments: int = field(default=1, metadata={"help": "How many assignments to create."})
    units_per_assignment: int = field(default=1, metadata={"help": "Units per assignment."})
    use_onboarding: bool = field(default=False, metadata={"help": "Ask for onboarding first."})
    timeout_time: int = field(default=0, metadata={"help": "Unused; kept for Mephisto configs."})
    is_concurrent: bool = field(default=True, metadata={"help": "Unused; kept for Mephisto configs."})


class MockBlueprint(Blueprint):
    BLUEPRINT_TYPE = "mock"
    ArgsClass = MockBlueprintArgs
    SharedStateClass = SharedTaskState

    @classmethod
    def assert_task_args(cls, args: Any, shared_state: SharedTaskState) -> None:
        super().assert_task_args(args, shared_state)
        if args.blueprint.get("num_assignments", 1) < 0:
            raise ConfigError("num_assignments must be >= 0", key="mephisto.blueprint.num_assignments")

    @property
    def use_onboarding(self) -> bool:
        return bool(self.args.blueprint.get("use_onboarding")) or super().use_onboarding

    def get_initialization_data(self) -> Iterable[InitializationData]:
        units = int(self.args.blueprint.get("units_per_assignment", 1))
        return [
            InitializationData(shared={"index": i}, unit_data=[{} for _ in range(units)])
            for i in range(int(self.args.blueprint.get("num_assignments", 1)))
        ]

    def task_page(self) -> str:
        return wrapper_page(
            "Mock task",
            f'<template id="mephisto-task-html">{_FORM}</template>'
            f'<template id="mephisto-onboarding-html">{_ONBOARDING}</template>',
        )
