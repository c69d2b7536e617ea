"""The `prolific` provider: the provider contract against a fake of Prolific's API
(`prolific_fake.py`, through respx), then what is Prolific's own: the study's
lifecycle and places, exactly-once bonuses, rejections, credentials, errors, the shim."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from prolific_fake import GOOD_KEY, FakeProlific

from mephisto.abstractions.crowd_provider import CrowdProvider
from mephisto.abstractions.providers.prolific import (
    PROVIDER_TYPE,
    ProlificProvider,
    bonuses,
    credentials,
)
from mephisto.abstractions.providers.prolific.groups import qualification_group_name
from mephisto.abstractions.providers.prolific.provider import rejection_message
from mephisto.data_model.agent import Agent
from mephisto.data_model.requester import Requester
from mephisto.data_model.task_run import TaskRun
from mephisto.data_model.worker import Worker
from mephisto.db import batch
from mephisto.db.database import MephistoDB
from mephisto.db.rows import new_agent_id
from mephisto.errors import ConfigError, MalformedRequest, ProviderError
from mephisto.operations import payments
from mephisto.testing.provider_contract import Arrival, CrowdHarness, ProviderContract
from mephisto.utils.args import Args

SERVER_URL = "https://tasks.example.org/"
PAY_PATH = r"/bulk-bonus-payments/\w+/pay/$"


def participant_id(worker: str) -> str:
    return hashlib.sha1(worker.encode()).hexdigest()[:24]


class ProlificHarness(CrowdHarness):
    """Prolific's side: the fake service, and participants who follow the study's URL."""

    provider_class = ProlificProvider
    credentials = {"api_key": GOOD_KEY}  # noqa: RUF012 - read-only

    def __init__(self, fake: FakeProlific) -> None:
        self.fake = fake
        self.pages: dict[str, dict[str, str]] = {}  # submission id -> the page's URL params

    def bad_credentials(self) -> dict[str, str]:
        return {"api_key": "revoked-token-0000"}

    def arrive(self, provider: CrowdProvider, unit_id: str, worker: str) -> Arrival:
        submission = self.fake.start(self.fake.the_study()["id"], participant_id(worker))
        page = urlparse(self.fake.study_page(submission["id"]))
        params = {k: v[0] for k, v in parse_qs(page.query).items()}
        self.pages[submission["id"]] = params
        pid, session, study = params["PROLIFIC_PID"], params["SESSION_ID"], params["STUDY_ID"]
        provider_data = {  # what the shim's getAgentRegistration() sends
            "worker_name": pid, "assignment_id": session,
            "agent_registration_id": f"{session}-{pid}", "study_id": study,
            "provider_type": PROVIDER_TYPE,
        }
        caller = {"PROLIFIC_PID": pid, "SESSION_ID": session, "STUDY_ID": study}
        return Arrival(provider_data, caller, pid, session)

    def submit(self, provider: CrowdProvider, arrival: Arrival) -> None:
        """The shim's handleSubmitToProvider: to the completion URL with `cc`."""
        assert arrival.assignment_id is not None
        self.fake.complete(arrival.assignment_id, self.pages[arrival.assignment_id]["cc"])

    def decision(self, provider: CrowdProvider, agent: Agent) -> str | None:
        state = provider.db.get_agent(agent.db_id)["state"]
        status = self.fake.submissions[state["provider_assignment_id"]]["status"]
        return {"APPROVED": "approved", "REJECTED": "rejected"}.get(status)

    def bonuses(self, provider: CrowdProvider, worker: Worker) -> list[float]:
        return self.fake.bonuses_of(worker.worker_name)

    def fail_next_bonus(self, provider: CrowdProvider, after_paying: bool) -> None:
        self.fake.fail_next("POST", PAY_PATH, "timeout" if after_paying else "connect")

    def blocked(self, provider: CrowdProvider, worker: Worker, requester: Requester) -> bool:
        """In a group that the requester's study names in its blocklist."""
        groups = [g for f in self.fake.the_study()["filters"]
                  if f["filter_id"] == "participant_group_blocklist"
                  for g in f["selected_values"]]
        return any(worker.worker_name in self.fake.members[g] for g in groups)

    def qualification(self, provider: CrowdProvider, worker: Worker, name: str) -> int | None:
        """A member of the qualification's group; the value is ours (groups hold none)."""
        group = self.fake.group_named(qualification_group_name(name))
        if group is None or worker.worker_name not in self.fake.members[group["id"]]:
            return None
        return provider.groups.granted(worker.db_id, name)  # type: ignore[attr-defined]

    def messages(self, provider: CrowdProvider, worker: Worker) -> list[str]:
        return [m["body"] for m in self.fake.messages if m["recipient_id"] == worker.worker_name]


