"""Screening units: a new worker's first unit checks them before they get real work
(Mephisto's `ScreenTaskRequired`).

A worker who does not hold `passed_qualification_name` is given a screening unit: made
for them from `shared_state.screening_data_factory` (a generator of task data), at most
`max_screening_units` in the run. Their submission is checked by the function given to
`create_validation_function`, which the run calls as `on_unit_submitted`: a pass grants
`passed_qualification_name` (the worker gets real units from then on), a fail grants
`block_qualification` (the worker is refused with a message). With
`screening_data_factory=False` the worker's first real unit is checked instead (then
`max_screening_units` must be 0).

    shared_state = SharedStaticTaskState(static_task_data=data)
    shared_state.screening_data_factory = my_screening_generator()
    shared_state.on_unit_submitted = ScreenTaskRequired.create_validation_function(
        cfg.mephisto, validate_screening_unit)
    shared_state.qualifications += ScreenTaskRequired.get_mixin_qualifications(
        cfg.mephisto, shared_state)

with `mephisto.blueprint.use_screening_task=true`, `passed_qualification_name`,
`block_qualification`, `max_screening_units` and `mephisto.task.allowed_concurrent=1`
(a worker finishes the screening before anything else). Screening units are paid like
any unit and count under the budgets; exports mark them (`unit_kind`).
"""

from __future__ import annotations

import logging
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from mephisto.abstractions.blueprint import BlueprintMixin
from mephisto.abstractions.blueprints.mixins import blueprint_arg, require_one_unit_at_a_time
from mephisto.data_model.qualification import QUAL_NOT_EXIST
from mephisto.errors import ConfigError
from mephisto.utils.qualifications import find_or_create_qualification, make_qualification_dict

if TYPE_CHECKING:
    from mephisto.data_model.unit import Unit
    from mephisto.data_model.worker import Worker

logger = logging.getLogger(__name__)

__all__ = [
    "ScreenTaskRequired",
    "ScreenTaskRequiredArgs",
    "ScreenTaskSharedState",
    "blank_generator",
]


@dataclass
class ScreenTaskRequiredArgs:
    passed_qualification_name: str | None = field(
        default=None,
        metadata={"help": "Qualification granted to workers who pass screening."},
    )
    max_screening_units: int = field(
        default=0,
        metadata={"help": "Most screening units this run makes (you pay for them like any "
                          "unit); 0 when screening on real units."},
    )
    use_screening_task: bool = field(
        default=False, metadata={"help": "Screen new workers with a first unit."},
    )


def blank_generator() -> Iterator[dict[str, Any]]:
    """Screening data that is empty, forever (the default factory)."""
    while True:
        yield {}


@dataclass
class ScreenTaskSharedState:
    screening_data_factory: Any = field(
        default_factory=blank_generator,
        metadata={"help": "A generator of screening units' task data, or False to screen "
                          "on real units."},
    )



