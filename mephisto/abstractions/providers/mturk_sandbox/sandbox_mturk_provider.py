"""Mephisto's import path for the MTurk sandbox provider; the real home is
`mephisto.abstractions.providers.mturk.mturk_provider`."""

from mephisto.abstractions.providers.mturk.mturk_provider import (
    SandboxMTurkProvider,
    SandboxMTurkProviderArgs,
)

__all__ = ["SandboxMTurkProvider", "SandboxMTurkProviderArgs"]
