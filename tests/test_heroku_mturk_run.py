"""Seed 000's workflow with the `heroku` architect: a pilot on MTurk's sandbox, then a
live batch (`- /mephisto/architect: heroku`, `- /mephisto/provider: mturk`), each
launched by the example's own run script against FakeMTurk and the fake Heroku API
(tests/heroku_fake.py). Workers take the HITs, open the task through the app's router
and submit; each batch's app is deleted when its script ends."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from example_helpers import isolate_aws, load_module, start_main
from heroku_fake import GOOD_KEY, FakeHeroku, fake_heroku
from waits import wait_for

from mephisto.abstractions.architects.heroku import HerokuArchitect
from mephisto.abstractions.architects.provisioned import ledgers
from mephisto.abstractions.providers.mturk.mturk_provider import (
    MTurkProvider,
    SandboxMTurkProvider,
)
from mephisto.db import MephistoDB
from mephisto.testing.fake_mturk import FakeMTurk, work_hit

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "examples" / "simple_static_task" / "run_task.py"
KEY_ID = "AKIAFAKEHEROKURUN001"
SECRET = "heroku/Run+Secret/0001abcdefghijklmnopqr"
UNITS = 10  # the script's sentences


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_aws(tmp_path, monkeypatch)
    monkeypatch.setenv("HEROKU_API_KEY", GOOD_KEY)
    monkeypatch.setattr(HerokuArchitect, "poll_interval", 0.01)


def run_batch(fake: FakeMTurk, heroku: FakeHeroku, argv: list[str], sandbox: bool,
              monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Run the example script with `argv`; workers complete its HITs. Returns the
    assignment ids."""
    script = load_module(SCRIPT, f"heroku_run_task_{'sandbox' if sandbox else 'live'}")
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *argv])
    apps_before = set(heroku.routers)
    thread, outcome = start_main(script, "heroku-run-task")
    wait_for(lambda: bool(outcome) or len(fake.assignable_hits()) == UNITS, "the HITs")
    assert not outcome, outcome
    (app,) = set(heroku.routers) - apps_before
    router = heroku.routers[app]
    assert router.status()["operator"] is True
    account = fake.account(KEY_ID, sandbox=sandbox)
    # every HIT's ExternalQuestion is the app's router
    assert account.hits and all(hit.url.startswith(router.url)
                                for hit in account.hits.values())
    hits = fake.assignable_hits()

    async def crowd() -> list[str]:
        async def worker(index: int) -> list[str]:
            name = f"A{index}HEROKUWORKER"
            return [await work_hit(fake, hit, name, {"rating": "good"})
                    for hit in hits[index::3]]
        done = await asyncio.gather(*(worker(i) for i in range(3)))
        return [a for each in done for a in each]

    assignments = asyncio.run(crowd())
    thread.join(timeout=120)
    assert not thread.is_alive(), "the run script did not finish"
    assert outcome == {"exit": 0}, outcome
    assert app not in heroku.apps and app in heroku.deleted  # deleted when the script ended
    return assignments


def test_pilot_on_the_sandbox_then_launch_through_heroku(
        env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = MephistoDB()
    try:
        SandboxMTurkProvider.register_requester(
            db, "my_mturk_user_sandbox", {"access_key_id": KEY_ID, "secret_access_key": SECRET})
        MTurkProvider.register_requester(
            db, "my_mturk_user", {"access_key_id": KEY_ID, "secret_access_key": SECRET})
    finally:
        db.shutdown()
    fake = FakeMTurk(accounts={KEY_ID: SECRET}, require_https=False)
    common = ["mephisto/architect=heroku", "mephisto.architect.connect_timeout=20"]
    with fake.installed(), fake_heroku(tmp_path) as heroku:
        pilot = run_batch(fake, heroku, [
            "conf=sandbox_batch_1", *common,
            "mephisto.task.task_name=my-cool-task-pilot-1"], True, monkeypatch)
        live = run_batch(fake, heroku, [
            "conf=sandbox_batch_1", *common, "mephisto/provider=mturk",
            "mephisto.provider.requester_name=my_mturk_user",
            "mephisto.task.task_name=my-cool-task-live-batch-1"], False, monkeypatch)
        assert heroku.unknown == [] and heroku.apps == {}
    assert len(pilot) == len(live) == UNITS
    assert {fake.assignment(a).status for a in pilot + live} == {"Submitted"}
    assert ledgers() == []
    db = MephistoDB()
    try:
        assert len(db.find_task_runs()) == 2
        for run in db.find_task_runs():
            assert db.get_unit_status_counts(run.db_id) == {"completed": UNITS}
        assert sorted(r.provider_type for r in db.find_task_runs()) == ["mturk", "mturk_sandbox"]
    finally:
        db.shutdown()
