"""A live static run on the in-house provider (local architect, SQLite), worked over real
sockets by participants holding links: who they are comes from their token, a bad or
expired link gets a clear refusal, nobody can act on another participant's agent, and
the requester's review reaches the provider's records. Last, `mephisto inhouse-demo`
end to end in its own process."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState
from mephisto.abstractions.providers import published
from mephisto.abstractions.providers.inhouse import InhouseProvider, make_links
from mephisto.abstractions.providers.inhouse.provider import REVIEW, RUN
from mephisto.abstractions.providers.inhouse.tokens import PROVIDER_TYPE, assignment_for_token
from mephisto.data_model.agent import Agent
from mephisto.db.database import MephistoDB
from mephisto.testing.fixtures import LaunchedRun, static_run_config
from mephisto.testing.worker import SimulatedWorker, SimulatedWorkerError
from mephisto.tools import provider_review
from mephisto.utils.args import Args

REQUESTER = "lab"


class Participant(SimulatedWorker):
    """A participant's browser as the in-house shim makes it: the link's token on every
    request and in the registration."""

    def __init__(self, link: str) -> None:
        parts = urlsplit(link)
        self.token = parse_qs(parts.query)["token"][0]
        name = "unreadable-link"
        if "." in self.token:
            import base64

            payload = self.token.split(".")[0]
            name = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
            name = name.split(":", 3)[3]
        super().__init__(f"{parts.scheme}://{parts.netloc}/", name,
                         assignment_for_token(self.token))

    def provider_params(self) -> dict[str, str]:
        return {"token": self.token}

    def agent_registration(self) -> dict[str, Any]:
        return {"worker_name": self.worker_id, "assignment_id": self.assignment_id,
                "agent_registration_id": f"{self.assignment_id}-{self.worker_id}",
                "provider_type": PROVIDER_TYPE, "token": self.token}


def inhouse_config(task_html: Path, requester: str = REQUESTER) -> dict[str, Any]:
    config = static_run_config(task_html)
    config["provider"] = {"_provider_type": PROVIDER_TYPE, "requester_name": requester}
    return config


@pytest.fixture
def inhouse_run(operator: Any, task_html: Path) -> Callable[[int], LaunchedRun]:
    def launch(units: int) -> LaunchedRun:
        InhouseProvider.register_requester(operator.db, REQUESTER, {})
        state = SharedStaticTaskState(static_task_data=[{"text": f"t{i}"} for i in range(units)])
        return LaunchedRun(operator, operator.launch_task_run(inhouse_config(task_html), state))

    return launch


def links(run: LaunchedRun, *names: str, requester: str = REQUESTER,
          expires_at: float | None = None) -> list[str]:
    provider = InhouseProvider(run.db, Args.of({"provider": {"requester_name": requester}}))
    made = make_links(provider.signing_key(), run.url, names,
                      now=None if expires_at is None else expires_at - 7 * 86400)
    return [link.url for link in made]


async def _refusal(worker: SimulatedWorker, call: Callable[[], Any]) -> tuple[int, str]:
    try:
        await call()
    except SimulatedWorkerError as exc:
        return exc.status, str(exc.body.get("error") if isinstance(exc.body, dict) else exc.body)
    finally:
        await worker.close()
    raise AssertionError("the request was accepted")


def test_a_participant_works_a_unit_and_the_review_reaches_the_provider(
    inhouse_run: Callable[[int], LaunchedRun], mephisto_db: MephistoDB
) -> None:
    run = inhouse_run(1)
    assert mephisto_db.get_provider_record(PROVIDER_TYPE, RUN, run.task_run_id)["url"] == run.url
    assert published.open_unit_ids(mephisto_db, PROVIDER_TYPE, run.task_run_id) == \
        [u.db_id for u in mephisto_db.find_units(task_run_id=run.task_run_id)]
    (link,) = links(run, "alice")

    async def work() -> None:
        async with Participant(link) as alice:
            await alice.open_page()
            await alice.request_agent()
            again = await alice.request_agent()  # a reload gets the same agent back
            assert again["agent_id"] == alice.agent_id
            await alice.submit({"answer": "42"})

    asyncio.run(work())
    assert run.wait(10)
    (unit,) = mephisto_db.find_units(task_run_id=run.task_run_id)
    agent = unit.get_assigned_agent()
    assert agent is not None and agent.get_worker().worker_name == "alice"
    assert agent.get_worker().provider_type == PROVIDER_TYPE
    assert agent.state.get_data()["outputs"] == {"answer": "42"}

    provider_review.approve_work(agent, "thanks!")
    assert Agent(mephisto_db, agent.db_id).get_status() == "approved"
    record = mephisto_db.get_provider_record(PROVIDER_TYPE, REVIEW, agent.db_id)
    assert record["decision"] == "approved" and record["note"] == "thanks!"
    assert record["worker_id"] == agent.worker_id


def test_bad_links_are_refused_with_a_message_and_nothing_changes(
    inhouse_run: Callable[[int], LaunchedRun], mephisto_db: MephistoDB
) -> None:
    run = inhouse_run(2)
    InhouseProvider.register_requester(mephisto_db, "other-lab", {})
    (expired,) = links(run, "late", expires_at=time.time() - 5)
    (foreign,) = links(run, "stranger", requester="other-lab")
    (good,) = links(run, "alice")
    no_token = Participant(good)
    no_token.token = ""

    async def refusals() -> list[tuple[int, str]]:
        answers = []
        for link in (expired, foreign):
            worker = Participant(link)
            answers.append(await _refusal(worker, worker.request_agent))
        answers.append(await _refusal(no_token, no_token.request_agent))
        return answers

    (late, strange, missing) = asyncio.run(refusals())
    assert late[0] == 403 and "This link expired on" in late[1]
    assert strange[0] == 403 and "another requester" in strange[1]
    assert missing[0] == 400 and "personal link" in missing[1]
    assert mephisto_db.find_agents() == []
    assert run.unit_statuses() == {"launched": 2}


def test_nobody_acts_on_another_participants_agent(
    inhouse_run: Callable[[int], LaunchedRun], mephisto_db: MephistoDB
) -> None:
    run = inhouse_run(2)
    alice_link, bob_link = links(run, "alice", "bob")

    async def work() -> tuple[int, int]:
        async with Participant(alice_link) as alice, Participant(bob_link) as bob:
            await alice.request_agent()
            bob.agent_id = alice.agent_id  # bob learned alice's agent id
            submit = await _refusal(bob, lambda: bob.submit({"answer": "bob's"}))
            bob.agent_id = alice.agent_id
            metadata = await _refusal(bob, lambda: bob.submit_metadata({"x": {"type": "x"}}))
            await alice.submit({"answer": "alice's"})
            return submit[0], metadata[0]

    assert asyncio.run(work()) == (403, 403)
    (agent,) = mephisto_db.find_agents()
    assert agent.get_worker().worker_name == "alice"
    assert agent.state.get_data()["outputs"] == {"answer": "alice's"}


# -- `mephisto inhouse-demo` -------------------------------------------------------------


@pytest.fixture
def demo_process() -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "mephisto.cli", "inhouse-demo", "--port", "0", "--units", "1",
         "--participants", "alice,bob"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    yield process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_inhouse_demo_prints_links_that_complete_its_run(
    demo_process: subprocess.Popen[str],
) -> None:
    assert demo_process.stdout is not None
    found: dict[str, str] = {}
    deadline = time.monotonic() + 60
    while len(found) < 2 and time.monotonic() < deadline:
        line = demo_process.stdout.readline()
        if not line:
            break
        if "\t" in line:
            name, url = line.strip().split("\t")
            found[name] = url
    assert sorted(found) == ["alice", "bob"], demo_process.stderr.read() if \
        demo_process.stderr else ""

    async def work() -> None:
        async with Participant(found["bob"]) as bob:
            await bob.request_agent()
            await bob.submit({"sentiment": "positive", "comment": "from bob"})

    asyncio.run(work())
    out, err = demo_process.communicate(timeout=60)
    assert demo_process.returncode == 0, err
    assert "Done: 1 of 1 units completed" in " ".join(out.split())
    assert "bob" in out
