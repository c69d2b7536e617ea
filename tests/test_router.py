"""The task router (`mephisto router`) in its own process, the operator dialling in
with the `remote` architect: runs complete through it, nothing acknowledged is lost
when the router or the link dies, and tokens are checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState
from mephisto.db import MephistoDB
from mephisto.operations.operator import Operator
from mephisto.testing.fixtures import static_run_config
from mephisto.testing.router import RouterProcess, router_process
from mephisto.tools.data_browser import DataBrowser


def _data(n: int) -> list[dict[str, str]]:
    return [{"text": f"item-{i}"} for i in range(n)]


def remote_config(task_html: Path, router: RouterProcess, **task: Any) -> dict[str, Any]:
    config = static_run_config(task_html, **task)
    config["architect"] = {"_architect_type": "remote", "router_url": router.url,
                           "connect_timeout": 20}
    return config


@pytest.fixture
def router(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    with router_process(tmp_path / "router") as proc:
        monkeypatch.setenv("MEPHISTO_ROUTER_TOKEN", proc.token())
        yield proc


def test_a_run_completes_through_a_router(operator: Operator, mephisto_db: MephistoDB,
                                          task_html: Path, router: RouterProcess) -> None:
    from mephisto.testing.worker import run_simulated_workers_sync

    task_run_id = operator.launch_task_run(
        remote_config(task_html, router), SharedStaticTaskState(static_task_data=_data(20)))
    live = operator._runs[task_run_id]
    assert live.url == router.url
    assert router.status()["operator"] is True
    stats = run_simulated_workers_sync(router.url, 5, browser_like=True,
                                       answer_fn=lambda w: {"answer": w.init_data["text"]})
    assert live.done_sync.wait(30)
    assert stats.units_completed == 20
    assert mephisto_db.get_unit_status_counts(task_run_id) == {"completed": 20}
    results = DataBrowser(mephisto_db).load_results(task_run_id=task_run_id)
    assert sorted(r["data"]["outputs"]["answer"] for r in results) == sorted(
        d["text"] for d in _data(20))
