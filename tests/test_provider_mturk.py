"""The `mturk` and `mturk_sandbox` providers.

- Both pass the provider contract against `FakeMTurk` (mephisto.testing.fake_mturk): a
  stateful MTurk behind real boto3 clients, every request checked against MTurk's
  service model and every answer against its output shape.
- Call-level tests use botocore's `Stubber`: the exact parameters of each MTurk call
  (request tokens above all).
- Behaviour tests: how HITs and units map, retries, qualifications, credentials, errors.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ParamValidationError
from botocore.stub import ANY, Stubber

from mephisto.abstractions.blueprint import SharedTaskState
from mephisto.abstractions.crowd_provider import CrowdProvider
from mephisto.abstractions.providers.mturk import client as mturk_client
from mephisto.abstractions.providers.mturk.client import SANDBOX_ENDPOINT, use_client_factory
from mephisto.abstractions.providers.mturk.mturk_provider import (
    MTurkProvider,
    SandboxMTurkProvider,
)
from mephisto.data_model.agent import Agent
from mephisto.data_model.qualification import QUAL_EXISTS, QUAL_GREATER_EQUAL
from mephisto.data_model.requester import Requester
from mephisto.data_model.task_run import TaskRun
from mephisto.data_model.worker import Worker
from mephisto.db import batch
from mephisto.db.database import MephistoDB
from mephisto.db.rows import new_agent_id
from mephisto.errors import ConfigError, MalformedRequest, ProviderError
from mephisto.operations import payments
from mephisto.testing.fake_mturk import FakeMTurk, FakeMTurkError
from mephisto.testing.provider_contract import Arrival, CrowdHarness, ProviderContract
from mephisto.utils.args import Args
from mephisto.utils.qualifications import make_qualification_dict

KEY_ID = "AKIAFAKEMTURKKEY0001"
SECRET = "fake/Secret+Key/0001abcdefghijklmnopqrst"
OTHER_KEY_ID = "AKIAFAKEMTURKKEY0002"
OTHER_SECRET = "fake/Secret+Key/0002abcdefghijklmnopqrst"
CREDENTIALS = {"access_key_id": KEY_ID, "secret_access_key": SECRET}
URL = "https://tasks.example.org/"
TASK = {
    "task_title": "Rate a sentence", "task_description": "Say how a sentence makes you feel.",
    "task_reward": 0.5, "task_tags": "rating,text", "assignment_duration_in_seconds": 600,
    "task_lifetime_in_seconds": 3600,
}


def mturk_id(name: str) -> str:
    """An MTurk-shaped worker id for a readable test name."""
    return "A" + hashlib.sha1(name.encode()).hexdigest()[:13].upper()


@pytest.fixture(autouse=True)
def aws_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """AWS files of the test's own: the user's ~/.aws is never read or written."""
    credentials = tmp_path / "aws" / "credentials"
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws" / "config"))
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    return credentials


@pytest.fixture
def db(tmp_path: Path) -> Iterator[MephistoDB]:
    database = MephistoDB(f"sqlite:///{tmp_path / 'mturk.db'}")
    yield database
    database.shutdown()


@pytest.fixture
def fake() -> Iterator[FakeMTurk]:
    fake = FakeMTurk(accounts={KEY_ID: SECRET, OTHER_KEY_ID: OTHER_SECRET})
    with fake.installed():
        yield fake


# -- the contract ---------------------------------------------------------------------------


class MTurkHarness(CrowdHarness):
    """The crowd side: FakeMTurk's workers accept the HIT published for a unit."""

    credentials = CREDENTIALS

    def __init__(self, provider_class: type[MTurkProvider], fake: FakeMTurk) -> None:
        self.provider_class = provider_class
        self.fake = fake

    def task_args(self) -> dict[str, Any]:
        return dict(TASK)

    def bad_credentials(self) -> dict[str, str]:
        return {"access_key_id": "AKIAREFUSEDKEY000001",
                "secret_access_key": "refused/Secret+Key/0001abcdefghijklm"}

    def _account(self) -> Any:
        return self.fake.account(KEY_ID, sandbox=self.provider_class.SANDBOX)

    def arrive(self, provider: CrowdProvider, unit_id: str, worker: str) -> Arrival:
        hit_id = hit_of(provider, unit_id)
        worker_id = mturk_id(worker)
        assignment_id = self.fake.accept(hit_id, worker_id)
        provider_data = {"worker_name": worker_id, "assignment_id": assignment_id,
                         "hit_id": hit_id, "provider_type": "mturk",
                         "agent_registration_id": f"{assignment_id}-{worker_id}"}
        caller = {"workerId": worker_id, "assignmentId": assignment_id}
        return Arrival(provider_data, caller, worker_id, assignment_id)

    def submit(self, provider: CrowdProvider, arrival: Arrival) -> None:
        self.fake.submit({"assignmentId": str(arrival.assignment_id),
                          "workerId": arrival.worker_name, "mephisto_submitted": "true"})

    def decision(self, provider: CrowdProvider, agent: Agent) -> str | None:
        status = self.fake.assignment(assignment_of(agent)).status
        return {"Approved": "approved", "Rejected": "rejected"}.get(status)

    def bonuses(self, provider: CrowdProvider, worker: Worker) -> list[float]:
        return [float(b["BonusAmount"]) for b in self._account().bonuses
                if b["WorkerId"] == worker.worker_name]

    def fail_next_bonus(self, provider: CrowdProvider, after_paying: bool) -> None:
        self.fake.fail_next("SendBonus", after=after_paying)

    def blocked(self, provider: CrowdProvider, worker: Worker, requester: Requester) -> bool:
        return worker.worker_name in self._account().blocks

    def qualification(self, provider: CrowdProvider, worker: Worker, name: str) -> int | None:
        return self.fake.score(self._account(), name, worker.worker_name)

    def messages(self, provider: CrowdProvider, worker: Worker) -> list[str]:
        return [m["MessageText"] for m in self._account().messages
                if m["WorkerId"] == worker.worker_name]