@pytest.fixture
def fake() -> Iterator[FakeProlific]:
    service = FakeProlific()
    with service.running():
        yield service
    assert not service.unknown, f"calls the fake does not know: {service.unknown}"


class TestProlificProvider(ProviderContract):
    @pytest.fixture
    def harness(self, fake: FakeProlific) -> CrowdHarness:
        return ProlificHarness(fake)


# -- helpers of the tests below ---------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Iterator[MephistoDB]:
    database = MephistoDB(f"sqlite:///{tmp_path / 'prolific.db'}")
    yield database
    database.shutdown()


class Run:
    """A requester, a provider and a task run, with units to launch."""

    def __init__(self, db: MephistoDB, fake: FakeProlific, **provider: Any) -> None:
        self.db, self.fake = db, fake
        self.requester = ProlificProvider.register_requester(db, "lab", {"api_key": GOOD_KEY})
        self.args = Args.of({
            "provider": {"_provider_type": PROVIDER_TYPE, "requester_name": "lab", **provider},
            "task": {"task_title": "Label images", "task_description": "Say what you see.",
                     "task_reward": 0.75, "assignment_duration_in_seconds": 1800,
                     "maximum_units_per_worker": 0},
        })
        self.provider = ProlificProvider(db, self.args)
        task_id = db.new_task("prolific-task", "mock")
        run_id = db.new_task_run(task_id, self.requester.db_id, "{}", PROVIDER_TYPE, "mock",
                                 False)
        self.task_run = TaskRun(db, run_id)
        self.provider.setup_resources_for_task_run(self.task_run, self.args, None, SERVER_URL)

    def units(self, n: int) -> list[Any]:
        created = batch.new_assignments_with_units(self.db, self.task_run.db_id, [{}] * n,
                                                   0.75, status="launched")
        return [_Unit(ids[0], assignment) for assignment, ids in created]

    def study(self) -> dict[str, Any]:
        return self.fake.the_study()

    def record(self) -> dict[str, Any]:
        found = self.provider.studies.record(self.task_run.db_id)
        assert found is not None
        return found

    def worker_done(self, unit: Any, worker: str) -> Agent:
        """A participant takes a place, does `unit` and returns to Prolific."""
        submission = self.fake.start(self.study()["id"], participant_id(worker))
        self.fake.complete(submission["id"], self.record()["completion_code"])
        db_worker = self.db.find_or_new_worker(participant_id(worker), PROVIDER_TYPE)
        agent_id = new_agent_id()
        batch.create_agents(self.db, [{
            "agent_id": agent_id, "worker_id": db_worker.db_id, "unit_id": unit.unit_id,
            "task_id": self.task_run.task_id, "task_run_id": self.task_run.db_id,
            "assignment_id": unit.assignment_id, "task_type": "mock",
            "provider_type": PROVIDER_TYPE, "status": "in task",
            "state": {"provider_assignment_id": submission["id"]},
        }])
        batch.complete_agents(self.db, [(agent_id, unit.unit_id, {"outputs": {"ok": 1}})])
        return Agent(self.db, agent_id)


class _Unit:
    def __init__(self, unit_id: str, assignment_id: str) -> None:
        self.unit_id, self.assignment_id = unit_id, assignment_id


def calls(fake: FakeProlific, method: str, pattern: str) -> list[Any]:
    """The bodies of the calls made to Prolific whose path matches `pattern`."""
    return [body for m, path, body in fake.calls if m == method and re.search(pattern, path)]


# -- the study ----------------------------------------------------------------------------


