"""A task run: one launch of a task, with its own configuration, assignments and units.

`TaskRunArgs` are the `mephisto.task.*` arguments (seed 002), with Mephisto's names,
types and defaults. `"???"` marks a required value (omegaconf's MISSING).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from mephisto.data_model.entity import Entity
from mephisto.data_model.status import AssignmentState
from mephisto.errors import ConfigError
from mephisto.utils.args import Args

if TYPE_CHECKING:
    from mephisto.data_model.assignment import Assignment
    from mephisto.data_model.requester import Requester
    from mephisto.data_model.task import Task
    from mephisto.data_model.unit import Unit

MISSING: Any = "???"  # omegaconf's marker for a required value


@dataclass
class TaskRunArgs:
    """Arguments of a task run (`mephisto.task` in a run script's config)."""

    task_name: str | None = field(
        default=None,
        metadata={"help": "Grouping to launch this task run under; none defaults to the blueprint type."},
    )
    task_title: str = field(
        default=MISSING,
        metadata={"help": "Display title for your task on the crowd provider.", "required": True},
    )
    task_description: str = field(
        default=MISSING,
        metadata={"help": "Longer form description for what your task entails.", "required": True},
    )
    task_reward: float = field(
        default=MISSING,
        metadata={"help": "Amount to pay per worker per unit, in dollars.", "required": True},
    )
    task_tags: str = field(
        default=MISSING,
        metadata={"help": "Comma separated tags for workers to use to find your task.", "required": True},
    )
    task_lifetime_in_seconds: int = field(
        default=60 * 60 * 24 * 31,
        metadata={"help": "The time that the task will last for before expiring."},
    )
    assignment_duration_in_seconds: int = field(
        default=30 * 60,
        metadata={"help": "Time that workers have to work on your task once accepted."},
    )
    no_submission_patience: int = field(
        default=60 * 60 * 12,
        metadata={
            "help": "How long to wait between task submissions before shutting the run "
            "down for a presumed issue. Value in seconds, default 12 hours."
        },
    )
    allowed_concurrent: int = field(
        default=0,
        metadata={"help": "Maximum units a worker is allowed to work on at once. (0 is infinite)."},
    )
    maximum_units_per_worker: int = field(
        default=0,
        metadata={
            "help": "Maximum tasks of this task name that a worker can work on across all "
            "tasks that share this task_name. (0 is infinite)."
        },
    )
    max_num_concurrent_units: int = field(
        default=0,
        metadata={
            "help": "Maximum units that will be released simultaneously, setting a limit on "
            "concurrent connections to Mephisto overall. (0 is infinite)."
        },
    )
    submission_timeout: int = field(
        default=600,
        metadata={
            "help": "Time that mephisto will wait after marking a task done before abandoning "
            "waiting for the worker to actually press submit."
        },
    )
    post_install_script: str = field(
        default="",
        metadata={"help": "A shell script in your webapp directory run after npm install, before npm build."},
    )
    force_rebuild: bool = field(
        default=False,
        metadata={"help": "Run the npm build every time the task is run, not only when sources changed."},
    )
    resume_incomplete_run: bool = field(
        default=False,
        metadata={"help": "Resume incomplete or interrupted TaskRun if it exists."},
    )
    aux_parameters: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "Any auxiliary parameter you need to pass for your task."},
    )
    # Beyond Mephisto's arguments: what the run may spend.
    project_name: str | None = field(
        default=None,
        metadata={"help": "Project to count this task under (made if new); its budget, "
                          "set with `mephisto budget`, caps the spending of all its runs."},
    )
    budget: float | None = field(
        default=None,
        metadata={"help": "Most this run may spend, in dollars: rewards, the provider's "
                          "fee and bonuses. Launches and bonuses past it are refused. "
                          "None: no cap."},
    )
    planned_bonus_per_unit: float = field(
        default=0.0,
        metadata={"help": "Bonus you expect to pay per unit, in dollars: shown in the "
                          "cost preview at launch (bonuses are checked when paid)."},
    )

    @classmethod
    def check(cls, values: Any) -> None:
        """Raise `ConfigError` naming the first bad `mephisto.task.*` value."""
        for f in fields(cls):
            value = values.get(f.name, None) if hasattr(values, "get") else getattr(values, f.name, None)
            key = f"mephisto.task.{f.name}"
            if f.metadata.get("required") and (value is None or value == MISSING):
                raise ConfigError(f"{key} is required: {f.metadata['help']}", key=key)
            if value is None or value == MISSING:
                continue
            types: dict[str, type | tuple[type, ...]] = {
                "int": int, "float": (int, float), "bool": bool, "str": str}
            expected = types.get(str(f.type).split(" |")[0])
            if expected is not None and (
                not isinstance(value, expected) or (expected is int and isinstance(value, bool))
            ):
                raise ConfigError(f"{key} must be {f.type}, got {value!r}", key=key)
            if expected is int and value < 0:
                raise ConfigError(f"{key} must be >= 0, got {value}", key=key)
        for name in ("task_reward", "budget", "planned_bonus_per_unit"):
            amount = values.get(name) if hasattr(values, "get") else None
            if isinstance(amount, (int, float)) and amount < 0:
                raise ConfigError(f"mephisto.task.{name} must be >= 0, got {amount}",
                                  key=f"mephisto.task.{name}")

    @classmethod
    def get_mock_params(cls) -> dict[str, Any]:
        """A complete `mephisto` config section for tests: the mock blueprint, architect
        and provider, and task arguments with every required value set (Mephisto's name)."""
        task = cls(
            task_title="Mock task",
            task_description="A task made for a test",
            task_reward=0.3,
            task_tags="mock,test",
        )
        return {
            "blueprint": {"_blueprint_type": "mock"},
            "architect": {"_architect_type": "mock"},
            "provider": {"_provider_type": "mock"},
            "task": {f.name: getattr(task, f.name) for f in fields(task)},
        }


