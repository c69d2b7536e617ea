"""Mephisto's import path for the Prolific provider's type name; the real home is
`mephisto.abstractions.providers.prolific.client`."""

from mephisto.abstractions.providers.prolific.client import PROVIDER_TYPE

__all__ = ["PROVIDER_TYPE"]