def test_a_study_is_created_as_a_draft_with_the_documented_fields_then_published(
    db: MephistoDB, fake: FakeProlific
) -> None:
    run = Run(db, fake, prolific_filters=[{"filter_id": "age",
                                           "selected_range": {"lower": 18, "upper": 60}}])
    run.provider.launch_units(run.units(3), SERVER_URL)
    (created,) = calls(fake, "POST", r"/studies/$")
    assert created["total_available_places"] == 3
    assert created["reward"] == 75  # task_reward 0.75 in Prolific's minor units
    assert created["estimated_completion_time"] == 5
    assert created["maximum_allowed_time"] == 30  # assignment_duration_in_seconds
    assert created["submissions_config"] == {"max_submissions_per_participant": -1}
    assert created["prolific_id_option"] == "url_parameters"
    code = run.record()["completion_code"]
    assert created["completion_codes"] == [{"code": code, "code_type": "COMPLETED",
                                            "actions": [{"action": "MANUALLY_REVIEW"}]}]
    assert created["external_study_url"] == (
        SERVER_URL + "?PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}"
        "&SESSION_ID={{%SESSION_ID%}}&cc=" + code)
    block = fake.group_named("Mephisto: blocked by lab")
    assert block is not None
    assert created["filters"] == [
        {"filter_id": "age", "selected_range": {"lower": 18, "upper": 60}},
        {"filter_id": "participant_group_blocklist", "selected_values": [block["id"]]},
    ]
    assert calls(fake, "POST", r"/transition/$") == [{"action": "PUBLISH"}]
    assert run.study()["status"] == "ACTIVE"
    assert run.record()["status"] == "ACTIVE"


def test_more_units_raise_the_places_and_a_retried_launch_adds_none(
    db: MephistoDB, fake: FakeProlific
) -> None:
    run = Run(db, fake)
    first, second = run.units(2), run.units(3)
    run.provider.launch_units(first, SERVER_URL)
    fake.fail_next("PATCH", r"/studies/\w+/$", "500")
    with pytest.raises(ProviderError) as failed:
        run.provider.launch_units(second, SERVER_URL)
    assert failed.value.retryable and run.study()["total_available_places"] == 2
    run.provider.launch_units(second, SERVER_URL)  # the launcher's retry
    run.provider.launch_units(first + second, SERVER_URL)  # and once more: nothing new
    assert run.study()["total_available_places"] == 5
    assert calls(fake, "PATCH", r"/studies/\w+/$")[-1] == {"total_available_places": 5}
    assert run.provider.open_units(run.task_run) == [u.unit_id for u in first + second]


def test_a_study_whose_places_ran_out_is_taken_up_again_by_new_units(
    db: MephistoDB, fake: FakeProlific
) -> None:
    run = Run(db, fake)
    (unit,) = run.units(1)
    run.provider.launch_units([unit], SERVER_URL)
    run.worker_done(unit, "alice")
    assert run.study()["status"] == "AWAITING REVIEW"  # Prolific: no place left, all done
    assert run.provider.open_units(run.task_run) == []  # nothing is open on Prolific
    (more,) = run.units(1)
    ProlificProvider(db, run.args).launch_units([more], SERVER_URL)  # a new process
    assert run.study()["status"] == "ACTIVE" and run.study()["total_available_places"] == 2
    assert run.provider.open_units(run.task_run) == [unit.unit_id, more.unit_id]


def test_the_study_pauses_when_no_unit_is_open_and_starts_again_with_new_units(
    db: MephistoDB, fake: FakeProlific
) -> None:
    run = Run(db, fake)
    units = run.units(3)
    run.provider.launch_units(units, SERVER_URL)
    run.provider.expire_units(units[:1])
    assert run.study()["status"] == "ACTIVE" and run.record()["spare"] == 1
    (extra,) = run.units(1)
    run.provider.launch_units([extra], SERVER_URL)  # takes the spare place: no new one
    assert run.study()["total_available_places"] == 3
    run.provider.expire_units(units[1:] + [extra])  # the run closes: nothing open
    assert run.study()["status"] == "PAUSED" and run.record()["spare"] == 3
    assert calls(fake, "POST", r"/transition/$")[-1] == {"action": "PAUSE"}
    run.provider.expire_units(units)  # again: nothing more to do
    assert len(calls(fake, "POST", r"/transition/$")) == 2
    fresh = ProlificProvider(db, run.args)  # resumed in a new process: relaunched
    fresh.launch_units(units[:2], SERVER_URL)
    study = run.study()
    assert study["status"] == "ACTIVE" and study["total_available_places"] == 3
    assert calls(fake, "POST", r"/transition/$")[-1] == {"action": "START"}
    assert fresh.open_units(run.task_run) == [u.unit_id for u in units[:2]]


