"""Mephisto's import path for the mock provider; the real home is
`mephisto.abstractions.providers.mock` (the package's `__init__`)."""

from mephisto.abstractions.providers.mock import MockProvider, MockProviderArgs

__all__ = ["MockProvider", "MockProviderArgs"]
