# examples/chat_task/run_task.py
"""A live chat: two workers are paired in each assignment and talk about a topic, then
each presses Done.

    python run_task.py                          # builds webapp/, serves on localhost:3000

The `chat` blueprint's default world (`RelayWorld`) sends every message to both workers,
labelled with its sender; each worker's page submits `{messages: [...]}` when they press
Done, and the assignment ends once both have. The page is `webapp/src/main.jsx`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from mephisto.abstractions.blueprints.chat import SharedChatTaskState
from mephisto.operations.operator import Operator
from mephisto.tools.scripts import build_custom_bundle, task_script

# one assignment (one chat between two workers) per topic
TOPICS = [
    {"topic": "Plan a picnic for next Saturday: where, what to bring, who brings what."},
    {"topic": "Recommend each other a book or a film, and say why."},
    {"topic": "Agree on the best way to learn to cook."},
]


@task_script(default_config_file="example")
def main(operator: Operator, cfg: DictConfig) -> None:
    shared_state = SharedChatTaskState(static_task_data=TOPICS)
    build_custom_bundle(cfg.task_dir)  # npm install (when needed) and npm run build
    operator.launch_task_run(cfg.mephisto, shared_state)
    operator.wait_for_runs_then_shutdown(skip_input=True, log_rate=30)


if __name__ == "__main__":
    main()
