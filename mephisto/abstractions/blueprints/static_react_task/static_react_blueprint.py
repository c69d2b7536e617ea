"""Mephisto's import path for the React task blueprint.

The real home is `mephisto.abstractions.blueprints.static_react_task` (its `__init__`).
"""

from mephisto.abstractions.blueprints.static_react_task import (
    BLUEPRINT_TYPE_STATIC_REACT,
    StaticReactBlueprintArgs,
    StaticReactTaskBlueprint,
)

StaticReactBlueprint = StaticReactTaskBlueprint

__all__ = [
    "BLUEPRINT_TYPE_STATIC_REACT",
    "StaticReactBlueprint",
    "StaticReactBlueprintArgs",
    "StaticReactTaskBlueprint",
]
