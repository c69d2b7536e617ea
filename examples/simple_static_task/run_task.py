"""A static HTML task: workers read a sentence, rate it and may leave a comment.

    python run_task.py                                  # serves on localhost:3000
    python run_task.py mephisto.architect.port=3001     # any override of the config
    python run_task.py conf=sandbox_batch_1             # on MTurk's sandbox (see that file)

Open http://localhost:3000/?worker_id=alice&assignment_id=a1 to work on a unit as the
mock provider's worker "alice". The config is hydra_configs/conf/example.yaml.
"""

from omegaconf import DictConfig

from mephisto.abstractions.blueprints.abstract.static_task.static_blueprint import (
    SharedStaticTaskState,
)
from mephisto.operations.operator import Operator
from mephisto.tools.scripts import task_script


@task_script(default_config_file="example")
def main(operator: Operator, cfg: DictConfig) -> None:
    shared_state = SharedStaticTaskState(
        static_task_data=[
            {"text": "The new library opened its doors to the whole town this morning."},
            {"text": "The train was two hours late and nobody told us why."},
            {"text": "The soup was warm."},
            {"text": "Our team finally shipped the feature everyone asked for."},
            {"text": "The printer jammed again during the important meeting."},
            {"text": "It rained for most of the afternoon."},
            {"text": "She found her lost cat sleeping on the neighbour's porch."},
            {"text": "The parcel arrived damaged and half empty."},
            {"text": "The museum is free to visit on the first Sunday of each month."},
            {"text": "He apologised, but the damage was already done."},
        ],
    )

    operator.launch_task_run(cfg.mephisto, shared_state)
    operator.wait_for_runs_then_shutdown(skip_input=True, log_rate=30)


if __name__ == "__main__":
    main()
