"""Mephisto's path for the errors a live agent raises; the real home is
`mephisto.errors` (the package's one exception tree)."""

from mephisto.errors import (
    AgentDisconnectedError,
    AgentReturnedError,
    AgentShutdownError,
    AgentTimeoutError,
)

__all__ = ["AgentDisconnectedError", "AgentReturnedError", "AgentShutdownError",
           "AgentTimeoutError"]
