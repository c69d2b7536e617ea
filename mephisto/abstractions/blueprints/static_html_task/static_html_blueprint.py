"""Mephisto's import path for the static HTML blueprint; the real home is
`mephisto.abstractions.blueprints.static_task`.

Mephisto's `StaticHTMLBlueprint` registers the type name `static_task`, which is our
`StaticTaskBlueprint`: the same class under Mephisto's name.
"""

from mephisto.abstractions.blueprints.static_task import (
    BLUEPRINT_TYPE_STATIC,
    StaticHTMLBlueprintArgs,
    StaticTaskBlueprint,
)

BLUEPRINT_TYPE_STATIC_HTML = BLUEPRINT_TYPE_STATIC
StaticHTMLBlueprint = StaticTaskBlueprint

__all__ = ["BLUEPRINT_TYPE_STATIC_HTML", "StaticHTMLBlueprint", "StaticHTMLBlueprintArgs"]