def test_cleanup_pauses_an_interrupted_run_and_stops_a_completed_one(
    db: MephistoDB, fake: FakeProlific
) -> None:
    run = Run(db, fake)
    units = run.units(2)
    run.provider.launch_units(units, SERVER_URL)
    run.provider.cleanup_resources_from_task_run(run.task_run, SERVER_URL)  # Ctrl-C
    assert run.study()["status"] == "PAUSED"
    assert run.provider.open_units(run.task_run) == []
    run.provider.launch_units(units, SERVER_URL)  # resumed
    assert run.study()["status"] == "ACTIVE"
    db.update_task_run(run.task_run.db_id, is_completed=True)
    run.provider.cleanup_resources_from_task_run(run.task_run, SERVER_URL)
    assert run.study()["status"] == "AWAITING REVIEW" and run.study()["stopped"]
    assert calls(fake, "POST", r"/transition/$")[-1] == {"action": "STOP"}
    assert run.provider.open_units(run.task_run) == []
    with pytest.raises(ProviderError, match="final"):
        run.provider.launch_units(units, SERVER_URL)


def test_a_lost_creation_answer_makes_no_second_study(
    db: MephistoDB, fake: FakeProlific
) -> None:
    run = Run(db, fake)
    units = run.units(2)
    fake.fail_next("POST", r"/studies/$", "timeout")  # created; the answer is lost
    with pytest.raises(ProviderError) as lost:
        run.provider.launch_units(units, SERVER_URL)
    assert lost.value.retryable
    run.provider.launch_units(units, SERVER_URL)
    assert len(fake.studies) == 1 and run.study()["status"] == "ACTIVE"
    assert run.record()["study_id"] == run.study()["id"]


def test_the_study_uses_a_named_project_made_once(db: MephistoDB, fake: FakeProlific) -> None:
    run = Run(db, fake, prolific_project_name="Mephisto runs")
    run.provider.launch_units(run.units(1), SERVER_URL)
    (project,) = fake.projects.values()
    assert project["title"] == "Mephisto runs" and run.study()["project"] == project["id"]


# -- review and bonuses -------------------------------------------------------------------


def test_a_rejection_carries_the_category_and_a_message_of_100_characters(
    db: MephistoDB, fake: FakeProlific
) -> None:
    run = Run(db, fake, prolific_rejection_category="LOW_EFFORT")
    units = run.units(2)
    run.provider.launch_units(units, SERVER_URL)
    agent = run.worker_done(units[0], "bob")
    run.provider.reject_work(agent, "the answer was empty")
    (body,) = calls(fake, "POST", r"/submissions/\w+/transition/$")
    assert body["action"] == "REJECT" and body["rejection_category"] == "LOW_EFFORT"
    assert body["message"].startswith("the answer was empty") and len(body["message"]) >= 100
    other = run.worker_done(units[1], "carol")
    run.provider.reject_with_category(other, "failed the attention check", "FAILED_CHECK")
    assert calls(fake, "POST", r"/submissions/\w+/transition/$")[-1]["rejection_category"] \
        == "FAILED_CHECK"
    with pytest.raises(ProviderError, match="rejection category"):
        run.provider.reject_with_category(other, "x", "RUDE")
    assert len(rejection_message("")) >= 100


def test_a_soft_rejection_approves(db: MephistoDB, fake: FakeProlific) -> None:
    run = Run(db, fake)
    (unit,) = run.units(1)
    run.provider.launch_units([unit], SERVER_URL)
    agent = run.worker_done(unit, "dan")
    run.provider.soft_reject_work(agent, "kept, not used")
    assert calls(fake, "POST", r"/submissions/\w+/transition/$") == [{"action": "APPROVE"}]


def _bonus_run(db: MephistoDB, fake: FakeProlific) -> tuple[Run, Agent]:
    run = Run(db, fake)
    (unit,) = run.units(1)
    run.provider.launch_units([unit], SERVER_URL)
    return run, run.worker_done(unit, "erin")