def hit_of(provider: CrowdProvider, unit_id: str) -> str:
    """The HIT launched for a unit, from the provider's records."""
    run_id = provider.db.get_unit(unit_id)["task_run_id"]
    record = provider.db.get_provider_record(str(provider.PROVIDER_TYPE), f"units:{run_id}",
                                             unit_id)
    return str(record["hit_id"])


def assignment_of(agent: Agent) -> str:
    return str(agent.db.get_agent(agent.db_id)["state"]["provider_assignment_id"])


class TestMTurkProvider(ProviderContract):
    @pytest.fixture
    def harness(self, fake: FakeMTurk) -> CrowdHarness:
        return MTurkHarness(MTurkProvider, fake)


class TestSandboxMTurkProvider(ProviderContract):
    @pytest.fixture
    def harness(self, fake: FakeMTurk) -> CrowdHarness:
        return MTurkHarness(SandboxMTurkProvider, fake)


# -- building blocks of the other tests -------------------------------------------------------


def make_provider(db: MephistoDB, cls: type[MTurkProvider] = SandboxMTurkProvider,
                  name: str = "researcher", credentials: dict[str, str] = CREDENTIALS,
                  ) -> tuple[MTurkProvider, Requester]:
    requester = cls.register_requester(db, name, credentials)
    args = Args.of({"provider": {"_provider_type": cls.PROVIDER_TYPE,
                                 "requester_name": requester.requester_name}, "task": TASK})
    return cls(db, args), requester


class Unit:
    def __init__(self, unit_id: str, assignment_id: str) -> None:
        self.unit_id = unit_id
        self.assignment_id = assignment_id


def make_run(db: MephistoDB, provider: MTurkProvider, requester: Requester, n: int,
             shared_state: Any = None, setup: bool = True) -> tuple[TaskRun, list[Unit]]:
    task_id = db.new_task(f"task-{len(db.find_tasks())}", "mock")
    run_id = db.new_task_run(task_id, requester.db_id, "{}", str(provider.PROVIDER_TYPE),
                             "mock", requester.is_sandbox())
    run = TaskRun(db, run_id)
    if setup:
        provider.setup_resources_for_task_run(run, provider.args, shared_state, URL)
    created = batch.new_assignments_with_units(db, run_id, [{}] * n, 0.5, status="launched")
    return run, [Unit(ids[0], assignment_id) for assignment_id, ids in created]


def make_agent(db: MephistoDB, run: TaskRun, unit: Unit, worker_name: str,
               provider_assignment: str, complete: bool = True) -> Agent:
    worker = db.find_or_new_worker(worker_name, run.provider_type)
    agent_id = new_agent_id()
    batch.create_agents(db, [{
        "agent_id": agent_id, "worker_id": worker.db_id, "unit_id": unit.unit_id,
        "task_id": run.task_id, "task_run_id": run.db_id, "assignment_id": unit.assignment_id,
        "task_type": "mock", "provider_type": run.provider_type, "status": "in task",
        "state": {"provider_assignment_id": provider_assignment},
    }])
    if complete:
        batch.complete_agents(db, [(agent_id, unit.unit_id, {"outputs": {"done": True}})])
    return Agent(db, agent_id)


@pytest.fixture
def stubber() -> Iterator[Stubber]:
    """A real MTurk client (sandbox endpoint) whose answers a test queues; every
    provider client is this one."""
    client = boto3.client("mturk", region_name="us-east-1", endpoint_url=SANDBOX_ENDPOINT,
                          aws_access_key_id=KEY_ID, aws_secret_access_key=SECRET)
    stub = Stubber(client)
    previous = use_client_factory(lambda profile, sandbox: client)
    try:
        with stub:
            yield stub
        stub.assert_no_pending_responses()
    finally:
        use_client_factory(previous)


def hit_answer(hit_id: str, annotation: str | None = None) -> dict[str, Any]:
    hit: dict[str, Any] = {"HITId": hit_id, "HITTypeId": "3TYPE", "HITStatus": "Assignable",
                           "MaxAssignments": 1, "NumberOfAssignmentsAvailable": 1}
    if annotation is not None:
        hit["RequesterAnnotation"] = annotation
    return hit


