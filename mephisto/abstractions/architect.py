"""The architect contract: where the task server runs and how workers reach it.

An architect declares `ARCHITECT_TYPE` and an `ArgsClass` (dataclass, the
`mephisto.architect.*` config). It is given the ASGI app built by `mephisto.server`
(which already talks to the operator in-process) and makes it reachable. To implement
one, override (all async, called on the operator's event loop):

- `deploy(app) -> str`: start serving `app`; return the base URL workers open. An
  architect that serves elsewhere (`remote` and its subclasses) links a router to
  `app.backend` (the run's `TaskBackend`) and `app.settings` instead of serving `app`.
- `shutdown()`: stop serving; idempotent.

Built in: `local` (uvicorn in the operator's process), `mock` (nothing served; tests
call `architect.app`), `remote` (a `mephisto router` elsewhere, dialled by the
operator).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar


@dataclass
class ArchitectArgs:
    """Arguments every architect takes (`mephisto.architect.*`)."""

    _architect_type: str = "???"
    server_type: str = "starlette"


class Architect:
    ARCHITECT_TYPE: ClassVar[str | None] = None
    ArgsClass: ClassVar[type[Any]] = ArchitectArgs

    def __init__(self, args: Any) -> None:
        self.args = args

    @classmethod
    def assert_task_args(cls, args: Any, shared_state: Any) -> None:
        """Raise `ConfigError` for architect configuration that cannot work."""

    async def deploy(self, app: Any) -> str:
        raise NotImplementedError

    async def shutdown(self) -> None:
        raise NotImplementedError
