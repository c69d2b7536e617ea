"""Seed 000's workflow with workers outside the researcher's machine: a pilot, then an
allowlist launch, both served by a router (`mephisto router`, its own process) that the
run scripts (their own processes, unchanged) dial with the `remote` architect and the
mock provider."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mephisto.db import MephistoDB
from mephisto.operations.worker_pool import UNQUALIFIED
from mephisto.testing.router import RouterProcess, router_process
from mephisto.testing.scripts import running_script
from mephisto.testing.worker import SimulatedWorker, complete_unit
from mephisto.tools.data_browser import DataBrowser

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_DIR = REPO / "examples" / "static_react_task"
ALLOWLIST_QUAL = "my-allowlist-qual"  # run_task_onboarding.py's default


@pytest.fixture
def router(tmp_path: Path) -> RouterProcess:
    with router_process(tmp_path / "router") as proc:
        yield proc


def _remote(router: RouterProcess) -> list[str]:
    return ["mephisto/architect=remote", f"mephisto.architect.router_url={router.url}"]


def test_pilot_then_allowlist_launch_through_a_router(
        react_example_bundle: Path, tmp_path: Path, router: RouterProcess) -> None:
    env = {"MEPHISTO_ROUTER_TOKEN": router.token()}
    # 1. the pilot (conf=pilot_1)
    with running_script(EXAMPLE_DIR / "run_task.py", "conf=pilot_1", *_remote(router),
                        cwd=tmp_path, env=env, timeout=120) as script:
        assert script.url == router.url

        async def pilot(url: str) -> None:
            # the script's two sentences: "careful" rates as wanted, "sloppy" says good
            for name, rating in (("careful", "bad"), ("sloppy", "good")):
                async with SimulatedWorker(url, name) as worker:
                    await complete_unit(worker, {"rating": rating})

        asyncio.run(pilot(script.url))
        assert script.wait() == 0, script.output
    # 2. review: the careful worker goes on the allowlist
    db = MephistoDB()
    try:
        (run,) = db.find_task_runs()
        assert run.get_task().task_name == "react-static-task-pilot-1"
        results = DataBrowser(db).load_results(task_run_id=run.db_id)
        by_worker: dict[str, int] = {}
        for r in results:
            by_worker[r["worker_name"]] = by_worker.get(r["worker_name"], 0) + 1
        assert by_worker == {"careful": 1, "sloppy": 1}
        careful = db.find_workers(worker_name="careful")[0]
        qual_id = db.make_qualification(ALLOWLIST_QUAL)
        db.grant_qualification(qual_id, careful.db_id)
    finally:
        db.shutdown()
    # 3. the launch, allowlist only, through the same router
    with running_script(EXAMPLE_DIR / "run_task_onboarding.py", "am_qualifiying_new_workers=''",
                        *_remote(router), cwd=tmp_path, env=env, timeout=120) as script:
        assert script.url == router.url

        async def launch(url: str) -> None:
            async with SimulatedWorker(url, "sloppy") as sloppy:
                await sloppy.request_agent()
                assert sloppy.agent_id is None and sloppy.failure_reason == UNQUALIFIED
            async with SimulatedWorker(url, "careful") as careful:
                await careful.request_agent()
                # passed the same onboarding qualification in the pilot: straight to work
                assert careful.agent_id is not None and not careful.is_onboarding
                while careful.agent_id is not None:
                    await careful.submit({"rating": "bad"})
                    careful.new_assignment()
                    await careful.request_agent()

        asyncio.run(launch(script.url))
        assert script.wait() == 0, script.output
    db = MephistoDB()
    try:
        runs = sorted(db.find_task_runs(), key=lambda r: int(r.db_id))
        assert len(runs) == 2
        launch_run = runs[1]
        assert launch_run.get_task().task_name == "react-static-task-onboarding-example"
        counts = db.get_unit_status_counts(launch_run.db_id)
        assert counts == {"completed": sum(counts.values())} and counts["completed"] > 0
        results = DataBrowser(db).load_results(task_run_id=launch_run.db_id)
        assert {r["worker_name"] for r in results} == {"careful"}
    finally:
        db.shutdown()