def stub_setup(stub: Stubber, requirements: list[dict[str, Any]] | None = None) -> None:
    stub.add_response("create_hit_type", {"HITTypeId": "3TYPE"}, {
        "AutoApprovalDelayInSeconds": 7 * 24 * 3600, "AssignmentDurationInSeconds": 600,
        "Reward": "0.50", "Title": "Rate a sentence",
        "Keywords": "rating,text", "Description": "Say how a sentence makes you feel.",
        "QualificationRequirements": requirements or [],
    })


# -- call level (Stubber) --------------------------------------------------------------------


def test_units_are_published_as_one_hit_each_with_a_request_token(
    db: MephistoDB, stubber: Stubber
) -> None:
    provider, requester = make_provider(db)
    stub_setup(stubber)
    run, units = make_run(db, provider, requester, 2)
    for i in range(2):
        stubber.add_response("create_hit_with_hit_type", {"HIT": hit_answer(f"3HIT{i}")}, {
            "HITTypeId": "3TYPE", "MaxAssignments": 1, "LifetimeInSeconds": 3600,
            "Question": ANY, "RequesterAnnotation": ANY, "UniqueRequestToken": ANY,
        })
    provider.launch_units(units, URL)
    provider.launch_units(units, URL)  # again: nothing is asked of MTurk
    records = db.find_provider_records("mturk_sandbox", f"units:{run.db_id}")
    assert [records[u.unit_id]["hit_id"] for u in units] == ["3HIT0", "3HIT1"]
    assert len({r["token"] for r in records.values()}) == 2
    assert provider.open_units(run) == [u.unit_id for u in units]


def test_a_launch_whose_answer_was_lost_finds_its_hit_by_its_token(
    db: MephistoDB, stubber: Stubber
) -> None:
    provider, requester = make_provider(db)
    stub_setup(stubber)
    run, (unit,) = make_run(db, provider, requester, 1)
    stubber.add_client_error("create_hit_with_hit_type", "ServiceFault", "try later", 500)
    with pytest.raises(ProviderError) as failed:
        provider.launch_units([unit], URL)
    assert failed.value.retryable
    token = db.get_provider_record("mturk_sandbox", f"units:{run.db_id}", unit.unit_id)["token"]
    # the retry sends the same token; MTurk had made the HIT: it is found by its annotation
    stubber.add_client_error(
        "create_hit_with_hit_type", "RequestError",
        f'The idempotency token "{token}" has already been processed. (1700000000000)', 400,
        expected_params={"HITTypeId": "3TYPE", "MaxAssignments": 1, "LifetimeInSeconds": 3600,
                         "Question": ANY, "RequesterAnnotation": ANY,
                         "UniqueRequestToken": token})
    stubber.add_response("list_hits", {"NumResults": 2, "HITs": [
        hit_answer("3OTHER", "someone else's"), hit_answer("3MADE", f"unit x ({token})")]},
        {"MaxResults": 100})
    provider.launch_units([unit], URL)
    assert hit_of(provider, unit.unit_id) == "3MADE"


def test_send_bonus_carries_the_payment_request_token(db: MephistoDB, stubber: Stubber) -> None:
    provider, requester = make_provider(db)
    run, (unit,) = make_run(db, provider, requester, 1, setup=False)
    agent = make_agent(db, run, unit, "A1BONUSED", "3ASSIGNMENT1")
    payment_id = db.new_payment(requester.db_id, agent.worker_id, "mturk_sandbox", 1.5,
                                "great work", unit_id=unit.unit_id)
    token = db.get_payment(payment_id)["request_token"]
    stubber.add_response("send_bonus", {}, {
        "WorkerId": "A1BONUSED", "BonusAmount": "1.50", "AssignmentId": "3ASSIGNMENT1",
        "Reason": "great work", "UniqueRequestToken": token})
    paid = payments.retry_payment(db, provider, payment_id)
    assert paid.is_paid and paid.provider_ref == f"mturk-bonus:{token}"


def test_a_retried_bonus_sends_the_same_token(db: MephistoDB, stubber: Stubber) -> None:
    provider, requester = make_provider(db)
    run, (unit,) = make_run(db, provider, requester, 1, setup=False)
    agent = make_agent(db, run, unit, "A1BONUSED", "3ASSIGNMENT1")
    stubber.add_client_error("send_bonus", "ServiceFault", "We encountered an error", 500)
    with pytest.raises(ProviderError) as failed:
        payments.pay_bonus(db, provider, agent.worker_id, 0.25, "more", unit.unit_id)
    assert failed.value.retryable
    (payment,) = db.find_payments(status="failed")
    stubber.add_response("send_bonus", {}, {
        "WorkerId": "A1BONUSED", "BonusAmount": "0.25", "AssignmentId": "3ASSIGNMENT1",
        "Reason": "more", "UniqueRequestToken": payment.request_token})
    assert payments.retry_payment(db, provider, payment.db_id).is_paid


