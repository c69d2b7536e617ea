"""Mephisto's import path for the local architect; the real home is
`mephisto.abstractions.architects.local`."""

from mephisto.abstractions.architects.local import LocalArchitect, LocalArchitectArgs

__all__ = ["LocalArchitect", "LocalArchitectArgs"]
