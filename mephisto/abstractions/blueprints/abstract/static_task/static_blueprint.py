"""Mephisto's import path for static-task classes.

The real home is `mephisto.abstractions.blueprints.static_task`. As in Mephisto,
`StaticBlueprint` is the base of the static blueprints (`static_task`,
`static_react_task`), not a blueprint type of its own.
"""

from mephisto.abstractions.blueprints.static_task import (
    SharedStaticTaskState,
    StaticAgentState,
    StaticBlueprint,
    StaticBlueprintArgs,
    StaticHTMLBlueprintArgs,
    StaticTaskBlueprint,
)

__all__ = [
    "SharedStaticTaskState",
    "StaticAgentState",
    "StaticBlueprint",
    "StaticBlueprintArgs",
    "StaticHTMLBlueprintArgs",
    "StaticTaskBlueprint",
]