class TaskRun(Entity):
    _getter = "get_task_run"
    task_id: str
    requester_id: str
    init_params: str
    is_completed: bool
    provider_type: str
    task_type: str
    sandbox: bool

    @property
    def args(self) -> Args:
        """The run's full configuration, as it was resolved at launch (`Args`)."""
        import yaml

        return Args.of(yaml.safe_load(self.init_params or "") or {})

    def get_task_args(self) -> Any:
        return self.args.get("task", self.args)

    def get_task(self) -> Task:
        from mephisto.data_model.task import Task

        return Task(self.db, self.task_id)

    @property
    def task_name(self) -> str:
        return self.get_task().task_name

    def get_requester(self) -> Requester:
        from mephisto.data_model.requester import Requester

        return Requester(self.db, self.requester_id)

    def get_assignments(self, status: str | None = None) -> list[Assignment]:
        assignments = self.db.find_assignments(task_run_id=self.db_id)
        if status is None:
            return assignments
        return [a for a in assignments if a.get_status() == status]

    def get_units(self, status: str | list[str] | None = None) -> list[Unit]:
        return self.db.find_units(task_run_id=self.db_id, status=status)

    def get_assignment_statuses(self) -> dict[str, int]:
        """Number of assignments in each status (every status present, zeros included)."""
        counts = {str(s): 0 for s in AssignmentState}
        counts.update(self.db.get_assignment_status_counts(self.db_id))
        return counts

    def get_unit_statuses(self) -> dict[str, int]:
        counts = {str(s): 0 for s in AssignmentState.valid_unit()}
        counts.update(self.db.get_unit_status_counts(self.db_id))
        return counts

    def get_is_completed(self) -> bool:
        self.refresh()
        return bool(self.is_completed)

    def update_completion_progress(self) -> bool:
        """Mark the run completed once no unit is open. Returns whether it is."""
        counts = self.db.get_unit_status_counts(self.db_id)
        done = sum(counts.values()) > 0 and not any(
            counts.get(s, 0) for s in AssignmentState.incomplete()
        )
        if done and not self.is_completed:
            self.db.update_task_run(self.db_id, is_completed=True)
            self.is_completed = True
        return done
