"""Mephisto's import path for static-task classes.

The real home is `mephisto.abstractions.blueprints.static_task`.
"""

from mephisto.abstractions.blueprints.static_task import (
    SharedStaticTaskState,
    StaticAgentState,
    StaticBlueprintArgs,
    StaticHTMLBlueprintArgs,
    StaticTaskBlueprint,
)

StaticBlueprint = StaticTaskBlueprint

__all__ = [
    "SharedStaticTaskState",
    "StaticAgentState",
    "StaticBlueprint",
    "StaticBlueprintArgs",
    "StaticHTMLBlueprintArgs",
    "StaticTaskBlueprint",
]