def test_a_bonus_retry_pays_the_bonus_it_created(db: MephistoDB, fake: FakeProlific) -> None:
    run, agent = _bonus_run(db, fake)
    fake.fail_next("POST", PAY_PATH, "400")  # refused: nothing paid
    with pytest.raises(ProviderError, match="Insufficient balance"):
        payments.pay_bonus(db, run.provider, agent.worker_id, 1.5, "great", agent.unit_id)
    (failed,) = db.find_payments(status="failed")
    paid = payments.retry_payment(db, run.provider, failed.db_id)
    (bonus,) = fake.bulk_bonuses.values()  # one set up, paid once
    assert bonus["times_paid"] == 1 and paid.provider_ref == bonus["id"]
    assert calls(fake, "POST", r"/submissions/bonus-payments/$") == [
        {"study_id": run.study()["id"], "csv_bonuses": f"{bonus['payments'][0][0]},1.50\n"}]
    assert fake.bonuses_of(participant_id("erin")) == [1.5]


def test_a_bonus_whose_pay_answer_was_lost_is_not_sent_again_before_prolific_shows_it(
    db: MephistoDB, fake: FakeProlific, monkeypatch: pytest.MonkeyPatch
) -> None:
    run, agent = _bonus_run(db, fake)
    fake.pay_asynchronously = True  # Prolific pays "in the following minutes"
    fake.fail_next("POST", PAY_PATH, "timeout")
    with pytest.raises(ProviderError):
        payments.pay_bonus(db, run.provider, agent.worker_id, 0.4, "thanks", agent.unit_id)
    (failed,) = db.find_payments(status="failed")
    with pytest.raises(ProviderError, match="may have been paid") as wait:
        payments.retry_payment(db, run.provider, failed.db_id)
    assert wait.value.retryable
    fake.settle()
    assert payments.retry_payment(db, run.provider, failed.db_id).is_paid
    (bonus,) = fake.bulk_bonuses.values()
    assert bonus["times_paid"] == 1 and fake.bonuses_of(participant_id("erin")) == [0.4]
    # a pay call that failed with a 5xx Prolific never did is sent again once settled
    fake.fail_next("POST", PAY_PATH, "500")
    with pytest.raises(ProviderError, match="HTTP 500"):
        payments.pay_bonus(db, run.provider, agent.worker_id, 0.4, "again", agent.unit_id)
    (failed,) = db.find_payments(status="failed")
    with pytest.raises(ProviderError, match="may have been paid"):
        payments.retry_payment(db, run.provider, failed.db_id)
    later = run.provider.bonuses.clock() + bonuses.SETTLE_SECONDS + 1
    monkeypatch.setattr(run.provider.bonuses, "clock", lambda: later)
    fake.pay_asynchronously = False
    assert payments.retry_payment(db, run.provider, failed.db_id).is_paid
    second = [b for b in fake.bulk_bonuses.values() if b is not bonus]
    assert [b["times_paid"] for b in second] == [1]
    assert fake.bonuses_of(participant_id("erin")) == [0.4, 0.4]


def test_a_bonus_needs_a_submission(db: MephistoDB, fake: FakeProlific) -> None:
    run = Run(db, fake)
    worker = db.find_or_new_worker(participant_id("nobody"), PROVIDER_TYPE)
    with pytest.raises(ProviderError, match="on a submission"):
        payments.pay_bonus(db, run.provider, worker.db_id, 1.0, "hi",
                           requester_id=run.requester.db_id)
    assert fake.bulk_bonuses == {}


# -- credentials --------------------------------------------------------------------------


