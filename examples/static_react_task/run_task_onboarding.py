from mephisto.data_model.qualification import QUAL_NOT_EXIST, QUAL_EXISTS
from mephisto.utils.qualifications import make_qualification_dict
from mephisto.operations.operator import Operator
from mephisto.tools.scripts import task_script
from mephisto.operations.hydra_config import build_default_task_config
from mephisto.abstractions.blueprints.abstract.static_task.static_blueprint import (
    SharedStaticTaskState,
)

from omegaconf import DictConfig
from dataclasses import dataclass


@dataclass
class MyTaskConfig(build_default_task_config("onboarding_example")):  # type: ignore
    am_qualifiying_new_workers: str = False
    allowlist_qualification: str = 'my-allowlist-qual'


@task_script(config=MyTaskConfig)
def main(operator: Operator, cfg: DictConfig) -> None:
    correct_config_answer = cfg.correct_answer

    def onboarding_is_valid(onboarding_data):
        inputs = onboarding_data["inputs"]
        outputs = onboarding_data["outputs"]
        return outputs.get("answer") == correct_config_answer


    if cfg.am_qualifiying_new_workers:
        use_qualifications = [
            make_qualification_dict(
                cfg.allowlist_qualification,
                QUAL_NOT_EXIST,
            ),
        ]
    else:
        use_qualifications = [
            make_qualification_dict(
                cfg.allowlist_qualification,
                QUAL_EXISTS,
            ),
        ]

    shared_state = SharedStaticTaskState(
        onboarding_data={"correct_answer": correct_config_answer},
        validate_onboarding=onboarding_is_valid,
        qualifications=use_qualifications
    )

    if cfg.am_qualifiying_new_workers:
        shared_state.mturk_specific_qualifications = [
            # MTurk-specific quality control qualifications
        ]

    operator.launch_task_run(cfg.mephisto, shared_state)
    operator.wait_for_runs_then_shutdown(skip_input=True, log_rate=30)


if __name__ == "__main__":
    main()
