"""The mock provider passes the provider contract (its "service" is its own records)."""

from __future__ import annotations

from typing import Any

import pytest

from mephisto.abstractions.crowd_provider import CrowdProvider
from mephisto.abstractions.providers.mock import PROVIDER_TYPE, MockProvider
from mephisto.data_model.agent import Agent
from mephisto.data_model.requester import Requester
from mephisto.data_model.worker import Worker
from mephisto.errors import ProviderError
from mephisto.testing.provider_contract import Arrival, CrowdHarness, ProviderContract


class MockHarness(CrowdHarness):
    provider_class = MockProvider

    def __init__(self) -> None:
        self.failing: bool | None = None  # the next bonus fails (after paying: True)

    def arrive(self, provider: CrowdProvider, unit_id: str, worker: str) -> Arrival:
        assignment = f"mock-{unit_id}-{worker}"
        return Arrival({"worker_name": worker, "assignment_id": assignment,
                        "provider_type": PROVIDER_TYPE},
                       {"worker_id": worker, "assignment_id": assignment}, worker, assignment)

    def decision(self, provider: CrowdProvider, agent: Agent) -> str | None:
        record = provider.db.get_provider_record(PROVIDER_TYPE, "review", agent.db_id)
        return None if record is None else record["decision"]

    def bonuses(self, provider: CrowdProvider, worker: Worker) -> list[float]:
        records = provider.db.find_provider_records(PROVIDER_TYPE, "bonus").values()
        return [r["amount"] for r in records if r["worker_id"] == worker.db_id]

    def fail_next_bonus(self, provider: CrowdProvider, after_paying: bool) -> None:
        real = MockProvider.pay_bonus

        def failing(self_: MockProvider, payment: Any) -> str:
            provider.pay_bonus = real.__get__(provider)  # type: ignore[method-assign]
            if after_paying:
                real(self_, payment)
            raise ProviderError(PROVIDER_TYPE, "the bonus call timed out", retryable=True)

        provider.pay_bonus = failing.__get__(provider)  # type: ignore[method-assign]

    def blocked(self, provider: CrowdProvider, worker: Worker, requester: Requester) -> bool:
        key = f"{requester.db_id}:{worker.db_id}"
        return provider.db.get_provider_record(PROVIDER_TYPE, "block", key) is not None

    def qualification(self, provider: CrowdProvider, worker: Worker, name: str) -> int | None:
        record = provider.db.get_provider_record(PROVIDER_TYPE, "qualification",
                                                 f"{worker.db_id}:{name}")
        return None if record is None else int(record["value"])

    def messages(self, provider: CrowdProvider, worker: Worker) -> list[str]:
        return [str(value["text"]) for _key, value in
                provider.db.find_provider_records(PROVIDER_TYPE, "message").items()
                if value["worker_id"] == worker.db_id]


class TestMockProvider(ProviderContract):
    @pytest.fixture
    def harness(self) -> CrowdHarness:
        return MockHarness()