def test_a_bonus_paid_whose_answer_was_lost_is_paid_once(
    db: MephistoDB, stubber: Stubber
) -> None:
    """MTurk paid, the answer was lost (a 503 here); the retry's token was used, so MTurk
    pays nothing more, and the payment is recorded paid."""
    provider, requester = make_provider(db)
    run, (unit,) = make_run(db, provider, requester, 1, setup=False)
    agent = make_agent(db, run, unit, "A1BONUSED", "3ASSIGNMENT1")
    stubber.add_client_error("send_bonus", "ServiceUnavailable", "slow down", 503)
    with pytest.raises(ProviderError):
        payments.pay_bonus(db, provider, agent.worker_id, 0.25, "more", unit.unit_id)
    (payment,) = db.find_payments(status="failed")
    stubber.add_client_error(
        "send_bonus", "RequestError",
        f'The idempotency token "{payment.request_token}" has already been processed. (1)',
        400, expected_params={"WorkerId": "A1BONUSED", "BonusAmount": "0.25",
                              "AssignmentId": "3ASSIGNMENT1", "Reason": "more",
                              "UniqueRequestToken": payment.request_token})
    again = payments.retry_payment(db, provider, payment.db_id)
    assert again.is_paid and again.attempts == 2


def test_a_bonus_without_a_unit_uses_the_workers_latest_assignment(
    db: MephistoDB, stubber: Stubber
) -> None:
    provider, requester = make_provider(db)
    run, (u1, u2) = make_run(db, provider, requester, 2, setup=False)
    first = make_agent(db, run, u1, "A1WORKER", "3EARLIER")
    make_agent(db, run, u2, "A1WORKER", "3LATER")
    stubber.add_response("send_bonus", {}, {
        "WorkerId": "A1WORKER", "BonusAmount": "0.20", "AssignmentId": "3LATER",
        "Reason": "thanks", "UniqueRequestToken": ANY})
    paid = payments.pay_bonus(db, provider, first.worker_id, 0.2, "thanks",
                              requester_id=requester.db_id)
    assert paid.is_paid
    stranger = db.find_or_new_worker("A1STRANGER", "mturk_sandbox")
    with pytest.raises(ProviderError, match="has none here"):  # MTurk is not even asked
        payments.pay_bonus(db, provider, stranger.db_id, 0.2, "thanks",
                           requester_id=requester.db_id)
    assert [p.worker_id for p in db.find_payments(status="failed")] == [stranger.db_id]


def test_review_uses_the_agents_mturk_assignment(db: MephistoDB, stubber: Stubber) -> None:
    provider, requester = make_provider(db)
    run, units = make_run(db, provider, requester, 3, setup=False)
    good, bad, meh = (make_agent(db, run, u, f"A{i}WORKER", f"3ASSIGNMENT{i}")
                      for i, u in enumerate(units))
    stubber.add_response("approve_assignment", {}, {
        "AssignmentId": "3ASSIGNMENT0", "RequesterFeedback": "thanks", "OverrideRejection": True})
    stubber.add_response("reject_assignment", {}, {
        "AssignmentId": "3ASSIGNMENT1", "RequesterFeedback": "the answer was empty"})
    stubber.add_response("approve_assignment", {}, {
        "AssignmentId": "3ASSIGNMENT2", "OverrideRejection": True})  # soft reject: approved
    provider.approve_work(good, "thanks")
    provider.reject_work(bad, "the answer was empty")
    provider.soft_reject_work(meh)


def test_a_repeated_approval_is_not_an_error(db: MephistoDB, stubber: Stubber) -> None:
    provider, requester = make_provider(db)
    run, (unit,) = make_run(db, provider, requester, 1, setup=False)
    agent = make_agent(db, run, unit, "A1WORKER", "3ASSIGNMENT1")
    stubber.add_client_error("approve_assignment", "RequestError",
                             "This operation can be called with a status of: Submitted", 400)
    stubber.add_response("get_assignment", {"Assignment": {
        "AssignmentId": "3ASSIGNMENT1", "AssignmentStatus": "Approved"}},
        {"AssignmentId": "3ASSIGNMENT1"})
    provider.approve_work(agent)


def test_blocks_name_the_mturk_worker(db: MephistoDB, stubber: Stubber) -> None:
    provider, requester = make_provider(db)
    worker = db.find_or_new_worker("A1SPAMMER", "mturk_sandbox")
    stubber.add_response("create_worker_block", {}, {"WorkerId": "A1SPAMMER", "Reason": "spam"})
    stubber.add_response("delete_worker_block", {}, {"WorkerId": "A1SPAMMER", "Reason": ANY})
    provider.block_worker(worker, requester, "spam")
    provider.unblock_worker(worker, requester)
    other = db.find_or_new_worker("alice", "mock")
    with pytest.raises(ProviderError, match="mock worker"):
        provider.block_worker(other, requester, "spam")


