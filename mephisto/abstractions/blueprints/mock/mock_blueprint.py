"""Mephisto's import path for the mock blueprint; the real home is
`mephisto.abstractions.blueprints.mock` (the package's `__init__`)."""

from mephisto.abstractions.blueprints.mock import MockBlueprint, MockBlueprintArgs

__all__ = ["MockBlueprint", "MockBlueprintArgs"]
