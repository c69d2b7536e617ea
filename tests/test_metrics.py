"""`GET /metrics` of a live run, scraped while simulated workers work on it.

The registry is process-global (shared by every run of the test session) and each test
has a fresh database, so run ids repeat across tests: every figure is read with this
run's `task_run_id` label, and counters and histograms are compared as deltas from a
scrape taken before the first request. Gauges (units, active agents) are computed from
the live run when scraped, so they are read as they are.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mephisto.testing.worker import SimulatedWorker, SimulatedWorkerError, run_simulated_workers

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def _scrape(url: str, token: str) -> Samples:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession() as session, \
            session.get(url + "metrics", headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float:
    """The sample with exactly these labels (0.0 when absent: a counter not yet bumped)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def _delta(now: Samples, before: Samples, name: str, **labels: str) -> float:
    return _value(now, name, **labels) - _value(before, name, **labels)


def _units(samples: Samples, run_id: str, status: str) -> float:
    key = ("mephisto_units", frozenset({("task_run_id", run_id), ("status", status)}))
    assert key in samples, f"no mephisto_units sample for run {run_id}, status {status}"
    return samples[key]


def _answer(worker: SimulatedWorker) -> dict[str, Any]:
    return {"answer": worker.worker_id}


async def test_metrics_follow_a_live_run(launch_static_run: Any) -> None:
    run = launch_static_run([{"text": f"sentence {i}"} for i in range(10)])
    rid = run.task_run_id
    hist = "mephisto_request_seconds_count"

    before = await _scrape(run.url, run.live.metrics_token)
    assert _units(before, rid, "completed") == 0
    assert _units(before, rid, "launched") == 10
    assert _value(before, "mephisto_active_agents", task_run_id=rid) == 0
    errors_404 = {"task_run_id": rid, "endpoint": "submit_task", "status": "404"}

    # Three units completed by three workers.
    stats = await run_simulated_workers(
        run.url, 3, units_per_worker=1, answer_fn=_answer, worker_prefix="first"
    )
    assert stats.errors == [] and stats.units_completed == 3
    after_three = await _scrape(run.url, run.live.metrics_token)
    assert _units(after_three, rid, "completed") == 3
    assert _value(after_three, "mephisto_active_agents", task_run_id=rid) == 0
    assert _delta(after_three, before, hist, task_run_id=rid, endpoint="request_agent") == 3
    assert _delta(after_three, before, hist, task_run_id=rid, endpoint="submit_task") == 3
    assert _delta(after_three, before, hist, task_run_id=rid, endpoint="task_page") == 3
    assert _delta(after_three, before, "mephisto_submit_commit_seconds_count", task_run_id=rid) == 3
    assert _delta(after_three, before, "mephisto_agents_started_total", task_run_id=rid) == 3

    async with SimulatedWorker(run.url, "idle") as idle, SimulatedWorker(run.url, "bad") as bad:
        # A worker that takes a unit and does not submit: one active agent, one unit
        # assigned.
        taken = await idle.request_agent()
        assert taken["agent_id"]
        holding = await _scrape(run.url, run.live.metrics_token)
        assert _value(holding, "mephisto_active_agents", task_run_id=rid) == 1
        assert _units(holding, rid, "assigned") == 1
        assert _units(holding, rid, "completed") == 3

        # A submit for an agent that does not exist: 404, counted as an error.
        bad.agent_id = "no-such-agent"
        with pytest.raises(SimulatedWorkerError) as unknown:
            await bad.submit({"answer": "x"})
        assert unknown.value.status == 404
        after_bad = await _scrape(run.url, run.live.metrics_token)
        assert _delta(after_bad, holding, "mephisto_request_errors_total", **errors_404) == 1
        assert _delta(after_bad, before, "mephisto_request_errors_total", **errors_404) == 1
        # It was answered (so timed) but committed nothing.
        assert _delta(after_bad, before, hist, task_run_id=rid, endpoint="submit_task") == 4
        assert _delta(after_bad, before, "mephisto_submit_commit_seconds_count", task_run_id=rid) == 3
        assert _units(after_bad, rid, "completed") == 3

        # Four more units by other workers while `idle` still holds its own.
        stats = await run_simulated_workers(
            run.url, 4, units_per_worker=1, answer_fn=_answer, worker_prefix="second"
        )
        assert stats.errors == [] and stats.units_completed == 4
        later = await _scrape(run.url, run.live.metrics_token)
        assert _units(later, rid, "completed") == 7
        assert _value(later, "mephisto_active_agents", task_run_id=rid) == 1
        assert _delta(later, before, "mephisto_submit_commit_seconds_count", task_run_id=rid) == 7

        # The idle worker submits at last.
        await idle.submit({"answer": "late but fine"})
        done = await _scrape(run.url, run.live.metrics_token)
        assert _units(done, rid, "completed") == 8
        assert _value(done, "mephisto_active_agents", task_run_id=rid) == 0

    assert _delta(done, before, hist, task_run_id=rid, endpoint="request_agent") == 8
    assert _delta(done, before, hist, task_run_id=rid, endpoint="submit_task") == 9  # 8 + the 404
    assert _delta(done, before, "mephisto_submit_commit_seconds_count", task_run_id=rid) == 8
    assert _delta(done, before, "mephisto_request_seconds_bucket", task_run_id=rid,
                  endpoint="submit_task", le="+Inf") == 9
    assert run.unit_statuses()["completed"] == 8
