"""Gold units: units whose answer is known, mixed into a worker's work to check it
(Mephisto's `UseGoldUnit`).

Before each unit a worker gets, the worker pool asks `should_produce_gold_for_worker`:
a new worker gets golds until `min_golds` are right, then fewer and fewer as they prove
reliable (`worker_needs_gold`: about 1 in 10 units early on, ~5% by 100 units, ~1% by
1,000). The gold's data comes from `shared_state.get_gold_for_worker(worker)`
(`get_gold_factory(golds)` picks one the worker has not seen). The function given to
`create_validation_function` is the run's `on_unit_submitted`: it counts each worker's
units, right golds and wrong golds in qualifications named from
`gold_qualification_base`; a worker with more than `max_incorrect_golds` wrong golds is
disqualified (`<base>-disqualified`, a requirement `get_mixin_qualifications` adds) and
gets no more work. At most `max_gold_units` golds are made in a run (they are paid like
any unit); exports mark them (`unit_kind`) so they stay out of the dataset.

    shared_state.get_gold_for_worker = get_gold_factory(gold_data)
    shared_state.on_unit_submitted = UseGoldUnit.create_validation_function(
        cfg.mephisto, validate_gold_unit)
    shared_state.qualifications += UseGoldUnit.get_mixin_qualifications(
        cfg.mephisto, shared_state)

with `mephisto.blueprint.use_golds=true`, `gold_qualification_base`, `max_gold_units`
and `mephisto.task.allowed_concurrent=1` (golds are done in order).
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from mephisto.abstractions.blueprint import BlueprintMixin
from mephisto.abstractions.blueprints.mixins import blueprint_arg, require_one_unit_at_a_time
from mephisto.data_model.qualification import QUAL_NOT_EXIST
from mephisto.data_model.unit import GOLD_UNIT_INDEX
from mephisto.errors import ConfigError
from mephisto.utils.qualifications import find_or_create_qualification, make_qualification_dict

if TYPE_CHECKING:
    from mephisto.data_model.unit import Unit
    from mephisto.data_model.worker import Worker

logger = logging.getLogger(__name__)

__all__ = [
    "GoldUnitSharedState",
    "UseGoldUnit",
    "UseGoldUnitArgs",
    "get_gold_factory",
    "worker_needs_gold",
    "worker_qualifies",
]

GoldFactory = Callable[["Worker"], dict[str, Any] | None]


@dataclass
class UseGoldUnitArgs:
    gold_qualification_base: str | None = field(
        default=None,
        metadata={"help": "Base name of the qualifications that count each worker's golds."},
    )
    max_gold_units: int = field(
        default=0,
        metadata={"help": "Most gold units this run makes (you pay for them like any unit)."},
    )
    use_golds: bool = field(default=False, metadata={"help": "Mix gold units into the work."})
    min_golds: int = field(
        default=1, metadata={"help": "Golds a new worker must get right before real units."},
    )
    max_incorrect_golds: int = field(
        default=0, metadata={"help": "Wrong golds a worker may give before being disqualified."},
    )


def get_gold_factory(golds: list[dict[str, Any]]) -> GoldFactory:
    """A `get_gold_for_worker` that gives each worker the golds in a random order, each
    once (then again, in a new order, when they have seen them all)."""
    if not golds:
        raise ConfigError("get_gold_factory needs at least one gold", key="golds")
    left: dict[str, list[int]] = {}

    def get_gold_for_worker(worker: Worker) -> dict[str, Any]:
        order = left.get(worker.db_id)
        if not order:
            order = left[worker.db_id] = random.sample(range(len(golds)), len(golds))
        return golds[order.pop()]

    return get_gold_for_worker


def worker_needs_gold(units_completed: int, num_correct: int, num_incorrect: int,
                      min_golds: int) -> bool:
    """Whether the worker's next unit should be a gold: always until `min_golds` are
    right; then while the right golds beyond the minimum (less one per wrong one) are
    fewer than a target growing with the log of the units done."""
    if num_correct < min_golds:
        return True
    spare = num_correct - min_golds - num_incorrect
    target = math.ceil(math.log10(units_completed + 1) ** 2.2) - 1
    return bool(spare < target)


def worker_qualifies(units_completed: int, num_correct: int, num_incorrect: int,
                     max_incorrect_golds: int) -> bool:
    """Strikes: a worker may get at most `max_incorrect_golds` golds wrong."""
    return num_incorrect <= max_incorrect_golds


@dataclass
class GoldUnitSharedState:
    get_gold_for_worker: GoldFactory | None = field(
        default=None,
        metadata={"help": "Gives a worker a gold unit's data (get_gold_factory(golds))."},
    )
    worker_needs_gold: Callable[[int, int, int, int], bool] = field(
        default=worker_needs_gold,
        metadata={"help": "(units done, right golds, wrong golds, min_golds) -> a gold next?"},
    )
    worker_qualifies: Callable[[int, int, int, int], bool] = field(
        default=worker_qualifies,
        metadata={"help": "(units done, right golds, wrong golds, max wrong) -> may work?"},
    )



def gold_qualification_names(base: str) -> dict[str, str]:
    """The qualifications counting a worker's golds, from `gold_qualification_base`."""
    return {"correct": f"{base}-correct-golds", "wrong": f"{base}-wrong-golds",
            "disqualified": f"{base}-disqualified", "completed": f"{base}-completed-count"}


