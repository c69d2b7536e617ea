"""benchmarks/bench_live.py still runs: a tiny level (2 agents, 3 calls each) through
the real child operator and simulated workers. Behaviour only; the figures are the
script's job (`python benchmarks/bench_live.py`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "bench_live.py"


def test_bench_live_runs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "bench_live.json"
    result = subprocess.run(
        [sys.executable, str(BENCH), "--agents", "2", "--calls", "3", "--think-ms", "1",
         "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (row,) = json.loads(out.read_text())
    assert (row["agents"], row["calls"], row["failed_agents"]) == (2, 6, 0), row
    assert 0 < row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]
    assert row["operator_threads"] >= 2  # one runner thread per live agent, at least
    assert "p99 ms" in result.stdout
