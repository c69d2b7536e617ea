"""The crowd provider contract suite: what every provider must do, checked the same way.

Subclass `ProviderContract` in a test module, and give it the provider and a harness,
the crowd side of the provider: what its workers' pages send and what its service
recorded (a stub of the service's API for a real provider, nothing for the mock):

    class TestMockProvider(ProviderContract):
        @pytest.fixture
        def harness(self) -> CrowdHarness:
            return MockHarness()

Each test builds its own SQLite database. A test of a capability the provider does not
declare (`CrowdProvider.CAPABILITIES`) checks that the call raises `ProviderError`
instead of pretending.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mephisto.abstractions.crowd_provider import Capability, CrowdProvider
from mephisto.data_model.agent import Agent
from mephisto.data_model.requester import Requester
from mephisto.data_model.task_run import TaskRun
from mephisto.data_model.unit import Unit
from mephisto.data_model.worker import Worker
from mephisto.db import batch
from mephisto.db.database import MephistoDB
from mephisto.db.rows import new_agent_id
from mephisto.errors import ProviderError
from mephisto.operations import payments
from mephisto.utils.args import Args

__all__ = ["Arrival", "CrowdHarness", "ProviderContract"]

SERVER_URL = "https://tasks.example.org/"


@dataclass(frozen=True)
class Arrival:
    """A worker who took a published unit: what their page sends to `/request_agent`
    (`provider_data`) and on every request (`caller`), and the ids the provider must
    read from them."""

    provider_data: dict[str, Any]
    caller: dict[str, str]
    worker_name: str
    assignment_id: str | None


class CrowdHarness:
    """The crowd side of a provider under test. Override what the provider needs."""

    provider_class: type[CrowdProvider]
    #: credentials `register_requester` accepts (and `check_requester` finds ready)
    credentials: dict[str, str] = {}  # noqa: RUF012 - read-only, per class

    def provider_args(self, requester_name: str) -> dict[str, Any]:
        """The `mephisto.provider` section of a run config for this requester."""
        return {"_provider_type": self.provider_class.PROVIDER_TYPE,
                "requester_name": requester_name}

    def task_args(self) -> dict[str, Any]:
        """The `mephisto.task` section the provider's runs are given (title, reward, ...,
        what a real provider publishes). Default: none."""
        return {}

    def bad_credentials(self) -> dict[str, str] | None:
        """Credentials the service refuses (None: the provider takes none)."""
        return None

    def arrive(self, provider: CrowdProvider, unit_id: str, worker: str) -> Arrival:
        """`worker` takes the published unit `unit_id` (accepts the HIT, opens the
        study, follows the link)."""
        raise NotImplementedError

    def submit(self, provider: CrowdProvider, arrival: Arrival) -> None:
        """The worker's page submits back to the provider (MTurk's form, Prolific's
        completion redirect). Default: nothing to do."""

    def decision(self, provider: CrowdProvider, agent: Agent) -> str | None:
        """The provider's record of its review: approved, rejected, soft_rejected."""
        raise NotImplementedError

    def bonuses(self, provider: CrowdProvider, worker: Worker) -> list[float]:
        """Every bonus the provider paid this worker."""
        raise NotImplementedError

    def fail_next_bonus(self, provider: CrowdProvider, after_paying: bool) -> None:
        """Make the provider's next bonus call fail: before anything is paid, or after
        the service paid but before the answer arrived."""
        raise NotImplementedError

    def blocked(self, provider: CrowdProvider, worker: Worker, requester: Requester) -> bool:
        raise NotImplementedError

    def qualification(self, provider: CrowdProvider, worker: Worker, name: str) -> int | None:
        raise NotImplementedError

    def messages(self, provider: CrowdProvider, worker: Worker) -> list[str]:
        """The texts of the messages the provider delivered to this worker."""
        raise NotImplementedError


