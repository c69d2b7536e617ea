"""The architect contract suite: what every architect must do, checked the same way.

Subclass `ArchitectContract` in a test module and give it a harness, the world the
architect runs in (a router process, a stub of a cloud's API) as a fixture:

    class TestRemoteArchitect(ArchitectContract):
        @pytest.fixture
        def harness(self, tmp_path) -> Iterator[ArchitectHarness]:
            with router_process(tmp_path / "router") as router:
                yield RemoteHarness(router)

The suite checks that a valid config is accepted and broken ones refused with
`ConfigError`; that `deploy` returns a URL where a real static run completes (simulated
workers over real sockets); that a router's status says the operator is connected
(architects with `remote = True`); that shutdown is idempotent and leaves nothing
served or provisioned; and, for architects that provision (`provisions = True`), that
what a crashed run left is deleted by `cleanup_leftovers`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from mephisto.errors import ConfigError

__all__ = ["ArchitectContract", "ArchitectHarness", "router_status"]

UNITS = 4


def router_status(url: str) -> dict[str, Any] | None:
    """A router's `/_mephisto/router` status, or None if nothing answers there."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/_mephisto/router", timeout=5) as answer:
            result: dict[str, Any] = json.loads(answer.read())
            return result
    except (OSError, ValueError):
        return None


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


class ArchitectHarness:
    """The world of an architect under test. Override what the architect needs."""

    #: workers reach the run through a router whose status names the operator
    remote: bool = False
    #: the architect creates resources and records them in a ledger
    provisions: bool = False

    def architect_config(self) -> dict[str, Any]:
        """A valid `mephisto.architect` section."""
        raise NotImplementedError

    def broken_configs(self) -> list[dict[str, Any]]:
        """`mephisto.architect` sections that `assert_task_args` must refuse."""
        return []

    def provisioned(self) -> list[str]:
        """What the architect created that still exists (empty once torn down)."""
        return []

    def still_served(self, url: str) -> bool:
        """Whether workers opening `url` would still reach the run."""
        if self.remote:
            status = router_status(url)
            return bool(status and status.get("operator"))
        return _answers(url)


def _dead_pid() -> int:
    """The id of a process that has exited (what a crashed operator leaves)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


class ArchitectContract:
    """Subclass and provide the `harness` fixture (see the module docstring)."""

    @pytest.fixture
    def harness(self) -> ArchitectHarness:
        raise NotImplementedError("give the contract suite a `harness` fixture")

    def _config(self, harness: ArchitectHarness, task_html: Path, **task: Any
                ) -> dict[str, Any]:
        from mephisto.testing.fixtures import static_run_config

        config = static_run_config(task_html, **task)
        config["architect"] = harness.architect_config()
        return config

    def _launch(self, operator: Any, harness: ArchitectHarness, task_html: Path) -> Any:
        from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState

        state = SharedStaticTaskState(
            static_task_data=[{"text": f"item-{i}"} for i in range(UNITS)])
        task_run_id = operator.launch_task_run(self._config(harness, task_html), state)
        return operator._runs[task_run_id]

    # -- configuration --------------------------------------------------------------------

    def test_a_valid_config_is_accepted(self, harness: ArchitectHarness,
                                        task_html: Path) -> None:
        from mephisto.operations.hydra_config import resolve_run_config

        resolved = resolve_run_config(self._config(harness, task_html))
        architect_type = getattr(resolved.architect, "ARCHITECT_TYPE", None)
        assert architect_type == harness.architect_config()["_architect_type"]

    def test_a_broken_config_is_refused(self, harness: ArchitectHarness,
                                        task_html: Path) -> None:
        from mephisto.operations.hydra_config import resolve_run_config

        broken = harness.broken_configs()
        if not broken:
            pytest.skip("this architect takes no setting that can be wrong")
        for section in broken:
            config = self._config(harness, task_html)
            config["architect"] = section
            with pytest.raises(ConfigError) as info:
                resolve_run_config(config)
            assert info.value.key and info.value.key.startswith("mephisto.architect"), section
        assert harness.provisioned() == []

    # -- serving ----------------------------------------------------------------------------

    def test_a_run_completes_through_it(self, operator: Any, mephisto_db: Any,
                                        harness: ArchitectHarness, task_html: Path) -> None:
        from mephisto.testing.worker import run_simulated_workers_sync

        live = self._launch(operator, harness, task_html)
        assert live.url.startswith(("http://", "https://")) and live.url.endswith("/")
        if harness.remote:
            status = router_status(live.url)
            assert status is not None and status["operator"] is True
        stats = run_simulated_workers_sync(
            live.url, 2, answer_fn=lambda w: {"answer": w.init_data["text"]})
        assert live.done_sync.wait(30)
        assert stats.units_completed == UNITS
        assert mephisto_db.get_unit_status_counts(live.task_run_id) == {"completed": UNITS}

    def test_shutdown_is_idempotent_and_leaves_nothing(
            self, operator: Any, harness: ArchitectHarness, task_html: Path) -> None:
        live = self._launch(operator, harness, task_html)
        url = live.url
        if harness.provisions:
            assert harness.provisioned() != []
        assert harness.still_served(url)
        operator.shutdown()
        asyncio.run(live.architect.shutdown())  # a second time: nothing left to do
        assert not harness.still_served(url)
        assert harness.provisioned() == []
        if harness.provisions:
            from mephisto.abstractions.architects.provisioned import ledgers

            assert ledgers() == []

    # -- crashes ----------------------------------------------------------------------------

    def test_cleanup_after_a_crash(self, operator: Any, harness: ArchitectHarness,
                                   task_html: Path) -> None:
        if not harness.provisions:
            pytest.skip("this architect creates nothing that outlives its process")
        from mephisto.abstractions.architects.provisioned import ledgers

        live = self._launch(operator, harness, task_html)
        architect = live.architect
        created = harness.provisioned()
        assert created != []
        # The operator dies: its links drop, nothing is torn down, its ledger stays.
        ledger = architect.ledger
        architect.ledger = None
        ledger.data["pid"] = _dead_pid()
        ledger._write()
        operator.shutdown()
        assert harness.provisioned() == created
        (left,) = ledgers()
        assert left.path == ledger.path and left.resources
        # a later process cleans up
        assert type(architect).cleanup_leftovers() == [f"{ledger.data['type']}:{ledger.name}"]
        assert harness.provisioned() == []
        assert ledgers() == []
        assert type(architect).cleanup_leftovers() == []

    def test_a_live_run_is_not_cleaned_up(self, operator: Any, harness: ArchitectHarness,
                                          task_html: Path) -> None:
        if not harness.provisions:
            pytest.skip("this architect creates nothing that outlives its process")
        live = self._launch(operator, harness, task_html)
        assert type(live.architect).cleanup_leftovers() == []
        assert harness.still_served(live.url)
        assert harness.provisioned() != []