def test_feedback_is_sent_with_notify_workers(db: MephistoDB, stubber: Stubber) -> None:
    from mephisto.data_model.unit import Unit as UnitEntity

    provider, requester = make_provider(db)
    run, (unit,) = make_run(db, provider, requester, 1, setup=False)
    agent = make_agent(db, run, unit, "A1READER", "3ASSIGNMENT1")
    task_name = run.get_task().task_name
    expected = {"Subject": f"About your work on {task_name}", "MessageText": "Nice work.",
                "WorkerIds": ["A1READER"]}
    stubber.add_response("notify_workers", {"NotifyWorkersFailureStatuses": []}, expected)
    stubber.add_response("notify_workers", {"NotifyWorkersFailureStatuses": [{
        "NotifyWorkersFailureCode": "HardFailure", "WorkerId": "A1READER",
        "NotifyWorkersFailureMessage": "Cannot send notification because you have never "
                                       "paid this worker."}]}, expected)
    provider.send_feedback_message(agent.get_worker(), UnitEntity(db, unit.unit_id), "Nice work.")
    with pytest.raises(ProviderError, match="never paid this worker"):
        provider.send_feedback_message(agent.get_worker(), UnitEntity(db, unit.unit_id),
                                       "Nice work.")
    with pytest.raises(ProviderError, match="1 to 4096"):  # refused before any call
        provider.send_feedback_message(agent.get_worker(), UnitEntity(db, unit.unit_id),
                                       "x" * 5000)


def test_check_requester_reports_balance_or_what_to_do(db: MephistoDB, stubber: Stubber) -> None:
    provider, requester = make_provider(db, MTurkProvider)
    stubber.add_response("get_account_balance", {"AvailableBalance": "12.34"}, {})
    check = provider.check_requester(requester)
    assert check.ready and check.balance == 12.34
    stubber.add_client_error("get_account_balance", "UnrecognizedClientException",
                             "The security token included in the request is invalid.", 400)
    check = provider.check_requester(requester)
    assert not check.ready
    assert check.message.startswith("mturk: ")
    assert "mephisto register mturk name=researcher" in check.message


# -- behaviour (FakeMTurk) -----------------------------------------------------------------------


def test_a_worker_given_another_units_seat(db: MephistoDB, fake: FakeMTurk) -> None:
    """A worker who accepted the HIT launched for unit 1 is given unit 2 by our pool: the
    review uses their own assignment, and expiring the open units withdraws the HITs no
    one holds (unit 2's in place of unit 1's), so MTurk offers no seat without a unit."""
    provider, requester = make_provider(db)
    run, (u1, u2, u3) = make_run(db, provider, requester, 3)
    provider.launch_units([u1, u2, u3], URL)
    h1, h2, h3 = (hit_of(provider, u.unit_id) for u in (u1, u2, u3))
    held = fake.accept(h1, "A1HOLDER")
    agent = make_agent(db, run, u2, "A1HOLDER", held, complete=False)
    provider.expire_units([u1, u3])  # the run closes: units 1 and 3 were open
    assert fake.assignable_hits() == []
    assert fake.hit_status(h1) == "Unassignable"  # still the holder's to finish
    assert fake.hit(h2).expiration < fake.hit(h1).expiration
    assert provider.open_units(run) == [u2.unit_id]
    fake.submit({"assignmentId": held, "mephisto_submitted": "true"})
    provider.approve_work(agent)
    assert fake.assignment(held).status == "Approved"
    with pytest.raises(FakeMTurkError):
        fake.accept(h3, "A1LATECOMER")


def test_held_hits_are_expired_when_no_seat_is_free(db: MephistoDB, fake: FakeMTurk) -> None:
    provider, requester = make_provider(db)
    _run, (u1, u2) = make_run(db, provider, requester, 2)
    provider.launch_units([u1, u2], URL)
    fake.accept(hit_of(provider, u1.unit_id), "A1FIRST")
    fake.accept(hit_of(provider, u2.unit_id), "A1SECOND")  # never arrived at our server
    provider.expire_units([u1, u2])
    returned = fake.hit(hit_of(provider, u1.unit_id)).assignments[0]
    fake.return_hit(returned)
    assert fake.assignable_hits() == []  # a returned HIT does not come back


def test_a_failed_launch_batch_is_retried_without_duplicates(
    db: MephistoDB, fake: FakeMTurk
) -> None:
    provider, requester = make_provider(db)
    run, units = make_run(db, provider, requester, 3)
    fake.fail_next("CreateHITWithHITType")  # unit 1: timed out before MTurk made it
    with pytest.raises(ProviderError) as failed:
        provider.launch_units(units, URL)
    assert failed.value.retryable and "publishing unit" in str(failed.value)
    provider.launch_units(units, URL)
    fake.calls.clear()
    fake.fail_next("CreateHITWithHITType", after=True)  # made, but the answer was lost
    run2, units2 = make_run(db, provider, requester, 2)
    with pytest.raises(ProviderError):
        provider.launch_units(units2, URL)
    provider.launch_units(units2, URL)  # token reused: found again, not made twice
    assert len(fake.account().hits) == 5
    assert provider.open_units(run) == [u.unit_id for u in units]
    assert provider.open_units(run2) == [u.unit_id for u in units2]
    assert len({hit_of(provider, u.unit_id) for u in units + units2}) == 5