def test_the_token_is_kept_in_a_private_file_never_in_the_database_or_logs(
    db: MephistoDB, fake: FakeProlific, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    run = Run(db, fake)
    run.provider.launch_units(run.units(1), SERVER_URL)
    path = credentials.credentials_path()
    assert path.is_relative_to(Path(os.environ["MEPHISTO_HOME"]))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert json.loads(path.read_text()) == {"lab": GOOD_KEY}
    assert GOOD_KEY.encode() not in Path(db.engine.url.database or "").read_bytes()
    assert GOOD_KEY not in caplog.text
    path.chmod(0o644)
    with pytest.raises(ProviderError, match="chmod 600"):
        credentials.load_api_key("lab")


def test_a_requester_can_use_the_environment_token(
    db: MephistoDB, fake: FakeProlific, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ProviderError, match="mephisto register prolific"):
        ProlificProvider.register_requester(db, "env-lab", {})
    monkeypatch.setenv("PROLIFIC_API_KEY", GOOD_KEY)
    requester = ProlificProvider.register_requester(db, "env-lab", {})
    assert not credentials.credentials_path().exists()
    args = Args.of({"provider": {"requester_name": "env-lab"}})
    assert ProlificProvider(db, args).check_requester(requester).ready
    with pytest.raises(ProviderError, match="unknown credentials"):
        ProlificProvider.register_requester(db, "x", {"api_key": GOOD_KEY, "secret": "s"})
    with pytest.raises(ProviderError, match="not a Prolific API token"):
        ProlificProvider.register_requester(db, "x", {"api_key": "two words"})


def test_a_refused_token_is_not_ready_and_says_how_to_fix_it(
    db: MephistoDB, fake: FakeProlific
) -> None:
    requester = ProlificProvider.register_requester(db, "stale", {"api_key": "old-token-1"})
    check = ProlificProvider(db, None).check_requester(requester)
    assert not check.ready and check.balance is None
    assert check.message.startswith("prolific:")
    assert "mephisto register prolific name=stale api_key=" in check.message


def test_a_ready_requester_reports_the_workspace_balance(
    db: MephistoDB, fake: FakeProlific
) -> None:
    requester = ProlificProvider.register_requester(db, "lab", {"api_key": GOOD_KEY})
    check = ProlificProvider(db, None).check_requester(requester)
    assert check.ready and check.balance == 1250.0 and "1250.00 GBP" in check.message
    missing = ProlificProvider(db, Args.of({"provider": {"prolific_workspace_name": "Nope"}}))
    check = missing.check_requester(requester)
    assert not check.ready and "'My Workspace'" in check.message


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "retryable", "words"), [
    ("500", True, "HTTP 500"),
    ("timeout", True, "no answer within"),
    ("connect", True, "cannot reach"),
])
def test_failures_of_prolific_become_provider_errors(
    db: MephistoDB, fake: FakeProlific, mode: str, retryable: bool, words: str
) -> None:
    run = Run(db, fake)
    units = run.units(1)
    run.provider.launch_units(units, SERVER_URL)
    fake.fail_next("GET", r"/studies/\w+/$", mode)
    with pytest.raises(ProviderError) as exc:
        run.provider.open_units(run.task_run)
    assert exc.value.provider_type == PROVIDER_TYPE and exc.value.retryable is retryable
    assert str(exc.value).startswith("prolific: GET /api/v1/studies/") and words in str(exc.value)
    assert run.provider.open_units(run.task_run) == [units[0].unit_id]  # records unharmed


def test_a_refusal_names_prolifics_reason_and_is_not_retryable(
    db: MephistoDB, fake: FakeProlific
) -> None:
    fake.balance_cents = 10  # publishing needs the money for every place
    run = Run(db, fake)
    units = run.units(2)
    with pytest.raises(ProviderError, match="Insufficient balance") as refused:
        run.provider.launch_units(units, SERVER_URL)
    assert not refused.value.retryable and "HTTP 400" in str(refused.value)
    fake.balance_cents = 10_000
    run.provider.launch_units(units, SERVER_URL)  # after a top-up, the retry publishes
    assert run.study()["status"] == "ACTIVE" and len(fake.studies) == 1


def test_config_that_cannot_work_is_refused() -> None:
    base = {"task": {}, "blueprint": {}}
    with pytest.raises(ConfigError, match="prolific_external_study_url"):
        ProlificProvider.assert_task_args(Args.of({
            **base, "architect": {"_architect_type": "local"}, "provider": {}}), None)
    ProlificProvider.assert_task_args(Args.of({
        **base, "architect": {"_architect_type": "local"},
        "provider": {"prolific_external_study_url": "https://tunnel.example.org/"}}), None)
    with pytest.raises(ConfigError, match="prolific_rejection_category"):
        ProlificProvider.assert_task_args(Args.of({
            **base, "architect": {}, "provider": {"prolific_rejection_category": "MEH"}}), None)


# -- workers arriving ---------------------------------------------------------------------


