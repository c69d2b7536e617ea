"""A person's view of a run served by a router: real Chromium works a static task
through `mephisto router` (its own process) while the operator's link is cut at the
moment of submitting; the page retries the 503 after its Retry-After and the work is
stored once. The `browser` and `page` fixtures live in conftest.py."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState
from mephisto.db import MephistoDB
from mephisto.operations.operator import Operator
from mephisto.testing.fixtures import static_run_config
from mephisto.testing.router import router_process
from mephisto.testing.tcp_proxy import TcpProxy
from mephisto.tools.data_browser import DataBrowser

pytestmark = pytest.mark.browser


def test_a_submit_during_an_outage_is_retried_by_the_page(
        operator: Operator, mephisto_db: MephistoDB, task_html: Path, tmp_path: Path,
        page: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with router_process(tmp_path / "router") as router, \
            TcpProxy([("127.0.0.1", router.port)]) as link:
        monkeypatch.setenv("MEPHISTO_ROUTER_TOKEN", router.token())
        config = static_run_config(task_html)
        config["architect"] = {"_architect_type": "remote", "router_url": router.url,
                               "operator_urls": link.url}
        task_run_id = operator.launch_task_run(
            config, SharedStaticTaskState(static_task_data=[{"text": "through a router"}]))
        page.goto(f"{router.url}?worker_id=chrome-worker&assignment_id=hit-1")
        page.get_by_text("through a router").wait_for()
        page.fill("input[name=answer]", "still here")
        statuses: list[int] = []
        page.on("response", lambda r: statuses.append(r.status)
                if r.url.split("?")[0].endswith("/submit_task") else None)
        link.refuse(True)
        link.cut()  # the operator is out of reach when the worker submits
        router_down = time.monotonic()
        while router.status()["operator"]:
            assert time.monotonic() - router_down < 10
            time.sleep(0.02)
        threading.Timer(1.0, link.refuse, args=(False,)).start()  # back a second later
        page.click("button[type=submit]")
        page.get_by_text("Thank you, your work was submitted.").wait_for(timeout=30_000)
        assert statuses[0] == 503 and statuses[-1] == 200
        assert page.js_errors == []
    (result,) = DataBrowser(mephisto_db).load_results(task_run_id=task_run_id)
    assert result["worker_name"] == "chrome-worker"
    assert result["data"]["outputs"] == {"answer": "still here"}
    assert mephisto_db.get_unit_status_counts(task_run_id) == {"completed": 1}
