"""The blueprint contract: what a task is, what workers see, and what is saved.

A blueprint class declares `BLUEPRINT_TYPE`, an `ArgsClass` (dataclass, the
`mephisto.blueprint.*` config), a `SharedStateClass` (Python-side state that cannot be
configuration: data, validators, requirements) and an `AgentStateClass` (how an agent's
saved data is read back). To implement one, override:

- `assert_task_args(args, shared_state)` (classmethod): raise `ConfigError` for any
  configuration the run cannot work with, before anything is launched.
- `get_initialization_data()`: the assignments to create, as an iterable (list, iterator
  or generator) of `InitializationData`.
- `task_page()`: the HTML served at `/` of the task server.
- `get_frontend_args()`: the JSON served at `/task_config.json`.
- `static_dir()`: the directory whose files the server may serve (None = none).
- `validate_submission(agent_data)` (optional): raise `MalformedRequest` to refuse a
  submission (nothing is saved).
- `TaskRunnerClass` (optional, live tasks): a `TaskRunner` whose `run_unit(unit, agent)`
  runs beside each unit while its worker acts (`agent.act()` / `agent.observe()`:
  `abstractions/_subcomponents/task_runner.py`); `TaskBuilderClass` builds the front-end.

Screening and gold units are mixins (`blueprints/mixins/`, `BlueprintMixin`) a blueprint
class inherits with their arguments and shared state; the worker pool asks them which
unit a worker gets.

Blueprints never touch the database directly: the operations layer saves agent data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mephisto.abstractions._subcomponents.task_builder import TaskBuilder
from mephisto.abstractions._subcomponents.task_runner import TaskRunner
from mephisto.data_model.agent import SavedAgentState
from mephisto.data_model.assignment import InitializationData

# Mephisto reads agent statuses from its blueprint module (`AgentState.STATUS_NONE`);
# ours live in `data_model.status` and are re-exported here under that path.
from mephisto.data_model.status import AgentState  # noqa: F401
from mephisto.errors import ConfigError


@dataclass
class BlueprintArgs:
    """Arguments every blueprint takes (`mephisto.blueprint.*`)."""

    _blueprint_type: str = "???"
    block_qualification: str | None = field(
        default=None,
        metadata={"help": "Workers granted this qualification are blocked from the task."},
    )
    onboarding_qualification: str | None = field(
        default=None,
        metadata={
            "help": "Qualification recording onboarding results; set it to require onboarding."
        },
    )


@dataclass
class SharedTaskState:
    """State shared by every unit of a run that cannot be plain configuration."""

    task_config: dict[str, Any] = field(default_factory=dict)
    qualifications: list[Any] = field(default_factory=list)
    worker_can_do_unit: Callable[[Any, Any], bool] | None = None
    on_unit_submitted: Callable[[Any], None] | None = None
    onboarding_data: dict[str, Any] = field(default_factory=dict)
    validate_onboarding: Callable[[Any], bool] | None = None
    mturk_specific_qualifications: list[dict[str, Any]] = field(default_factory=list)
    prolific_specific_qualifications: list[dict[str, Any]] = field(default_factory=list)


class BlueprintMixin:
    """A part of a blueprint that several blueprints share (Mephisto's mixins:
    `blueprints/mixins/`). It brings its own arguments (`ArgsMixin`, a dataclass the
    blueprint's `ArgsClass` inherits) and shared state (`SharedStateMixin`), checks them
    in `assert_mixin_args`, sets itself up in `init_mixin_config` (called by
    `Blueprint.__init__`), and may add qualification requirements to a run
    (`get_mixin_qualifications`)."""

    ArgsMixin: ClassVar[type[Any]]
    SharedStateMixin: ClassVar[type[Any]]

    def init_mixin_config(self, task_run: Any, args: Any, shared_state: Any) -> None:
        """Set up this part of the blueprint for a run."""

    @classmethod
    def assert_mixin_args(cls, args: Any, shared_state: Any) -> None:
        """Raise `ConfigError` for arguments this part cannot work with."""

    @classmethod
    def get_mixin_qualifications(cls, args: Any, shared_state: Any) -> list[dict[str, Any]]:
        """Qualification requirements this part adds to a run (`make_qualification_dict`)."""
        return []


def blueprint_mixins(blueprint_class: type[Any]) -> list[type[BlueprintMixin]]:
    """The mixins a blueprint class is made of, in method resolution order."""
    return [c for c in blueprint_class.__mro__
            if issubclass(c, BlueprintMixin) and c is not BlueprintMixin
            and "init_mixin_config" in c.__dict__]


class Blueprint:
    BLUEPRINT_TYPE: ClassVar[str | None] = None
    ArgsClass: ClassVar[type[Any]] = BlueprintArgs
    SharedStateClass: ClassVar[type[SharedTaskState]] = SharedTaskState
    AgentStateClass: ClassVar[type[SavedAgentState]] = SavedAgentState
    TaskRunnerClass: ClassVar[type[TaskRunner]] = TaskRunner
    TaskBuilderClass: ClassVar[type[TaskBuilder]] = TaskBuilder

    def __init__(self, task_run: Any, args: Any, shared_state: SharedTaskState) -> None:
        self.task_run = task_run
        self.args = args
        self.shared_state = shared_state
        for mixin in blueprint_mixins(type(self)):
            mixin.init_mixin_config(self, task_run, args, shared_state)  # type: ignore[arg-type]

    @classmethod
    def assert_task_args(cls, args: Any, shared_state: SharedTaskState) -> None:
        if not isinstance(shared_state, SharedTaskState):
            raise ConfigError(
                f"shared_state must be a {cls.SharedStateClass.__name__}, "
                f"got {type(shared_state).__name__}"
            )
        for requirement in shared_state.qualifications:
            if not isinstance(requirement, dict) or "qualification_name" not in requirement:
                raise ConfigError(
                    "each entry of shared_state.qualifications must come from "
                    "make_qualification_dict()",
                    key="qualifications",
                )
        for mixin in blueprint_mixins(cls):
            mixin.assert_mixin_args(args, shared_state)

    def get_initialization_data(self) -> Iterable[InitializationData]:
        raise NotImplementedError

    def task_page(self) -> str:
        raise NotImplementedError

    def get_frontend_args(self) -> dict[str, Any]:
        task = self.args.task
        return {
            "task_title": task.get("task_title"),
            "task_description": task.get("task_description"),
            "task_reward": task.get("task_reward"),
            "block_mobile": False,
            **dict(self.shared_state.task_config),
        }

    def static_dir(self) -> Path | None:
        return None

    @property
    def use_onboarding(self) -> bool:
        return bool(getattr(self.args.blueprint, "onboarding_qualification", None))

    def onboarding_init_data(self) -> dict[str, Any]:
        return dict(self.shared_state.onboarding_data)

    def validate_onboarding(self, data: dict[str, Any]) -> bool:
        validator = self.shared_state.validate_onboarding
        return True if validator is None else bool(validator(data))

    def validate_submission(self, agent_data: dict[str, Any]) -> None:
        """Refuse a submission by raising `MalformedRequest`. Default: accept."""

    def make_task_runner(self) -> TaskRunner:
        """The run's `TaskRunner` (one per run)."""
        return self.TaskRunnerClass(self.task_run, self.args, self.shared_state)
