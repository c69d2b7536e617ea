"""The rating task with worker quality checks: screening units or gold units.

    python run_task_with_quality_checks.py conf=screening_example   # new workers are screened
    python run_task_with_quality_checks.py conf=gold_example        # golds mixed into the work

Screening: a new worker's first unit is a sentence whose feeling is plain ("I love this
wonderful day"); rating it positive (4 or 5) grants the `rating-screened` qualification
and real units follow; anything else grants `rating-screen-failed` and the worker is
turned away. Golds: now and then a worker gets a sentence whose rating is known; a wrong
answer disqualifies them (`max_incorrect_golds` sets how many they may get wrong).
Open http://localhost:3000/?worker_id=alice&assignment_id=a1 (then a2, a3, ...) to see
it as the mock provider's worker "alice". Golds are marked in exports (`unit_kind`).
"""

from typing import Any

from omegaconf import DictConfig

from mephisto.abstractions.blueprints.abstract.static_task.static_blueprint import (
    SharedStaticTaskState,
)
from mephisto.abstractions.blueprints.mixins.screen_task_required import ScreenTaskRequired
from mephisto.abstractions.blueprints.mixins.use_gold_unit import UseGoldUnit, get_gold_factory
from mephisto.data_model.unit import Unit
from mephisto.operations.operator import Operator
from mephisto.tools.scripts import task_script

SENTENCES = [
    "The new library opened its doors to the whole town this morning.",
    "The train was two hours late and nobody told us why.",
    "The soup was warm.",
    "Our team finally shipped the feature everyone asked for.",
    "The printer jammed again during the important meeting.",
    "It rained for most of the afternoon.",
]
# sentences whose rating is known: (text, ratings that count as right)
GOLDS = [
    {"text": "This is the best day of my whole life!", "accepted": ["4", "5"]},
    {"text": "Everything went wrong and I am miserable.", "accepted": ["1", "2"]},
    {"text": "The meeting is at three o'clock.", "accepted": ["3"]},
]


def screening_units() -> Any:
    while True:
        yield {"text": "I love this wonderful, sunny day!"}


def rated_positive(unit: Unit) -> bool:
    agent = unit.get_assigned_agent()
    return agent is not None and agent.state.get_data()["outputs"].get("rating") in ("4", "5")


def gold_is_right(unit: Unit) -> bool:
    agent = unit.get_assigned_agent()
    if agent is None:
        return False
    data = agent.state.get_data()
    return data["outputs"].get("rating") in data["inputs"]["accepted"]


@task_script(default_config_file="screening_example")
def main(operator: Operator, cfg: DictConfig) -> None:
    shared_state = SharedStaticTaskState(static_task_data=[{"text": s} for s in SENTENCES])
    blueprint = cfg.mephisto.blueprint
    if blueprint.get("use_screening_task"):
        shared_state.screening_data_factory = screening_units()
        shared_state.on_unit_submitted = ScreenTaskRequired.create_validation_function(
            cfg.mephisto, rated_positive)
        shared_state.qualifications += ScreenTaskRequired.get_mixin_qualifications(
            cfg.mephisto, shared_state)
    if blueprint.get("use_golds"):
        shared_state.get_gold_for_worker = get_gold_factory(GOLDS)
        shared_state.on_unit_submitted = UseGoldUnit.create_validation_function(
            cfg.mephisto, gold_is_right)
        shared_state.qualifications += UseGoldUnit.get_mixin_qualifications(
            cfg.mephisto, shared_state)

    operator.launch_task_run(cfg.mephisto, shared_state)
    operator.wait_for_runs_then_shutdown(skip_input=True, log_rate=30)


if __name__ == "__main__":
    main()
