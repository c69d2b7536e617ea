"""`mephisto bench` through click's CliRunner, with tiny levels."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from mephisto.cli import cli
from mephisto.db import MephistoDB

ROW = re.compile(r"│\s*(\d+)\s*│\s*(\d+)\s*│\s*([\d.]+)\s*│\s*([\d.]+)\s*│\s*([\d.]+)\s*│"
                 r"\s*([\d.]+)\s*│\s*(\d+)\s*│\s*([\w ]+?)\s*│")


def _rows(output: str) -> list[tuple[str, ...]]:
    return [m.groups() for m in ROW.finditer(output)]


def test_bench_recommends_the_highest_level_under_the_threshold() -> None:
    result = CliRunner().invoke(
        cli, ["bench", "--levels", "2,4", "--units-per-level", "10", "--threshold-ms", "100000"]
    )
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert [(r[0], r[1], r[6], r[7]) for r in rows] == [("2", "10", "0", "ok"), ("4", "10", "0", "ok")]
    for _workers, _units, rate, p50, p95, p99, _errors, _verdict in rows:
        assert float(rate) > 0
        assert 0 < float(p50) <= float(p95) <= float(p99)
    p95_at_4 = rows[-1][4]
    assert f"max_num_concurrent_units ≈ 4 (p95 {p95_at_4} ms at 4 workers)" in result.output


def test_bench_stops_at_the_first_level_over_the_threshold(tmp_path: Path) -> None:
    html = tmp_path / "task.html"
    html.write_text('<p>${text}</p><input name="answer"><button type="submit">Send</button>')
    database = f"sqlite:///{tmp_path / 'bench.db'}"
    result = CliRunner().invoke(cli, [
        "bench", "--levels", "4,2", "--units-per-level", "10", "--threshold-ms", "0.001",
        "--task-source", str(html), "--database", database,
    ])
    assert result.exit_code == 0, result.output
    rows = _rows(result.output)
    assert [(r[0], r[1], r[7]) for r in rows] == [("2", "10", "over limit")]  # levels sorted
    assert "No level met the threshold" in result.output
    assert "max_num_concurrent_units" not in result.output
    # The given database holds exactly the one run, all of it completed.
    db = MephistoDB(database)
    try:
        [run] = db.find_task_runs()
        assert db.get_unit_status_counts(run.db_id) == {"completed": 10}
    finally:
        db.shutdown()


def test_bench_rejects_bad_levels() -> None:
    result = CliRunner().invoke(cli, ["bench", "--levels", "5,x"])
    assert result.exit_code == 2
    assert "not a comma list of numbers" in result.output


def test_bench_browser_makes_every_unit_a_new_worker(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'bench.db'}"
    result = CliRunner().invoke(cli, [
        "bench", "--levels", "2", "--units-per-level", "6", "--threshold-ms", "100000",
        "--database", database, "--browser",
    ])
    assert result.exit_code == 0, result.output
    assert "browser-like workers" in result.output
    rows = _rows(result.output)
    assert [(r[0], r[1], r[6], r[7]) for r in rows] == [("2", "6", "0", "ok")]
    assert "max_num_concurrent_units ≈ 2" in result.output
    # Two concurrent browsers at a time, but a new worker for each of the 6 units.
    db = MephistoDB(database)
    try:
        [run] = db.find_task_runs()
        assert db.get_unit_status_counts(run.db_id) == {"completed": 6}
        agents = db.find_agents(task_run_id=run.db_id)
        assert len(agents) == 6 and len({a.worker_id for a in agents}) == 6
        names = {db.get_worker(a.worker_id)["worker_name"] for a in agents}
        assert all(name.startswith(f"bench-{run.db_id}-") for name in names)
    finally:
        db.shutdown()
