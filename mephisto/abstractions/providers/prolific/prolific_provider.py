"""Mephisto's import path for the Prolific provider; the real home is
`mephisto.abstractions.providers.prolific.provider`."""

from mephisto.abstractions.providers.prolific.provider import (
    ProlificProvider,
    ProlificProviderArgs,
)

__all__ = ["ProlificProvider", "ProlificProviderArgs"]