def test_worker_identity_is_read_from_prolifics_parameters(db: MephistoDB) -> None:
    provider = ProlificProvider(db, None)
    data = {"worker_name": "5f0c" * 6, "assignment_id": "6a1d" * 6, "study_id": "s"}
    assert provider.worker_name_from_registration(data) == "5f0c" * 6
    assert provider.assignment_from_registration(data) == "6a1d" * 6
    assert provider.worker_name_from_request({"PROLIFIC_PID": "abc", "SESSION_ID": "x"}) == "abc"
    assert provider.worker_name_from_request({"worker_id": "abc"}) is None
    for bad in (None, "", "a b", "x" * 65, "<script>"):
        with pytest.raises(MalformedRequest):
            provider.worker_name_from_registration({"worker_name": bad})


def test_blocks_and_allowlisted_qualifications_are_groups_the_study_names(
    db: MephistoDB, fake: FakeProlific
) -> None:
    run = Run(db, fake, prolific_allowlist_qualifications=["trusted"])
    run.provider.launch_units(run.units(1), SERVER_URL)
    trusted = fake.group_named(qualification_group_name("trusted"))
    assert trusted is not None
    assert {"filter_id": "participant_group_allowlist", "selected_values": [trusted["id"]]} \
        in run.study()["filters"]
    worker = db.find_or_new_worker(participant_id("fay"), PROVIDER_TYPE)
    run.provider.grant_qualification(worker, "trusted", 2)
    run.provider.grant_qualification(worker, "trusted", 2)  # again: one member
    assert fake.members[trusted["id"]] == [worker.worker_name]
    run.provider.grant_qualification(worker, "trusted", 0)  # a value of 0 is no grant
    assert fake.members[trusted["id"]] == []
    run.provider.block_worker(worker, run.requester, "spam")
    block = fake.group_named("Mephisto: blocked by lab")
    assert block is not None and fake.members[block["id"]] == [worker.worker_name]
    assert len(fake.groups) == 2  # made once each, found in the records after


# -- the page shim ------------------------------------------------------------------------

_SHIM_DRIVER = r"""
const fs = require("fs"), vm = require("vm");
const window = {location: {search: process.argv[2], href: "https://tasks.example.org/"}};
const context = {window, URLSearchParams, console, encodeURIComponent};
vm.createContext(context);
vm.runInContext(fs.readFileSync(process.argv[1], "utf8"), context);
const out = vm.runInContext(`({
  worker: getWorkerName(), assignment: getAssignmentId(),
  registration: getAgentRegistration(), params: getProviderURLParams(),
  submitted: handleSubmitToProvider({answer: 1}),
})`, context);
out.href = window.location.href;
console.log(JSON.stringify(out));
"""


