"""Prometheus metrics of live runs, labelled by task run.

One registry per operator process (`REGISTRY`), exposed by the task server at
`/metrics`. Gauges of units by status and active agents are computed when scraped
(from the live runs' in-memory counts), so the hot paths only bump counters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

REQUEST_SECONDS = Histogram(
    "mephisto_request_seconds",
    "Time to answer a worker request, by endpoint",
    ["task_run_id", "endpoint"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
SUBMIT_COMMIT_SECONDS = Histogram(
    "mephisto_submit_commit_seconds",
    "Time from a submit's arrival to its commit",
    ["task_run_id"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
REQUEST_ERRORS = Counter(
    "mephisto_request_errors_total",
    "Worker requests answered with an error, by endpoint and HTTP status",
    ["task_run_id", "endpoint", "status"],
    registry=REGISTRY,
)
SUBMIT_ERRORS = Counter(
    "mephisto_submit_errors_total",
    "Submits that failed to commit",
    ["task_run_id"],
    registry=REGISTRY,
)
AGENTS_STARTED = Counter(
    "mephisto_agents_started_total",
    "Agents created (a worker took a unit)",
    ["task_run_id"],
    registry=REGISTRY,
)


def _forget_run(task_run_id: str) -> None:
    """Drop the series a previous run with this id left in this process (a run served
    again, or another database's run with the same id, as in tests): a run's counts
    start when it goes live."""
    for metric in (REQUEST_SECONDS, SUBMIT_COMMIT_SECONDS, REQUEST_ERRORS, SUBMIT_ERRORS,
                   AGENTS_STARTED):
        with metric._lock:
            stale = [key for key in metric._metrics if key[0] == task_run_id]
        for key in stale:
            try:
                metric.remove(*key)
            except KeyError:  # pragma: no cover - removed concurrently
                pass


class RunMetrics:
    """The metrics of one task run (bound labels)."""

    def __init__(self, task_run_id: str) -> None:
        self.task_run_id = task_run_id
        _forget_run(task_run_id)
        self._commit = SUBMIT_COMMIT_SECONDS.labels(task_run_id)
        self._submit_errors = SUBMIT_ERRORS.labels(task_run_id)
        self._agents = AGENTS_STARTED.labels(task_run_id)
        self._latency: dict[str, Any] = {}  # endpoint -> its bound histogram

    def agent_started(self) -> None:
        self._agents.inc()

    def submit_committed(self, seconds: float) -> None:
        self._commit.observe(seconds)

    def submit_failed(self) -> None:
        self._submit_errors.inc()

    def request(self, endpoint: str, seconds: float, status: int) -> None:
        histogram = self._latency.get(endpoint)
        if histogram is None:
            histogram = self._latency[endpoint] = REQUEST_SECONDS.labels(self.task_run_id, endpoint)
        histogram.observe(seconds)
        if status >= 400:
            REQUEST_ERRORS.labels(self.task_run_id, endpoint, str(status)).inc()


class _LiveRunCollector:
    """Units by status and active agents, read from the live runs when scraped."""

    def __init__(self) -> None:
        self.sources: dict[str, Callable[[], tuple[dict[str, int], int]]] = {}

    def collect(self) -> Iterable[Any]:
        units = GaugeMetricFamily(
            "mephisto_units", "Units of a live task run by status", labels=["task_run_id", "status"]
        )
        agents = GaugeMetricFamily(
            "mephisto_active_agents", "Agents working on a unit now", labels=["task_run_id"]
        )
        for task_run_id, source in list(self.sources.items()):
            counts, active = source()
            for status, n in counts.items():
                units.add_metric([task_run_id, status], n)
            agents.add_metric([task_run_id], active)
        yield units
        yield agents


LIVE_RUNS = _LiveRunCollector()
REGISTRY.register(LIVE_RUNS)  # type: ignore[arg-type]
