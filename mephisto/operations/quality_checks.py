"""Screening and gold units: which unit a worker gets when the blueprint checks its
workers (`blueprints/mixins/`).

The worker pool asks `evaluation_unit(...)` before giving a worker a unit of the run's
data. A worker the blueprint wants to check gets a unit made for them (a screening unit
for a new worker, a gold unit now and then), is refused with a message (failed checks,
no screening or gold units left), or goes on to real work (None). The answers to these
units are checked by the run script's `on_unit_submitted` (the mixins'
`create_validation_function`), which grants qualifications; the pool waits for those
checks to finish before deciding a worker's next unit (`WorkerInfo.checks`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from mephisto.abstractions.blueprints.mixins.screen_task_required import ScreenTaskRequired
from mephisto.abstractions.blueprints.mixins.use_gold_unit import UseGoldUnit
from mephisto.data_model.unit import GOLD_UNIT_INDEX, SCREENING_UNIT_INDEX
from mephisto.errors import NotEligible

if TYPE_CHECKING:
    from mephisto.operations.live_run import RunContext, UnitInfo, UnitSupply, WorkerInfo

logger = logging.getLogger(__name__)

NO_SCREENING_LEFT = ("This task is not taking new workers right now (its screening units "
                     "are used up). Thank you!")
NO_GOLDS_LEFT = ("This task is not taking new workers right now (its qualifying units are "
                 "used up). Thank you!")
FAILED_CHECKS = "You did not pass the quality checks of this task."


def uses_evaluation_units(blueprint: Any) -> bool:
    """The blueprint screens new workers or mixes in gold units."""
    return bool(getattr(blueprint, "use_screening_task", False)
                or getattr(blueprint, "use_golds", False))


async def evaluation_unit(ctx: RunContext, units: UnitSupply,
                          worker: WorkerInfo) -> UnitInfo | None:
    """The screening or gold unit `worker` must do now (made for them), or None: a unit
    of the run's data. Raises `NotEligible` for a worker the checks turn away."""
    blueprint = ctx.blueprint
    if isinstance(blueprint, ScreenTaskRequired) and blueprint.needs_screening(worker.granted):
        if not blueprint.should_generate_unit():
            return None  # screened on their first real unit
        data = blueprint.get_screening_unit_data()
        if data is None:
            raise NotEligible(NO_SCREENING_LEFT, worker.worker_id)
        return await units.launch_evaluation_unit(data, SCREENING_UNIT_INDEX)
    if isinstance(blueprint, UseGoldUnit) and blueprint.use_golds:
        standing = blueprint.gold_standing(worker.granted)
        if standing == "disqualified":
            raise NotEligible(FAILED_CHECKS, worker.worker_id)
        if standing == "no golds left":
            raise NotEligible(NO_GOLDS_LEFT, worker.worker_id)
        if standing == "gold":
            from mephisto.data_model.worker import Worker

            entity = await ctx.writer.read(lambda db: Worker(db, worker.worker_id))
            data = await ctx.background.in_thread(blueprint.get_gold_unit_data_for_worker, entity)
            if data is not None:
                return await units.launch_evaluation_unit(data, GOLD_UNIT_INDEX)
            _, right, _ = blueprint.gold_stats(worker.granted)
            if right < blueprint.min_golds:
                raise NotEligible(NO_GOLDS_LEFT, worker.worker_id)
    return None


def restore_counts(blueprint: Any, unit_indices: list[int]) -> None:
    """A resumed run's screening and gold units count toward their caps again."""
    if isinstance(blueprint, ScreenTaskRequired) and blueprint.use_screening_task:
        blueprint.screening_units_launched = unit_indices.count(SCREENING_UNIT_INDEX)
    if isinstance(blueprint, UseGoldUnit) and blueprint.use_golds:
        blueprint.gold_units_launched = unit_indices.count(GOLD_UNIT_INDEX)
