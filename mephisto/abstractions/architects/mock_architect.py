"""Mephisto's import path for the mock architect; the real home is
`mephisto.abstractions.architects.mock`."""

from mephisto.abstractions.architects.mock import MockArchitect, MockArchitectArgs

__all__ = ["MockArchitect", "MockArchitectArgs"]
