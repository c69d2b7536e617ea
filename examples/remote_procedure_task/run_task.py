# examples/remote_procedure_task/run_task.py
"""A live task: the worker writes a sentence, and the page asks Python about it while
they write (word count and a tone read from two small word lists). The worker may ask
as often as they like, then submits the final sentence.

    python run_task.py                          # builds webapp/, serves on localhost:3000

The page calls `analyze_sentence` with useMephistoRemoteProcedureTask's
`remoteProcedure("analyze_sentence")({text})`; the run answers from the function
below, in a thread beside the worker's unit. A function that raises becomes an error
the page shows (try Analyze with an empty box).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from mephisto.abstractions.blueprints.remote_procedure.remote_procedure_blueprint import (
    SharedRemoteProcedureTaskState,
)
from mephisto.operations.operator import Operator
from mephisto.tools.scripts import build_custom_bundle, task_script

MAX_WORDS = 60
POSITIVE = {"good", "great", "happy", "love", "lovely", "nice", "sunny", "wonderful",
            "best", "calm", "kind", "fun", "enjoy", "enjoyed", "beautiful", "glad"}
NEGATIVE = {"bad", "sad", "hate", "awful", "terrible", "rainy", "worst", "angry",
            "boring", "tired", "lost", "broken", "late", "cold", "miserable", "wrong"}
WORD = re.compile(r"[a-z']+")


def analyze_sentence(request_id: str, args: Any, agent: Any) -> dict[str, Any]:
    """Word count and tone of `args["text"]`. Raises ValueError for an empty or too
    long text: the page shows the message."""
    text = str((args or {}).get("text", "")).strip()
    words = WORD.findall(text.lower())
    if not words:
        raise ValueError("type a sentence first")
    if len(words) > MAX_WORDS:
        raise ValueError(f"keep it under {MAX_WORDS} words (you have {len(words)})")
    positive = sorted({w for w in words if w in POSITIVE})
    negative = sorted({w for w in words if w in NEGATIVE})
    score = sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words)
    tone = "positive" if score > 0 else "negative" if score < 0 else "neutral"
    return {"words": len(words), "tone": tone, "score": score,
            "positive": positive, "negative": negative}


# name -> fn(request_id, args, agent): the functions the page may call
FUNCTIONS: dict[str, Callable[[str, Any, Any], Any]] = {"analyze_sentence": analyze_sentence}

PROMPTS = [
    {"prompt": "Describe your last weekend in one sentence."},
    {"prompt": "Describe the weather today in one sentence."},
]


@task_script(default_config_file="example")
def main(operator: Operator, cfg: DictConfig) -> None:
    shared_state = SharedRemoteProcedureTaskState(
        static_task_data=PROMPTS,
        function_registry=FUNCTIONS,
    )
    build_custom_bundle(cfg.task_dir)  # npm install (when needed) and npm run build
    operator.launch_task_run(cfg.mephisto, shared_state)
    operator.wait_for_runs_then_shutdown(skip_input=True, log_rate=30)


if __name__ == "__main__":
    main()