class ProviderContract:
    """The tests every provider passes. Subclasses provide the `harness` fixture."""

    @pytest.fixture
    def harness(self) -> CrowdHarness:
        raise NotImplementedError("a provider's contract tests provide a harness fixture")

    @pytest.fixture
    def db(self, tmp_path: Path) -> Iterator[MephistoDB]:
        database = MephistoDB(f"sqlite:///{tmp_path / 'provider-contract.db'}")
        yield database
        database.shutdown()

    @pytest.fixture
    def requester(self, db: MephistoDB, harness: CrowdHarness) -> Requester:
        return harness.provider_class.register_requester(db, "contract-requester",
                                                         harness.credentials)

    @pytest.fixture
    def provider(self, db: MephistoDB, harness: CrowdHarness,
                 requester: Requester) -> CrowdProvider:
        run_args: dict[str, Any] = {"provider": harness.provider_args(requester.requester_name)}
        if harness.task_args():
            run_args["task"] = harness.task_args()
        return harness.provider_class(db, Args.of(run_args))

    @pytest.fixture
    def task_run(self, db: MephistoDB, provider: CrowdProvider,
                 requester: Requester) -> TaskRun:
        task_id = db.new_task("contract-task", "mock")
        run_id = db.new_task_run(task_id, requester.db_id, "{}", str(provider.PROVIDER_TYPE),
                                 "mock", requester.is_sandbox())
        run = TaskRun(db, run_id)
        provider.setup_resources_for_task_run(run, provider.args, None, SERVER_URL)
        return run

    def _units(self, db: MephistoDB, task_run: TaskRun, n: int) -> list[Any]:
        created = batch.new_assignments_with_units(db, task_run.db_id, [{}] * n, 0.5,
                                                   status="launched")
        return [_Unit(unit_ids[0], assignment_id) for assignment_id, unit_ids in created]

    def _agent(self, db: MephistoDB, task_run: TaskRun, unit: Any, arrival: Arrival) -> Agent:
        worker = db.find_or_new_worker(arrival.worker_name, task_run.provider_type)
        agent_id = new_agent_id()
        batch.create_agents(db, [{
            "agent_id": agent_id, "worker_id": worker.db_id, "unit_id": unit.unit_id,
            "task_id": task_run.task_id, "task_run_id": task_run.db_id,
            "assignment_id": unit.assignment_id, "task_type": "mock",
            "provider_type": task_run.provider_type, "status": "in task",
            "state": {"provider_assignment_id": arrival.assignment_id},
        }])
        batch.complete_agents(db, [(agent_id, unit.unit_id, {"outputs": {"done": True}})])
        return Agent(db, agent_id)

    def _supported(self, provider: CrowdProvider, capability: Capability) -> bool:
        return capability in provider.CAPABILITIES

    # -- requesters -----------------------------------------------------------------------

    def test_a_registered_requester_is_ready(
        self, db: MephistoDB, provider: CrowdProvider, requester: Requester,
        harness: CrowdHarness,
    ) -> None:
        check = provider.check_requester(requester)
        assert check.ready, check.message
        if self._supported(provider, Capability.BALANCE):
            assert isinstance(check.balance, float)
        assert requester.provider_type == provider.PROVIDER_TYPE
        # no secret is ever written to the database
        stored = Path(db.engine.url.database or "").read_bytes()
        for value in harness.credentials.values():
            assert value.encode() not in stored, "a credential reached the database"

    def test_bad_credentials_are_reported_with_what_to_do(
        self, db: MephistoDB, harness: CrowdHarness
    ) -> None:
        bad = harness.bad_credentials()
        if bad is None:
            with pytest.raises(ProviderError):  # takes none: any given is refused
                harness.provider_class.register_requester(db, "nosy", {"key": "value"})
            return
        try:
            requester = harness.provider_class.register_requester(db, "refused", bad)
        except ProviderError as exc:
            assert str(harness.provider_class.PROVIDER_TYPE) in str(exc)
            return
        args = Args.of({"provider": harness.provider_args(requester.requester_name)})
        check = harness.provider_class(db, args).check_requester(requester)
        assert not check.ready and check.message

    # -- publishing -----------------------------------------------------------------------

    def test_published_units_are_listed_until_expired(
        self, db: MephistoDB, provider: CrowdProvider, task_run: TaskRun
    ) -> None:
        units = self._units(db, task_run, 3)
        provider.launch_units(units, SERVER_URL)
        provider.launch_units(units, SERVER_URL)  # again: a retried launch publishes nothing new
        assert provider.open_units(task_run) == [u.unit_id for u in units]
        provider.expire_units(units[:1])
        assert provider.open_units(task_run) == [u.unit_id for u in units[1:]]
        provider.expire_units(units[1:])
        assert provider.open_units(task_run) == []

    def test_open_units_are_found_again_after_a_crash(
        self, db: MephistoDB, provider: CrowdProvider, task_run: TaskRun,
        harness: CrowdHarness,
    ) -> None:
        units = self._units(db, task_run, 2)
        provider.launch_units(units, SERVER_URL)
        fresh = type(provider)(db, provider.args)  # a new process knows only the database
        assert fresh.open_units(task_run) == [u.unit_id for u in units]
        fresh.expire_units(units)
        assert provider.open_units(task_run) == []

    # -- workers arriving -----------------------------------------------------------------

    def test_a_worker_arriving_is_identified(
        self, db: MephistoDB, provider: CrowdProvider, task_run: TaskRun,
        harness: CrowdHarness,
    ) -> None:
        (unit,) = self._units(db, task_run, 1)
        provider.launch_units([unit], SERVER_URL)
        arrival = harness.arrive(provider, unit.unit_id, "contract-worker")
        assert provider.worker_name_from_registration(arrival.provider_data) == arrival.worker_name
        assert provider.assignment_from_registration(arrival.provider_data) == \
            arrival.assignment_id
        claimed = provider.worker_name_from_request(arrival.caller)
        assert claimed in (None, arrival.worker_name)
        assert "getWorkerName" in provider.wrap_crowd_source_js()

    # -- review -------------------------------------------------------------------------

    def test_review_decisions_reach_the_provider(
        self, db: MephistoDB, provider: CrowdProvider, task_run: TaskRun,
        harness: CrowdHarness,
    ) -> None:
        units = self._units(db, task_run, 3)
        provider.launch_units(units, SERVER_URL)
        agents = []
        for i, unit in enumerate(units):
            arrival = harness.arrive(provider, unit.unit_id, f"reviewed-{i}")
            harness.submit(provider, arrival)
            agents.append(self._agent(db, task_run, unit, arrival))
        provider.approve_work(agents[0], "thanks")
        provider.reject_work(agents[1], "the answer was empty")
        provider.soft_reject_work(agents[2], "kept, not used")
        assert harness.decision(provider, agents[0]) == "approved"
        assert harness.decision(provider, agents[1]) == "rejected"
        soft = "soft_rejected" if self._supported(provider, Capability.SOFT_REJECT) \
            else "approved"
        assert harness.decision(provider, agents[2]) == soft

    def test_a_bonus_is_paid_exactly_once_through_failures_and_retries(
        self, db: MephistoDB, provider: CrowdProvider, task_run: TaskRun,
        harness: CrowdHarness,
    ) -> None:
        (unit,) = self._units(db, task_run, 1)
        provider.launch_units([unit], SERVER_URL)
        arrival = harness.arrive(provider, unit.unit_id, "bonused")
        agent = self._agent(db, task_run, unit, arrival)
        worker = agent.get_worker()
        if not self._supported(provider, Capability.BONUS):
            with pytest.raises(ProviderError):
                payments.pay_bonus(db, provider, worker.db_id, 0.5, "thanks", unit.unit_id)
            return
        paid = payments.pay_bonus(db, provider, worker.db_id, 0.5, "thanks", unit.unit_id)
        assert paid.is_paid and paid.provider_ref
        assert harness.bonuses(provider, worker) == [0.5]
        for after_paying in (False, True):
            harness.fail_next_bonus(provider, after_paying)
            with pytest.raises(ProviderError):
                payments.pay_bonus(db, provider, worker.db_id, 0.25, "more", unit.unit_id)
            (failed,) = [p for p in db.find_payments(worker_id=worker.db_id, status="failed")]
            again = payments.retry_payment(db, provider, failed.db_id)
            assert again.is_paid and again.attempts == 2
            assert payments.retry_payment(db, provider, failed.db_id).attempts == 2  # done
        assert sorted(harness.bonuses(provider, worker)) == [0.25, 0.25, 0.5]

    def test_blocks_are_per_requester(
        self, db: MephistoDB, provider: CrowdProvider, task_run: TaskRun,
        requester: Requester, harness: CrowdHarness,
    ) -> None:
        (unit,) = self._units(db, task_run, 1)
        provider.launch_units([unit], SERVER_URL)
        arrival = harness.arrive(provider, unit.unit_id, "blockable")
        worker = self._agent(db, task_run, unit, arrival).get_worker()
        if not self._supported(provider, Capability.BLOCK):
            with pytest.raises(ProviderError):
                provider.block_worker(worker, requester, "spam")
            return
        provider.block_worker(worker, requester, "spam")
        assert harness.blocked(provider, worker, requester)
        provider.unblock_worker(worker, requester)
        assert not harness.blocked(provider, worker, requester)

    def test_qualifications_are_mirrored(
        self, db: MephistoDB, provider: CrowdProvider, task_run: TaskRun,
        harness: CrowdHarness,
    ) -> None:
        (unit,) = self._units(db, task_run, 1)
        provider.launch_units([unit], SERVER_URL)
        arrival = harness.arrive(provider, unit.unit_id, "qualified")
        worker = self._agent(db, task_run, unit, arrival).get_worker()
        if not self._supported(provider, Capability.QUALIFICATIONS):
            with pytest.raises(ProviderError):
                provider.grant_qualification(worker, "skilled", 1)
            return
        provider.grant_qualification(worker, "skilled", 3)
        assert harness.qualification(provider, worker, "skilled") == 3
        provider.revoke_qualification(worker, "skilled")
        assert harness.qualification(provider, worker, "skilled") is None

    def test_feedback_messages_reach_the_worker(
        self, db: MephistoDB, provider: CrowdProvider, task_run: TaskRun,
        harness: CrowdHarness,
    ) -> None:
        (unit,) = self._units(db, task_run, 1)
        provider.launch_units([unit], SERVER_URL)
        arrival = harness.arrive(provider, unit.unit_id, "messaged")
        harness.submit(provider, arrival)
        worker = self._agent(db, task_run, unit, arrival).get_worker()
        if not self._supported(provider, Capability.MESSAGES):
            with pytest.raises(ProviderError):
                provider.send_feedback_message(worker, Unit(db, unit.unit_id), "thanks")
            return
        provider.send_feedback_message(worker, Unit(db, unit.unit_id), "Clear answers, thanks!")
        assert harness.messages(provider, worker) == ["Clear answers, thanks!"]
        with pytest.raises(ProviderError):
            provider.send_feedback_message(worker, Unit(db, unit.unit_id), "   ")
        assert harness.messages(provider, worker) == ["Clear answers, thanks!"]


@dataclass(frozen=True)
class _Unit:
    """What `launch_units` and `expire_units` get: a unit's ids (like `UnitInfo`)."""

    unit_id: str
    assignment_id: str
