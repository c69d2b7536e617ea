"""Parts several blueprints share, each a `BlueprintMixin` with its own arguments and
shared state (Mephisto's `blueprints.mixins`): onboarding (`onboarding_required`),
screening units (`screen_task_required`) and gold units (`use_gold_unit`). The static,
React and live blueprints include all three."""

from typing import Any

from mephisto.errors import ConfigError


def blueprint_arg(args: Any, name: str, default: Any = None) -> Any:
    """`mephisto.blueprint.<name>` of a run config (`Args` or omegaconf), `default` when
    it is absent or None."""
    blueprint = args.blueprint
    value = blueprint.get(name, default) if hasattr(blueprint, "get") \
        else getattr(blueprint, name, default)
    return default if value is None else value


def require_one_unit_at_a_time(args: Any, needs: str, why: str) -> None:
    """`ConfigError` unless `mephisto.task.allowed_concurrent` is 1 (what `needs` it,
    and `why`)."""
    task = args.task
    concurrent = task.get("allowed_concurrent") if hasattr(task, "get") \
        else getattr(task, "allowed_concurrent", None)
    if concurrent != 1:
        raise ConfigError(f"{needs} need mephisto.task.allowed_concurrent=1, so {why}",
                          key="mephisto.task.allowed_concurrent")

