"""The `prolific` crowd provider (Prolific studies, one per task run).

The plugin lives in `provider.py`; its parts: `client.py` (Prolific's API over httpx),
`credentials.py` (API tokens), `studies.py` (a run's study and its places),
`bonuses.py` (bonuses paid exactly once), `groups.py` (participant groups for blocks
and qualifications), `wrap_crowd_source.js` (the page shim). `prolific_provider` and
`provider_type` are Mephisto's import paths (thin re-exports)."""

from mephisto.abstractions.providers.prolific.client import PROVIDER_TYPE
from mephisto.abstractions.providers.prolific.provider import (
    ProlificProvider,
    ProlificProviderArgs,
)

__all__ = ["PROVIDER_TYPE", "ProlificProvider", "ProlificProviderArgs"]