def _run_shim(tmp_path: Path, db: MephistoDB, search: str) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    shim = tmp_path / "wrap_crowd_source.js"
    shim.write_text(ProlificProvider(db, None).wrap_crowd_source_js())
    done = subprocess.run([node, "-e", _SHIM_DRIVER, str(shim), search], capture_output=True,
                          text=True, timeout=30, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_the_shim_reads_prolifics_parameters_and_returns_to_prolific(
    tmp_path: Path, db: MephistoDB
) -> None:
    out = _run_shim(tmp_path, db, "?PROLIFIC_PID=pid1&STUDY_ID=st1&SESSION_ID=se1&cc=CODE42")
    assert out["worker"] == "pid1" and out["assignment"] == "se1"
    assert out["registration"] == {"worker_name": "pid1", "assignment_id": "se1",
                                   "agent_registration_id": "se1-pid1", "study_id": "st1",
                                   "provider_type": "prolific"}
    assert out["params"] == {"PROLIFIC_PID": "pid1", "SESSION_ID": "se1", "STUDY_ID": "st1"}
    assert out["submitted"] is True
    assert out["href"] == "https://app.prolific.com/submissions/complete?cc=CODE42"


def test_the_shim_previews_without_prolifics_parameters(
    tmp_path: Path, db: MephistoDB
) -> None:
    out = _run_shim(tmp_path, db, "")
    assert out["worker"] is None and out["assignment"] is None and out["params"] is None
    assert out["submitted"] is False and out["href"] == "https://tasks.example.org/"


def test_the_type_is_built_in_and_importing_it_needs_no_httpx() -> None:
    from mephisto.operations.registry import get_crowd_provider_from_type

    assert get_crowd_provider_from_type("prolific") is ProlificProvider
    code = ("import sys; import mephisto.abstractions.providers.prolific; "
            "assert 'httpx' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def test_a_run_config_with_the_prolific_provider_resolves() -> None:
    from mephisto.operations.hydra_config import resolve_run_config

    config: dict[str, Any] = {
        "blueprint": {"_blueprint_type": "mock"},
        "architect": {"_architect_type": "local"},
        "provider": {"_provider_type": "prolific", "requester_name": "lab"},
        "task": {"task_title": "t", "task_description": "d", "task_reward": 0.5,
                 "task_tags": "x"},
    }
    with pytest.raises(ConfigError, match="prolific_external_study_url"):
        resolve_run_config(config)
    config["provider"]["prolific_external_study_url"] = "https://tunnel.example.org/"
    config["provider"]["prolific_filters"] = [{"filter_id": "age",
                                               "selected_range": {"lower": 18}}]
    resolved = resolve_run_config(config)
    assert resolved.provider is ProlificProvider
    assert resolved.args.provider.prolific_workspace_name == "My Workspace"
    assert resolved.args.provider.prolific_filters[0]["filter_id"] == "age"


# -- end to end ---------------------------------------------------------------------------


def _post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    """A request of the page to the task server (urllib: respx only mocks httpx)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def test_a_participant_from_prolific_works_through_the_task_server(
    operator: Any, mephisto_db: MephistoDB, task_html: Path, fake: FakeProlific
) -> None:
    from urllib.parse import urlencode

    from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState
    from mephisto.testing.fixtures import static_run_config

    ProlificProvider.register_requester(mephisto_db, "lab", {"api_key": GOOD_KEY})
    config = static_run_config(task_html)
    config["provider"] = {"_provider_type": PROVIDER_TYPE, "requester_name": "lab",
                          "prolific_external_study_url": "https://tasks.example.org/"}
    run_id = operator.launch_task_run(config, SharedStaticTaskState(
        static_task_data=[{"text": "a cat"}]))
    url = operator.get_running_task_runs()[run_id].url
    study = fake.the_study()
    assert study["status"] == "ACTIVE" and study["total_available_places"] == 1
    assert study["reward"] == 10  # task_reward 0.1

    submission = fake.start(study["id"], participant_id("gus"))
    page = {k: v[0] for k, v in parse_qs(urlparse(fake.study_page(submission["id"])).query).items()}
    mine = urlencode({k: page[k] for k in ("PROLIFIC_PID", "SESSION_ID", "STUDY_ID")})
    status, answer = _post(f"{url}request_agent?{mine}", {"provider_data": {
        "worker_name": page["PROLIFIC_PID"], "assignment_id": page["SESSION_ID"],
        "agent_registration_id": f"{page['SESSION_ID']}-{page['PROLIFIC_PID']}",
        "study_id": page["STUDY_ID"], "provider_type": PROVIDER_TYPE,
    }, "client_timestamp": 1.0})
    assert status == 200, answer
    agent_id = answer["data"]["agent_id"]
    final = {"USED_AGENT_ID": agent_id, "final_data": {"label": "cat"}, "client_timestamp": 2.0}
    other = urlencode({"PROLIFIC_PID": participant_id("mallory"), "SESSION_ID": "x" * 24})
    assert _post(f"{url}submit_task?{other}", final)[0] == 403  # not their agent
    assert _post(f"{url}submit_task?{mine}", final)[0] == 200
    fake.complete(submission["id"], page["cc"])  # the shim's redirect to Prolific

    operator.wait_for_runs_then_shutdown(skip_input=True, log_rate=1)
    assert fake.the_study()["status"] == "AWAITING REVIEW"
    provider = ProlificProvider(mephisto_db, Args.of({"provider": config["provider"]}))
    agent = Agent(mephisto_db, agent_id)
    assert agent.get_worker().worker_name == participant_id("gus")
    provider.approve_work(agent)
    assert fake.submissions[submission["id"]]["status"] == "APPROVED"
    payments.pay_bonus(mephisto_db, provider, agent.worker_id, 0.2, "tidy", agent.unit_id)
    assert fake.bonuses_of(participant_id("gus")) == [0.2]
