"""Mephisto's import path for the mock provider's type name; the real home is
`mephisto.abstractions.providers.mock`."""

from mephisto.abstractions.providers.mock import PROVIDER_TYPE

__all__ = ["PROVIDER_TYPE"]