class ScreenTaskRequired(BlueprintMixin):
    """Gives workers who have not passed screening a screening unit first."""

    ArgsMixin: ClassVar[type[Any]] = ScreenTaskRequiredArgs
    SharedStateMixin: ClassVar[type[Any]] = ScreenTaskSharedState

    use_screening_task: bool = False
    passed_qualification_name: str = ""
    failed_qualification_name: str = ""
    screening_units_launched: int = 0
    screening_unit_cap: int = 0
    screening_data_factory: Any = False

    def init_mixin_config(self, task_run: Any, args: Any, shared_state: Any) -> None:
        self.init_screening_config(task_run, args, shared_state)

    def init_screening_config(self, task_run: Any, args: Any, shared_state: Any) -> None:
        self.use_screening_task = bool(blueprint_arg(args, "use_screening_task", False))
        if not self.use_screening_task:
            return
        self.passed_qualification_name = str(blueprint_arg(args, "passed_qualification_name"))
        self.failed_qualification_name = str(blueprint_arg(args, "block_qualification"))
        self.screening_data_factory = getattr(shared_state, "screening_data_factory", False)
        self.screening_units_launched = 0
        self.screening_unit_cap = int(blueprint_arg(args, "max_screening_units", 0))
        db = getattr(task_run, "db", None)
        if db is not None:  # the validator grants them: they must exist
            find_or_create_qualification(db, self.passed_qualification_name)
            find_or_create_qualification(db, self.failed_qualification_name)

    @classmethod
    def assert_mixin_args(cls, args: Any, shared_state: Any) -> None:
        if not blueprint_arg(args, "use_screening_task", False):
            return
        key = "mephisto.blueprint"
        if blueprint_arg(args, "use_golds", False):
            raise ConfigError("screening units and gold units cannot be used together",
                              key=f"{key}.use_golds")
        if not blueprint_arg(args, "passed_qualification_name"):
            raise ConfigError("screening needs passed_qualification_name: the qualification "
                              "workers who pass get", key=f"{key}.passed_qualification_name")
        if not blueprint_arg(args, "block_qualification"):
            raise ConfigError("screening needs block_qualification: the qualification "
                              "workers who fail get", key=f"{key}.block_qualification")
        if blueprint_arg(args, "block_qualification") == blueprint_arg(args, "passed_qualification_name"):
            raise ConfigError("passed_qualification_name and block_qualification must differ",
                              key=f"{key}.block_qualification")
        require_one_unit_at_a_time(args, "screening units",
                                   "a worker finishes the screening before anything else")
        factory = getattr(shared_state, "screening_data_factory", None)
        cap = blueprint_arg(args, "max_screening_units", 0)
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
            raise ConfigError(f"max_screening_units must be a whole number >= 0, not {cap!r}",
                              key=f"{key}.max_screening_units")
        if factory is False:
            if cap != 0:
                raise ConfigError("max_screening_units must be 0 when screening on real "
                                  "units (screening_data_factory=False)",
                                  key=f"{key}.max_screening_units")
        elif not isinstance(factory, types.GeneratorType | Iterator):
            raise ConfigError("shared_state.screening_data_factory must be a generator of "
                              "screening data, or False to screen on real units",
                              key="screening_data_factory")
        elif cap <= 0:
            raise ConfigError("max_screening_units must be above 0 to make screening units",
                              key=f"{key}.max_screening_units")

    # -- what the worker pool asks ------------------------------------------------------

    def needs_screening(self, granted: Mapping[str, int]) -> bool:
        """A worker with these qualifications must be screened first."""
        return self.use_screening_task and self.passed_qualification_name not in granted

    def worker_needs_screening(self, worker: Worker) -> bool:
        return worker.get_granted_qualification(self.passed_qualification_name) is None

    def should_generate_unit(self) -> bool:
        return self.screening_data_factory is not False

    def get_screening_unit_data(self) -> dict[str, Any] | None:
        """The next screening unit's data; None past the cap or when the factory ends."""
        if self.screening_units_launched >= self.screening_unit_cap:
            return None
        try:
            data = next(self.screening_data_factory)
        except StopIteration:
            return None
        self.screening_units_launched += 1
        return dict(data) if isinstance(data, Mapping) else data

    # -- the run script's side ------------------------------------------------------------

    @classmethod
    def create_validation_function(
        cls, args: Any, screen_unit: Callable[[Unit], bool | None]
    ) -> Callable[[Unit], None]:
        """An `on_unit_submitted` that checks screening units with `screen_unit`: True
        grants the passed qualification, False the block qualification, None decides
        nothing (the worker is screened again)."""
        passed = str(blueprint_arg(args, "passed_qualification_name"))
        failed = str(blueprint_arg(args, "block_qualification"))
        on_real_units = int(blueprint_arg(args, "max_screening_units", 0)) == 0

        def validate(unit: Unit) -> None:
            if unit.unit_index >= 0 and not on_real_units:
                return  # a real unit: nothing to check
            agent = unit.get_assigned_agent()
            if agent is None:
                return
            worker = agent.get_worker()
            if unit.unit_index >= 0 and worker.get_granted_qualification(passed) is not None:
                return  # screened on an earlier unit
            result = screen_unit(unit)
            if result is True:
                worker.grant_qualification(passed, 1)
            elif result is False:
                worker.grant_qualification(failed, 1)
            verdict = "passed" if result is True else "failed" if result is False else "undecided"
            logger.info("screening of worker %s on unit %s: %s", worker.worker_name,
                        unit.db_id, verdict)

        return validate

    @classmethod
    def get_mixin_qualifications(cls, args: Any, shared_state: Any) -> list[dict[str, Any]]:
        """Workers holding the block qualification (failed screening) are kept out."""
        failed = blueprint_arg(args, "block_qualification")
        return [make_qualification_dict(str(failed), QUAL_NOT_EXIST, None)] if failed else []