def test_an_expired_unit_launched_again_gets_a_new_hit(db: MephistoDB, fake: FakeMTurk) -> None:
    provider, requester = make_provider(db)
    _run, (unit,) = make_run(db, provider, requester, 1)
    provider.launch_units([unit], URL)
    first = hit_of(provider, unit.unit_id)
    provider.expire_units([unit])
    provider.launch_units([unit], URL)  # resume_incomplete_run relaunches expired units
    assert hit_of(provider, unit.unit_id) != first
    assert fake.assignable_hits() == [hit_of(provider, unit.unit_id)]


def test_requirements_become_mturk_qualifications(db: MephistoDB, fake: FakeMTurk) -> None:
    """Our requirements (those for MTurk) use mirrored qualification types, with grants
    made before the run associated on MTurk; raw MTurk requirements pass as they are."""
    provider, requester = make_provider(db)
    qid = db.make_qualification("allowlist")
    trusted = db.find_or_new_worker("A1TRUSTED", "mturk_sandbox")
    db.grant_qualification(qid, trusted.db_id, 1)
    elsewhere = db.find_or_new_worker("A1TRUSTED", "mock")  # same name, other provider
    db.grant_qualification(qid, elsewhere.db_id, 1)
    locale = {"QualificationTypeId": "00000000000000000071", "Comparator": "In",
              "LocaleValues": [{"Country": "US"}, {"Country": "GB"}]}
    shared = SharedTaskState(
        qualifications=[
            make_qualification_dict("allowlist", QUAL_EXISTS),
            make_qualification_dict("skill", QUAL_GREATER_EQUAL, 3,
                                    applicable_providers=["mturk"]),
            make_qualification_dict("prolific-only", QUAL_EXISTS,
                                    applicable_providers=["prolific"]),
        ],
        mturk_specific_qualifications=[locale])
    _run, (unit,) = make_run(db, provider, requester, 1, shared_state=shared)
    account = fake.account()
    (hit_type,) = account.hit_types.values()
    allow, skill = (account.qualification_type_named(n) for n in ("allowlist", "skill"))
    assert account.qualification_type_named("prolific-only") is None
    assert hit_type["QualificationRequirements"] == [
        {"QualificationTypeId": allow, "Comparator": "Exists",
         "ActionsGuarded": "DiscoverPreviewAndAccept"},
        {"QualificationTypeId": skill, "Comparator": "GreaterThanOrEqualTo",
         "IntegerValues": [3], "ActionsGuarded": "DiscoverPreviewAndAccept"},
        {**locale, "ActionsGuarded": "DiscoverPreviewAndAccept"},
    ]
    assert fake.score(account, "allowlist", "A1TRUSTED") == 1
    provider.grant_qualification(trusted, "skill", 4)
    provider.launch_units([unit], URL)
    with pytest.raises(FakeMTurkError):
        fake.accept(hit_of(provider, unit.unit_id), "A1STRANGER")
    fake.accept(hit_of(provider, unit.unit_id), "A1TRUSTED")
    # a revoked grant is taken back when the next run is set up
    db.revoke_qualification(qid, trusted.db_id)
    make_run(db, provider, requester, 1, shared_state=shared)
    assert fake.score(account, "allowlist", "A1TRUSTED") is None
    assert len(account.qualification_types) == 2  # made once, found in the records after


