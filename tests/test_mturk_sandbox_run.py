"""A sandbox batch (seed 000's live_batch_1, on `mturk_sandbox`) launched by the example's
own run script, in this process, against FakeMTurk: HITs published, workers take them
through MTurk's page parameters and submit back to MTurk, and the work is reviewed and
paid by MTurk assignment.

The run script is `examples/simple_static_task/run_task.py` with
`conf=sandbox_batch_1`, run as its `main()` with its command line; the fake is put in
with the provider's client factory hook (`FakeMTurk.installed`), so nothing reaches the
network. The local architect serves http://localhost, which the real MTurk refuses, so
this fake is told to take it (`require_https=False`).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from example_helpers import isolate_aws, load_module, start_main
from waits import wait_for

from mephisto.abstractions.providers.mturk.mturk_provider import SandboxMTurkProvider
from mephisto.db import MephistoDB
from mephisto.operations import payments
from mephisto.testing.fake_mturk import FakeMTurk, work_hit
from mephisto.utils.args import Args

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "examples" / "simple_static_task" / "run_task.py"
KEY_ID = "AKIAFAKESANDBOXKEY01"
SECRET = "sandbox/Secret+Key/0001abcdefghijklmnopq"
REQUESTER = "my_mturk_user_sandbox"  # the config's requester_name
UNITS = 10  # the script's sentences


def load_script() -> Any:
    return load_module(SCRIPT, "sandbox_run_task")


@pytest.fixture
def aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate_aws(tmp_path, monkeypatch)


def test_the_sandbox_batch_runs_on_the_fake_mturk(aws: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    db = MephistoDB()
    try:  # `mephisto register mturk_sandbox name=my_mturk_user ...`, before the script
        SandboxMTurkProvider.register_requester(
            db, REQUESTER, {"access_key_id": KEY_ID, "secret_access_key": SECRET})
    finally:
        db.shutdown()
    fake = FakeMTurk(accounts={KEY_ID: SECRET}, require_https=False)
    script = load_script()
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "conf=sandbox_batch_1",
                                      "mephisto.architect.port=0"])
    with fake.installed():
        thread, outcome = start_main(script, "sandbox-run-task")
        wait_for(lambda: "exit" in outcome or "error" in outcome or
                 len(fake.assignable_hits()) == UNITS, "the batch's HITs")
        assert not outcome, outcome
        account = fake.account(KEY_ID, sandbox=True)
        (hit_type,) = account.hit_types.values()
        assert hit_type["Title"] == "Rate a sentence" and hit_type["Reward"] == "0.30"
        hits = fake.assignable_hits()

        async def crowd() -> list[str]:
            # four workers take the HITs in turn (MTurk's group page), one after another each
            async def worker(index: int) -> list[str]:
                name = f"A{index}SANDBOXWORKER"
                return [await work_hit(fake, hit, name, {"rating": "good", "hit": hit})
                        for hit in hits[index::4]]
            done = await asyncio.gather(*(worker(i) for i in range(4)))
            return [a for each in done for a in each]

        assignments = asyncio.run(crowd())
        thread.join(timeout=120)
        assert not thread.is_alive(), "the run script did not finish"
        assert outcome == {"exit": 0}, outcome
        assert fake.assignable_hits() == []
        assert {fake.assignment(a).status for a in assignments} == {"Submitted"}

        db = MephistoDB()
        try:
            (run,) = db.find_task_runs()
            assert run.provider_type == "mturk_sandbox" and run.sandbox
            assert db.get_unit_status_counts(run.db_id) == {"completed": UNITS}
            agents = db.find_agents(task_run_id=run.db_id)
            saved = sorted(a._row["state"]["provider_assignment_id"] for a in agents)
            assert saved == sorted(assignments)
            # review as a researcher would, after the run: by each agent's assignment
            provider = SandboxMTurkProvider(db, Args.of({"provider": {
                "requester_name": REQUESTER}}))
            for agent in agents:
                provider.approve_work(agent, "thank you")
            paid = payments.pay_bonus(db, provider, agents[0].worker_id, 0.1, "careful work",
                                      agents[0].unit_id)
            assert paid.is_paid
        finally:
            db.shutdown()
        assert {fake.assignment(a).status for a in assignments} == {"Approved"}
        (bonus,) = account.bonuses
        assert bonus["AssignmentId"] == agents[0]._row["state"]["provider_assignment_id"]
