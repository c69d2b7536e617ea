"""`mock`: serves nothing on a socket. Tests reach the app in-process through
`architect.app` (e.g. `httpx.ASGITransport`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mephisto.abstractions.architect import Architect, ArchitectArgs


@dataclass
class MockArchitectArgs(ArchitectArgs):
    _architect_type: str = "mock"
    should_run_server: bool = False
    port: str = "3000"


class MockArchitect(Architect):
    ARCHITECT_TYPE = "mock"
    ArgsClass = MockArchitectArgs

    def __init__(self, args: Any) -> None:
        super().__init__(args)
        self.app: Any = None

    async def deploy(self, app: Any) -> str:
        self.app = app
        return "http://mock.invalid/"

    async def shutdown(self) -> None:
        self.app = None
