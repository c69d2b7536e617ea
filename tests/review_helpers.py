"""Shared by the review app's tests: data built with the mock provider, the app served
by a real uvicorn server, and a count of every call the mock provider receives."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from mephisto.abstractions.providers.mock import MockProvider
from mephisto.db.database import MephistoDB
from mephisto.review.app import create_app
from mephisto.review.server import ReviewServer
from mephisto.testing.db_contract import Run

TOKEN = "test-token-0123456789abcdef"

PROVIDER_CALLS = ("approve_work", "reject_work", "soft_reject_work", "pay_bonus",
                  "block_worker", "unblock_worker", "grant_qualification",
                  "revoke_qualification", "send_feedback_message")


def submitted(db: MephistoDB, run: Run, workers: list[str]) -> list[str]:
    """One submitted unit per worker name, with inputs, outputs and times."""
    units = run.units(len(workers))
    for i, (unit_id, name) in enumerate(zip(units, workers, strict=True)):
        agent = run.agent(unit_id, name)
        db.update_agent(agent, status="completed", state={
            "inputs": {"text": f"item {i}"}, "outputs": {"answer": i},
            "times": {"task_start": 100.0, "task_end": 100.0 + 10 * (i + 1)}})
    return units


def count_provider_calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Every call to the mock provider's review methods, counted by name."""
    calls: Counter[str] = Counter()
    for name in PROVIDER_CALLS:
        real = getattr(MockProvider, name)

        def counted(self: Any, *args: Any, _real: Any = real, _name: str = name,
                    **kwargs: Any) -> Any:
            calls[_name] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(MockProvider, name, counted)
    return calls


@contextmanager
def serving(db: MephistoDB, **kwargs: Any) -> Iterator[ReviewServer]:
    server = ReviewServer(create_app(db, TOKEN, **kwargs)).start()
    try:
        yield server
    finally:
        server.stop()


def records(db: MephistoDB, kind: str) -> dict[str, Any]:
    return db.find_provider_records("mock", kind)
