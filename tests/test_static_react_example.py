"""examples/static_react_task end to end: its configs, and its run scripts as written
(subprocesses, real sockets, a real SQLite file) with its webapp built by the real npm.
Its page in real Chromium, and the public mephisto-task client, are in
test_static_react_browser.py.

The example's npm install is cached where its users have it (webapp/node_modules) and
built once per session (`react_example_bundle` in conftest.py).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from mephisto.db import MephistoDB
from mephisto.operations.hydra_config import (
    build_default_task_config,
    check_run_config,
    compose_run_config,
)
from mephisto.operations.worker_pool import FAILED_ONBOARDING, UNQUALIFIED
from mephisto.testing.scripts import running_script
from mephisto.testing.worker import SimulatedWorker, complete_unit
from mephisto.tools.data_browser import DataBrowser

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_DIR = REPO / "examples" / "static_react_task"
EXAMPLE_BUNDLE = EXAMPLE_DIR / "webapp" / "build" / "bundle.js"
EXAMPLE_CONFIGS = EXAMPLE_DIR / "hydra_configs"
SENTENCES = json.loads((EXAMPLE_DIR / "data" / "sentences.json").read_text())
ONBOARDING_QUAL = "react-static-task-onboarding"  # onboarding_example.yaml
ALLOWLIST_QUAL = "my-allowlist-qual"  # run_task_onboarding.py's default


# -- the example's configs ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("conf", "task_name"),
    [
        ("example", "react-static-task-example"),
        ("onboarding_example", "react-static-task-onboarding-example"),
        ("local_testing", "react-static-task-local-testing"),
        ("pilot_1", "react-static-task-pilot-1"),
    ],
)
def test_example_configs_compose_and_check(conf: str, task_name: str) -> None:
    cfg = compose_run_config(
        build_default_task_config(conf), EXAMPLE_CONFIGS, [], task_dir=EXAMPLE_DIR
    )
    check_run_config(cfg)
    assert cfg.mephisto.blueprint._blueprint_type == "static_react_task"
    assert cfg.mephisto.blueprint.task_source == str(EXAMPLE_BUNDLE)
    assert cfg.mephisto.task.task_name == task_name
    if conf == "onboarding_example":
        assert cfg.correct_answer == "bad"
        assert cfg.mephisto.blueprint.onboarding_qualification == ONBOARDING_QUAL
        assert Path(cfg.mephisto.blueprint.data_json).is_file()


# -- the run scripts, as written ------------------------------------------------------------


def test_run_task_builds_the_webapp_and_completes(react_example_bundle: Path, tmp_path: Path) -> None:
    """run_task.py with conf=local_testing (onboarding on, any answer passes) and
    mephisto.task.force_rebuild=true, which its build_and_return_custom_bundle(task_dir)
    must honour: the script rebuilds the bundle, then two workers finish both units."""
    before = react_example_bundle.stat().st_mtime_ns
    with running_script(
        EXAMPLE_DIR / "run_task.py", "conf=local_testing", "mephisto.task.force_rebuild=true",
        cwd=tmp_path, timeout=180,
    ) as script:
        assert script.url is not None
        assert "npm run build in" in script.output  # built by the script, not skipped
        assert react_example_bundle.stat().st_mtime_ns != before

        async def work(url: str) -> None:
            async with SimulatedWorker(url, "ann") as ann, SimulatedWorker(url, "bob") as bob:
                await complete_unit(ann, {"rating": "good"})
                assert "<div id=\"app\"></div>" in await ann.open_page()
                await complete_unit(bob, {"rating": "bad"})

        asyncio.run(work(script.url))
        assert script.wait() == 0, script.output
    db = MephistoDB()
    try:
        (run,) = db.find_task_runs()
        assert run.get_task().task_name == "react-static-task-local-testing"
        assert db.get_unit_status_counts(run.db_id) == {"completed": 2}
        results = DataBrowser(db).load_results(task_run_id=run.db_id)
        assert sorted((r["worker_name"], r["data"]["inputs"]["text"], r["data"]["outputs"]["rating"])
                      for r in results) == [("ann", "This text is good text!", "good"),
                                            ("bob", "This text is bad text!", "bad")]
        assert len(db.find_onboarding_agents(task_run_id=run.db_id)) == 2
    finally:
        db.shutdown()


def _grant(name: str, qualification: str) -> None:
    """Before the run: the researcher grants `qualification` to worker `name`."""
    db = MephistoDB()
    try:
        worker = db.find_or_new_worker(name, "mock")
        found = db.find_qualifications(qualification_name=qualification)
        qual_id = found[0].db_id if found else db.make_qualification(qualification)
        db.grant_qualification(qual_id, worker.db_id)
    finally:
        db.shutdown()


async def _refused(url: str, name: str) -> str | None:
    async with SimulatedWorker(url, name) as worker:
        await worker.request_agent()
        assert worker.agent_id is None, f"{name} got an agent"
        return worker.failure_reason


async def _onboard_and_work(url: str, name: str, answer: str, units: int) -> SimulatedWorker:
    worker = SimulatedWorker(url, name)
    await worker.request_agent()
    assert worker.is_onboarding
    assert worker.init_data == {"correct_answer": "bad"}  # the script's onboarding_data
    await worker.submit_onboarding({"answer": answer})
    for i in range(units):
        if i:
            worker.new_assignment()
            await worker.request_agent()
        assert worker.agent_id is not None and not worker.is_onboarding, worker.failure_reason
        await worker.submit({"rating": "good" if i % 2 else "bad"})
    return worker


def _check_onboarding_outcome(
    passed: list[str], failed: list[str], never_onboarded: list[str], worker_of_units: str
) -> None:
    db = MephistoDB()
    try:
        (run,) = db.find_task_runs()
        assert run.get_task().task_name == "react-static-task-onboarding-example"
        assert db.get_unit_status_counts(run.db_id) == {"completed": len(SENTENCES)}
        results = DataBrowser(db).load_results(task_run_id=run.db_id)
        assert {r["worker_name"] for r in results} == {worker_of_units}
        assert sorted(r["data"]["inputs"]["text"] for r in results) == sorted(
            s["text"] for s in SENTENCES)
        (qual,) = db.find_qualifications(qualification_name=ONBOARDING_QUAL)
        grants = {db.get_worker(g.worker_id)["worker_name"]: g.value
                  for g in db.check_granted_qualifications(qualification_id=qual.db_id)}
        assert grants == {**{n: 1 for n in passed}, **{n: 0 for n in failed}}
        onboarded = {a.get_worker().worker_name: a.state.get_data()["outputs"]
                     for a in db.find_onboarding_agents(task_run_id=run.db_id)}
        assert onboarded == {**{n: {"answer": "bad"} for n in passed},
                             **{n: {"answer": "good"} for n in failed}}
        assert not set(never_onboarded) & set(onboarded)
    finally:
        db.shutdown()


def test_onboarding_script_qualifies_new_workers_by_default(
    react_example_bundle: Path, tmp_path: Path
) -> None:
    """`am_qualifiying_new_workers: str = False` is the string "False" (true): the run
    wants workers WITHOUT my-allowlist-qual. A right onboarding answer passes, a wrong
    one is refused and recorded as a failed onboarding qualification."""
    _grant("veteran", ALLOWLIST_QUAL)
    with running_script(EXAMPLE_DIR / "run_task_onboarding.py", cwd=tmp_path) as script:
        assert script.url is not None
        assert "am_qualifiying_new_workers is annotated `str`" in script.output

        async def work(url: str) -> None:
            assert await _refused(url, "veteran") == UNQUALIFIED
            wrong = await _onboard_and_work(url, "guesser", "good", units=0)
            assert wrong.agent_id is None and wrong.failure_reason == FAILED_ONBOARDING
            await wrong.close()
            assert await _refused(url, "guesser") == FAILED_ONBOARDING  # and stays refused
            worker = await _onboard_and_work(url, "newcomer", "bad", units=len(SENTENCES))
            await worker.close()

        asyncio.run(work(script.url))
        assert script.wait() == 0, script.output
    _check_onboarding_outcome(["newcomer"], ["guesser"], ["veteran"], "newcomer")


def test_onboarding_script_allowlist_only(react_example_bundle: Path, tmp_path: Path) -> None:
    """With am_qualifiying_new_workers='' the run takes only workers granted
    my-allowlist-qual beforehand; others are refused before any onboarding."""
    _grant("trusted", ALLOWLIST_QUAL)
    with running_script(
        EXAMPLE_DIR / "run_task_onboarding.py", "am_qualifiying_new_workers=''", cwd=tmp_path
    ) as script:
        assert script.url is not None

        async def work(url: str) -> None:
            assert await _refused(url, "stranger") == UNQUALIFIED
            worker = await _onboard_and_work(url, "trusted", "bad", units=len(SENTENCES))
            await worker.close()

        asyncio.run(work(script.url))
        assert script.wait() == 0, script.output
    _check_onboarding_outcome(["trusted"], [], ["stranger"], "trusted")
