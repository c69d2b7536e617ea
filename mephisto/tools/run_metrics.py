"""What `mephisto metrics` shows: the key figures of live runs, read from their servers'
`/metrics` (Prometheus text) with each run's bearer token.

Runs are found by the records their operators keep on disk
(`mephisto.operations.live_record`). A run without a record, whose operator is gone,
whose server does not answer or refuses the token, is *not live*: a `RunFigures` with
the reason, never an exception. Scraping uses the standard library's HTTP client (the
metrics need no dependency beyond the core ones).

Latency percentiles are estimated from the histograms' buckets as Prometheus's
`histogram_quantile` does (linear within a bucket). With two scrapes (`interval`) the
figures cover what happened between them: rates and latencies of the last seconds;
with one, everything since the run went live in this operator.
"""

from __future__ import annotations

import math
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mephisto.operations.live_record import (
    LiveRecord,
    find_live_records,
    read_live_record,
)

__all__ = ["RunFigures", "Scrape", "histogram_quantile", "run_figures", "scrape",
           "scrape_runs"]

Labels = frozenset[tuple[str, str]]
Samples = dict[tuple[str, Labels], float]

TIMEOUT = 5.0  # seconds to wait for a run's server


@dataclass
class Scrape:
    """One read of a run's metrics: `samples` of this run only, or why there are none."""

    task_run_id: str
    record: LiveRecord | None
    at: float = field(default_factory=time.time)
    samples: Samples | None = None
    problem: str | None = None


def _not_live(task_run_id: str, record: LiveRecord | None, why: str) -> Scrape:
    return Scrape(task_run_id, record, problem=why)


def scrape(task_run_id: str, record: LiveRecord | None = None,
           timeout: float = TIMEOUT) -> Scrape:
    """Read the run's metrics now (its record is looked up when not given)."""
    from prometheus_client.parser import text_string_to_metric_families

    task_run_id = str(task_run_id)
    if record is None:
        record = read_live_record(task_run_id)
    if record is None:
        return _not_live(task_run_id, None,
                         "not served by an operator on this machine (no live record)")
    if record.process_alive() is False:
        return _not_live(task_run_id, record,
                         f"its operator (process {record.pid}) is gone; the run can be "
                         "resumed (mephisto.task.resume_incomplete_run=true)")
    try:
        token = Path(record.metrics_token_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        return _not_live(task_run_id, record, f"cannot read its metrics token: {exc}")
    request = urllib.request.Request(record.metrics_url,
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            text = response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        why = ("its server refused the metrics token (another operator now serves that "
               "port?)" if exc.code == 401 else f"its server answered {exc.code} to /metrics")
        return _not_live(task_run_id, record, why)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return _not_live(task_run_id, record,
                         f"nothing answers at {record.metrics_url} ({reason})")
    samples: Samples = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.labels.get("task_run_id") == task_run_id:
                    samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    except ValueError as exc:
        return _not_live(task_run_id, record, f"its /metrics is not Prometheus text: {exc}")
    if not any(name == "mephisto_units" for name, _labels in samples):
        return _not_live(task_run_id, record, "its server no longer serves this run")
    return Scrape(task_run_id, record, samples=samples)


def scrape_runs(task_run_ids: Iterable[str] | None = None) -> list[Scrape]:
    """Scrape the named runs, or every run with a live record."""
    if task_run_ids is None:
        return [scrape(r.task_run_id, r) for r in find_live_records()]
    return [scrape(str(i)) for i in task_run_ids]


# -- figures ------------------------------------------------------------------------------


def _sum(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over the series whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= lab)


def _buckets(samples: Samples, name: str) -> dict[float, float]:
    """A histogram's cumulative buckets summed over its series: {upper bound: count}."""
    out: dict[float, float] = {}
    for (n, labels), value in samples.items():
        if n == f"{name}_bucket":
            le = float(dict(labels)["le"])
            out[le] = out.get(le, 0.0) + value
    return out


def _minus(now: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    return {le: n - before.get(le, 0.0) for le, n in now.items()}


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile (0..1) of observations in cumulative `buckets`, interpolated
    linearly within the bucket it falls in; None without observations. A quantile in
    the +Inf bucket is the highest finite bound (as Prometheus answers)."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower  # pragma: no cover - the +Inf bucket holds every observation


@dataclass
class RunFigures:
    """The key figures of one run (or why it is not live: `problem`)."""

    task_run_id: str
    task_name: str = ""
    url: str = ""
    problem: str | None = None
    units: dict[str, int] = field(default_factory=dict)
    active_agents: int = 0
    requests: int = 0
    request_errors: int = 0
    request_p50: float | None = None  # seconds
    request_p95: float | None = None
    submits: int = 0
    submit_errors: int = 0
    submit_p50: float | None = None
    submit_p95: float | None = None
    seconds: float = 0.0  # what the counts cover
    since_start: bool = True  # counts since the run went live, not over an interval

    @property
    def live(self) -> bool:
        return self.problem is None

    @property
    def submits_per_second(self) -> float:
        return self.submits / self.seconds if self.seconds > 0 else 0.0

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0


def run_figures(first: Scrape, second: Scrape | None = None) -> RunFigures:
    """The figures of a scrape, or of what happened between two scrapes of the same run
    (rates and latencies over the interval; units and agents as of the second)."""
    last = second if second is not None else first
    record = last.record or first.record
    out = RunFigures(first.task_run_id, record.task_name if record else "",
                     record.url if record else "")
    if last.samples is None or (second is not None and first.samples is None):
        out.problem = last.problem or first.problem
        return out
    now: Samples = last.samples
    before: Samples = first.samples if second is not None and first.samples else {}
    for (name, labels), value in now.items():
        if name == "mephisto_units":
            out.units[dict(labels)["status"]] = int(value)
    out.active_agents = int(_sum(now, "mephisto_active_agents"))

    def counted(name: str) -> int:
        return round(_sum(now, name) - _sum(before, name))

    out.requests = counted("mephisto_request_seconds_count")
    out.request_errors = counted("mephisto_request_errors_total")
    out.submits = counted("mephisto_submit_commit_seconds_count")
    out.submit_errors = counted("mephisto_submit_errors_total")
    requests = _minus(_buckets(now, "mephisto_request_seconds"),
                      _buckets(before, "mephisto_request_seconds"))
    submits = _minus(_buckets(now, "mephisto_submit_commit_seconds"),
                     _buckets(before, "mephisto_submit_commit_seconds"))
    out.request_p50 = histogram_quantile(0.5, requests)
    out.request_p95 = histogram_quantile(0.95, requests)
    out.submit_p50 = histogram_quantile(0.5, submits)
    out.submit_p95 = histogram_quantile(0.95, submits)
    if second is not None:
        out.seconds, out.since_start = max(second.at - first.at, 0.0), False
    elif record is not None:
        out.seconds = max(last.at - record.started_at, 0.0)
    return out