def test_a_qualification_type_made_from_another_database_is_found(
    db: MephistoDB, tmp_path: Path, fake: FakeMTurk
) -> None:
    provider, _ = make_provider(db)
    worker = db.find_or_new_worker("A1WORKER", "mturk_sandbox")
    provider.grant_qualification(worker, "skill", 2)
    other_db = MephistoDB(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        other, _ = make_provider(other_db)
        other_worker = other_db.find_or_new_worker("A1WORKER", "mturk_sandbox")
        other.grant_qualification(other_worker, "skill", 5)
    finally:
        other_db.shutdown()
    account = fake.account()
    assert len(account.qualification_types) == 1
    assert fake.score(account, "skill", "A1WORKER") == 5


def test_requesters_are_separate_accounts(db: MephistoDB, fake: FakeMTurk) -> None:
    provider, mine = make_provider(db, name="mine")
    _, theirs = make_provider(db, name="theirs", credentials={
        "access_key_id": OTHER_KEY_ID, "secret_access_key": OTHER_SECRET})
    worker = db.find_or_new_worker("A1WORKER", "mturk_sandbox")
    provider.block_worker(worker, theirs, "spam")
    assert "A1WORKER" in fake.account(OTHER_KEY_ID).blocks
    assert provider.check_requester(mine).ready
    assert fake.account(KEY_ID).blocks == {}
    assert provider.check_requester(theirs).balance == 10000.0


def test_connection_failures_are_retryable_and_change_no_record(
    db: MephistoDB, fake: FakeMTurk
) -> None:
    provider, requester = make_provider(db)
    run, (unit,) = make_run(db, provider, requester, 1)
    provider.launch_units([unit], URL)
    fake.fail_next("GetHIT", error="connection")
    with pytest.raises(ProviderError) as failed:
        provider.expire_units([unit])
    assert failed.value.retryable
    assert "could not reach MTurk's sandbox" in str(failed.value)
    assert provider.open_units(run) == [unit.unit_id]
    provider.expire_units([unit])
    assert provider.open_units(run) == [] and fake.assignable_hits() == []


def test_the_fake_checks_what_botocore_leaves_to_mturk(db: MephistoDB, fake: FakeMTurk) -> None:
    """botocore checks types and required members; MTurk's patterns (a worker id is `A`
    and capitals or digits) are checked by the fake, so a bad call fails in tests."""
    provider, requester = make_provider(db)
    not_mturk = db.find_or_new_worker("alice", "mturk_sandbox")
    with pytest.raises(ProviderError, match="would refuse the request: .*does not match"):
        provider.block_worker(not_mturk, requester, "spam")
    client = fake.client("researcher", True)
    with pytest.raises(ParamValidationError):
        client.get_hit()  # HITId is required: botocore's own check
    assert fake.calls == []  # neither reached MTurk


def test_launching_needs_a_set_up_run(db: MephistoDB, fake: FakeMTurk) -> None:
    provider, requester = make_provider(db)
    _, units = make_run(db, provider, requester, 1, setup=False)
    with pytest.raises(ProviderError, match="setup_resources_for_task_run"):
        provider.launch_units(units, URL)


def test_mturk_refuses_a_page_that_is_not_https(db: MephistoDB, fake: FakeMTurk,
                                                caplog: pytest.LogCaptureFixture) -> None:
    provider, requester = make_provider(db)
    task_id = db.new_task("plain-http", "mock")
    run = TaskRun(db, db.new_task_run(task_id, requester.db_id, "{}", "mturk_sandbox", "mock",
                                      True))
    with caplog.at_level(logging.WARNING):
        provider.setup_resources_for_task_run(run, provider.args, None, "http://localhost:3000/")
    assert "HTTPS" in caplog.text
    (assignment_id, (unit_id,)), = batch.new_assignments_with_units(
        db, run.db_id, [{}], 0.5, status="launched")
    with pytest.raises(ProviderError, match="ExternalURL must be an HTTPS URL"):
        provider.launch_units([Unit(unit_id, assignment_id)], "http://localhost:3000/")


# -- workers arriving -------------------------------------------------------------------------


def test_workers_are_known_by_their_mturk_ids(db: MephistoDB) -> None:
    provider = SandboxMTurkProvider(db)
    registration = {"worker_name": "A2WORKER", "assignment_id": "3ASSIGN", "hit_id": "3HIT"}
    assert provider.worker_name_from_registration(registration) == "A2WORKER"
    assert provider.assignment_from_registration(registration) == "3ASSIGN"
    preview = {**registration, "assignment_id": "ASSIGNMENT_ID_NOT_AVAILABLE"}
    assert provider.assignment_from_registration(preview) is None
    for name in ("alice", "", None, "A", "a2worker", "A2 WORKER", "A" + "1" * 64):
        with pytest.raises(MalformedRequest):
            provider.worker_name_from_registration({"worker_name": name})
    assert provider.worker_name_from_request({"workerId": "A2WORKER"}) == "A2WORKER"
    assert provider.worker_name_from_request({"worker_id": "A2WORKER"}) is None


def test_the_page_shim_submits_to_mturk(db: MephistoDB) -> None:
    shim = MTurkProvider(db).wrap_crowd_source_js()
    assert shim == SandboxMTurkProvider(db).wrap_crowd_source_js()
    for name in ("getWorkerName", "getAssignmentId", "getAgentRegistration",
                 "handleSubmitToProvider", "getProviderURLParams"):
        assert f"function {name}(" in shim
    assert '"/mturk/externalSubmit"' in shim and "ASSIGNMENT_ID_NOT_AVAILABLE" in shim
    # its logic runs in node: packages/mephisto-task/test/mturk-shim.test.js


# -- requesters and credentials ------------------------------------------------------------------


def test_register_writes_a_private_aws_profile(db: MephistoDB, aws_files: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    aws_files.parent.mkdir(parents=True)
    aws_files.write_text("# my keys\n[default]\naws_access_key_id = AKIAUSERSOWN00000000\n"
                         "aws_secret_access_key = users/own/secret/key/000000\n"
                         "[researcher]\naws_access_key_id = AKIAOLDKEY0000000000\n"
                         "aws_session_token = stale\nregion = us-east-1\n")
    with caplog.at_level(logging.DEBUG):
        live = MTurkProvider.register_requester(db, "researcher", CREDENTIALS)
        sandbox = SandboxMTurkProvider.register_requester(db, "researcher", CREDENTIALS)
    assert (live.requester_name, live.provider_type) == ("researcher", "mturk")
    assert (sandbox.requester_name, sandbox.provider_type) == ("researcher_sandbox",
                                                                "mturk_sandbox")
    assert not live.is_sandbox() and sandbox.is_sandbox()
    assert stat.S_IMODE(os.stat(aws_files).st_mode) == 0o600
    text = aws_files.read_text()
    assert text.startswith("# my keys\n[default]\naws_access_key_id = AKIAUSERSOWN00000000\n")
    assert "AKIAOLDKEY" not in text and "stale" not in text and "region = us-east-1" in text
    session = boto3.Session(profile_name="researcher")  # the profile both requesters use
    credentials = session.get_credentials()
    assert (credentials.access_key, credentials.secret_key) == (KEY_ID, SECRET)
    assert SECRET not in caplog.text and KEY_ID not in caplog.text
    for row in db.find_provider_records("mturk", "run").values():
        assert SECRET not in str(row)


def test_register_refuses_what_is_not_a_pair_of_aws_keys(db: MephistoDB) -> None:
    cases = [
        {"access_key_id": KEY_ID},
        {**CREDENTIALS, "region": "us-east-1"},
        {**CREDENTIALS, "access_key_id": "not a key"},
        {**CREDENTIALS, "secret_access_key": "has\nnew line and spaces"},
    ]
    for credentials in cases:
        with pytest.raises(ProviderError) as refused:
            MTurkProvider.register_requester(db, "researcher", credentials)
        assert str(refused.value).startswith("mturk: ")
        assert "new line" not in str(refused.value)
    with pytest.raises(ProviderError, match="cannot name an AWS profile"):
        MTurkProvider.register_requester(db, "bad]name", CREDENTIALS)
    db.new_requester("taken", "mock")
    with pytest.raises(ProviderError, match="taken by a mock requester"):
        MTurkProvider.register_requester(db, "taken", CREDENTIALS)
    assert db.find_requesters(provider_type="mturk") == []


def test_an_unregistered_requester_is_told_how_to_register(db: MephistoDB,
                                                           fake: FakeMTurk) -> None:
    args = Args.of({"provider": {"requester_name": "nobody_sandbox"}})
    with pytest.raises(ProviderError) as missing:
        SandboxMTurkProvider(db, args).get_requester(db, args)
    assert "mephisto register mturk_sandbox name=nobody_sandbox" in str(missing.value)
    requester = Requester(db, db.new_requester("noprofile", "mturk"))  # keys never stored
    check = MTurkProvider(db).check_requester(requester)
    assert not check.ready and "no AWS credentials" in check.message
    assert "mephisto register mturk name=noprofile" in check.message


def test_the_sandbox_takes_the_requesters_name_without_suffix(db: MephistoDB,
                                                             fake: FakeMTurk) -> None:
    provider, requester = make_provider(db, name="me")
    args = Args.of({"provider": {"requester_name": "me"}})
    assert provider.get_requester(db, args) == requester


def test_clients_use_the_requesters_profile_and_endpoint(aws_files: Path) -> None:
    """The default factory: boto3 on the AWS profile; no call is made."""
    from mephisto.abstractions.providers.mturk.credentials import write_profile

    write_profile("researcher", KEY_ID, SECRET)
    sandbox = mturk_client.default_client_factory("researcher", True)
    live = mturk_client.default_client_factory("researcher", False)
    assert sandbox.meta.endpoint_url == SANDBOX_ENDPOINT
    assert live.meta.endpoint_url == "https://mturk-requester.us-east-1.amazonaws.com"
    assert sandbox._request_signer._credentials.access_key == KEY_ID


def test_a_missing_boto3_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(ProviderError, match=r'pip install "mephisto\[mturk\]"'):
        MTurkProvider.assert_task_args(Args.of({"task": TASK}), SharedTaskState())
    with pytest.raises(ProviderError, match=r"mturk_sandbox: .*pip install"):
        mturk_client.default_client_factory("researcher", True)


def test_task_arguments_mturk_would_refuse_are_config_errors() -> None:
    def check(task: dict[str, Any], shared: Any = None) -> None:
        MTurkProvider.assert_task_args(Args.of({"task": {**TASK, **task}}), shared)

    check({})
    with pytest.raises(ConfigError, match="task_reward"):
        check({"task_reward": 0.001})
    with pytest.raises(ConfigError, match="assignment_duration_in_seconds"):
        check({"assignment_duration_in_seconds": 10})
    with pytest.raises(ConfigError, match="task_lifetime_in_seconds"):
        check({"task_lifetime_in_seconds": 400 * 24 * 3600})
    fractional = SharedTaskState(qualifications=[
        make_qualification_dict("score", QUAL_GREATER_EQUAL, 2.5)])
    with pytest.raises(ConfigError, match="integer"):
        check({}, fractional)
    elsewhere = SharedTaskState(qualifications=[
        make_qualification_dict("score", QUAL_GREATER_EQUAL, 2.5, ["prolific"])])
    check({}, elsewhere)
    with pytest.raises(ConfigError, match="QualificationTypeId"):
        check({}, SharedTaskState(mturk_specific_qualifications=[{"Comparator": "Exists"}]))


def test_the_hit_type_comes_from_the_task_arguments() -> None:
    from mephisto.abstractions.providers.mturk.hits import hit_type_params

    params = hit_type_params(Args.of({**TASK, "task_tags": ["rating", "text"]}), [])
    assert params["Keywords"] == "rating,text" and params["Reward"] == "0.50"
    assert "Keywords" not in hit_type_params(Args.of({**TASK, "task_tags": ""}), [])
    with pytest.raises(ConfigError, match="task_title"):
        hit_type_params(Args.of({**TASK, "task_title": "???"}), [])

