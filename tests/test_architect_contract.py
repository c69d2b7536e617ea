"""The architect contract suite (`mephisto.testing.architect_contract`) run against the
`local` architect and the `remote` one with a real router process; `ec2` and `heroku`
run it in their own modules, against their stubs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mephisto.testing.architect_contract import ArchitectContract, ArchitectHarness
from mephisto.testing.router import RouterProcess, router_process


class LocalHarness(ArchitectHarness):
    def architect_config(self) -> dict[str, Any]:
        return {"_architect_type": "local", "port": "0", "hostname": "127.0.0.1"}

    def broken_configs(self) -> list[dict[str, Any]]:
        return [{"_architect_type": "local", "port": "http"},
                {"_architect_type": "local", "port": "70000"}]


class RemoteHarness(ArchitectHarness):
    remote = True

    def __init__(self, router: RouterProcess) -> None:
        self.router = router

    def architect_config(self) -> dict[str, Any]:
        return {"_architect_type": "remote", "router_url": self.router.url,
                "connect_timeout": 20}

    def broken_configs(self) -> list[dict[str, Any]]:
        return [{"_architect_type": "remote"},
                {"_architect_type": "remote", "router_url": "tasks.example.org"},
                {"_architect_type": "remote", "router_url": self.router.url,
                 "token_env": "NO_SUCH_TOKEN_VARIABLE"}]


class TestLocalArchitect(ArchitectContract):
    @pytest.fixture
    def harness(self) -> ArchitectHarness:
        return LocalHarness()


class TestRemoteArchitect(ArchitectContract):
    @pytest.fixture
    def harness(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                ) -> Iterator[ArchitectHarness]:
        with router_process(tmp_path / "router") as router:
            monkeypatch.setenv("MEPHISTO_ROUTER_TOKEN", router.token())
            yield RemoteHarness(router)