class UseGoldUnit(BlueprintMixin):
    """Mixes gold units into each worker's work and stops workers who fail them."""

    ArgsMixin: ClassVar[type[Any]] = UseGoldUnitArgs
    SharedStateMixin: ClassVar[type[Any]] = GoldUnitSharedState

    use_golds: bool = False
    gold_units_launched: int = 0
    gold_unit_cap: int = 0
    min_golds: int = 1
    max_incorrect_golds: int = 0

    def init_mixin_config(self, task_run: Any, args: Any, shared_state: Any) -> None:
        self.init_gold_config(task_run, args, shared_state)

    def init_gold_config(self, task_run: Any, args: Any, shared_state: Any) -> None:
        self.use_golds = bool(blueprint_arg(args, "use_golds", False))
        if not self.use_golds:
            return
        self.base_qual_name = str(blueprint_arg(args, "gold_qualification_base"))
        names = gold_qualification_names(self.base_qual_name)
        self.golds_correct_qual_name = names["correct"]
        self.golds_failed_qual_name = names["wrong"]
        self.disqualified_qual_name = names["disqualified"]
        self.task_count_qual_name = names["completed"]
        self.get_gold_for_worker = shared_state.get_gold_for_worker
        self.worker_needs_gold = shared_state.worker_needs_gold
        self.worker_qualifies = shared_state.worker_qualifies
        self.min_golds = int(blueprint_arg(args, "min_golds", 1))
        self.max_incorrect_golds = int(blueprint_arg(args, "max_incorrect_golds", 0))
        self.gold_units_launched = 0
        self.gold_unit_cap = int(blueprint_arg(args, "max_gold_units", 0))
        db = getattr(task_run, "db", None)
        if db is not None:  # the validator grants them: they must exist
            for name in names.values():
                find_or_create_qualification(db, name)

    @classmethod
    def assert_mixin_args(cls, args: Any, shared_state: Any) -> None:
        if not blueprint_arg(args, "use_golds", False):
            return
        key = "mephisto.blueprint"
        if not blueprint_arg(args, "gold_qualification_base"):
            raise ConfigError("gold units need gold_qualification_base: the base name of the "
                              "qualifications counting each worker's golds",
                              key=f"{key}.gold_qualification_base")
        for name, least in (("max_gold_units", 1), ("min_golds", 0), ("max_incorrect_golds", 0)):
            value = blueprint_arg(args, name, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigError(f"{name} must be a whole number >= {least}, not {value!r}",
                                  key=f"{key}.{name}")
        require_one_unit_at_a_time(args, "gold units", "a worker's golds are checked in order")
        if not callable(getattr(shared_state, "get_gold_for_worker", None)):
            raise ConfigError("gold units need shared_state.get_gold_for_worker "
                              "(get_gold_factory(golds))", key="get_gold_for_worker")

    # -- what the worker pool asks ------------------------------------------------------

    def gold_stats(self, granted: Mapping[str, int]) -> tuple[int, int, int]:
        """(units done, right golds, wrong golds) of a worker holding `granted`."""
        return (int(granted.get(self.task_count_qual_name, 0) or 0),
                int(granted.get(self.golds_correct_qual_name, 0) or 0),
                int(granted.get(self.golds_failed_qual_name, 0) or 0))

    def gold_standing(self, granted: Mapping[str, int]) -> str:
        """"disqualified", "gold" (the next unit is a gold), "no golds left" (one is
        needed before real work but the run's cap is reached) or "work"."""
        done, right, wrong = self.gold_stats(granted)
        if self.disqualified_qual_name in granted or not self.worker_qualifies(
                done, right, wrong, self.max_incorrect_golds):
            return "disqualified"
        if not self.worker_needs_gold(done, right, wrong, self.min_golds):
            return "work"
        if self.gold_units_launched < self.gold_unit_cap:
            return "gold"
        return "no golds left" if right < self.min_golds else "work"

    def get_completion_stats_for_worker(self, worker: Worker) -> tuple[int, int, int]:
        return self.gold_stats(worker.get_granted_qualifications())

    def should_produce_gold_for_worker(self, worker: Worker) -> bool:
        return self.gold_standing(worker.get_granted_qualifications()) == "gold"

    def get_gold_unit_data_for_worker(self, worker: Worker) -> dict[str, Any] | None:
        """A gold's data for this worker (counted toward `max_gold_units`); None past the
        cap or when the factory has none."""
        if self.gold_units_launched >= self.gold_unit_cap or self.get_gold_for_worker is None:
            return None
        try:
            data = self.get_gold_for_worker(worker)
        except Exception:
            logger.exception("get_gold_for_worker failed for worker %s", worker.worker_name)
            return None
        if data is None:
            return None
        self.gold_units_launched += 1
        return dict(data)

    # -- the run script's side ------------------------------------------------------------

    @classmethod
    def create_validation_function(
        cls, args: Any, screen_unit: Callable[[Unit], bool | None]
    ) -> Callable[[Unit], None]:
        """An `on_unit_submitted` that counts each worker's units and checks their golds
        with `screen_unit` (True: right, False: wrong, None: not counted); a worker past
        `max_incorrect_golds` is disqualified."""
        names = gold_qualification_names(str(blueprint_arg(args, "gold_qualification_base")))
        max_wrong = int(blueprint_arg(args, "max_incorrect_golds", 0))

        def add_one(worker: Worker, name: str) -> int:
            # one statement: runs of the task in other processes count the same worker
            qualification_id = find_or_create_qualification(worker.db, name)
            return int(worker.db.add_to_qualification(qualification_id, worker.db_id))

        def validate(unit: Unit) -> None:
            agent = unit.get_assigned_agent()
            if agent is None:
                return
            worker = agent.get_worker()
            if unit.unit_index != GOLD_UNIT_INDEX:
                add_one(worker, names["completed"])
                return
            result = screen_unit(unit)
            if result is True:
                add_one(worker, names["correct"])
            elif result is False:
                wrong = add_one(worker, names["wrong"])
                if wrong > max_wrong:
                    worker.grant_qualification(names["disqualified"], 1)
                    logger.info("worker %s disqualified: %d wrong golds", worker.worker_name,
                                wrong)

        return validate

    @classmethod
    def get_mixin_qualifications(cls, args: Any, shared_state: Any) -> list[dict[str, Any]]:
        """Disqualified workers are kept out."""
        base = blueprint_arg(args, "gold_qualification_base")
        if not base:
            return []
        return [make_qualification_dict(gold_qualification_names(str(base))["disqualified"],
                                        QUAL_NOT_EXIST, None)]
