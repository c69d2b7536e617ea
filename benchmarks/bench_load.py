"""Load benchmark: a real task run driven by simulated workers over real sockets.

The operator (local architect, mock provider, static task, SQLite by default) runs in
a child process; this process is the load generator: N concurrent simulated workers,
each doing the full worker sequence (task page, task config, request agent, submit)
until no work is left. Both share this machine's cores, as in the targets.

    python benchmarks/bench_load.py --units 2000 --workers 50
    python benchmarks/bench_load.py --matrix            # M = 100, 2,000, 100,000 x N = 10, 50, 500
    python benchmarks/bench_load.py --postgres URL ...  # PostgreSQL instead of SQLite
    python benchmarks/bench_load.py --browser ...       # browser-like workers
    python benchmarks/bench_load.py --mode both ...     # each run in both modes
    python benchmarks/bench_load.py --browser --units 200 --workers 1   # idle server
    python benchmarks/bench_load.py --routers 1 ...     # workers go through a router
    python benchmarks/bench_load.py --routers 2 ...     # two routers behind a TCP balancer
    python benchmarks/bench_load.py --operator-from ../old --repeat 3 ...   # A/B, see below
    python benchmarks/bench_load.py --returning ...     # workers known from an earlier task

Modes: `keep-alive` (default): each worker keeps its identity and connection from unit
to unit and loads only the page itself. `browser`: every unit is a new browser (a new
worker on a new connection) that loads the page, then each script and stylesheet it
references (`/wrap_crowd_source.js`, `/_mephisto/static-task.js`, ...), then the config,
agent and submit. Both report the operator process's CPU time per unit.

With `--routers K`, workers reach the run through K `mephisto router` processes (the
operator dials each with the `remote` architect); with K > 1 a round-robin TCP proxy in
this process stands in for the load balancer in front of them. The routers' CPU time
per unit is printed beside the operator's.

To compare two versions of the server under the same load, `--operator-from DIR` runs
the operator from another checkout (`git worktree add ../old <commit>`) while this
checkout's load generator drives it; `--repeat R` runs each case R times, and with
`--operator-from`, alternates: this checkout, then DIR, R times over (a machine's speed
drifts over minutes, so alternating pairs compare fairly).

Prints a table per run, a summary (one line per run, with its mode) and writes every
result to a JSON file (--out).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

_CHILD = """
import json, sys, time
t0 = float(sys.argv[4])
from mephisto.abstractions.blueprints.static_task import SharedStaticTaskState
from mephisto.db import MephistoDB
from mephisto.operations.operator import Operator
from mephisto.testing.fixtures import static_run_config

db_url, html, units = sys.argv[1], sys.argv[2], int(sys.argv[3])
operator = Operator(MephistoDB(db_url))
data = [{"text": f"sentence number {i}"} for i in range(units)]
config = static_run_config(html, task_name=f"bench-{time.time()}", no_submission_patience=600)
if sys.argv[5] != "{}":
    config["architect"] = json.loads(sys.argv[5])
run_id = operator.launch_task_run(config, SharedStaticTaskState(static_task_data=data))
url = operator.get_running_task_runs()[run_id].url
print(json.dumps({"url": url, "run_id": run_id, "launch_seconds": time.time() - t0}), flush=True)
operator.wait_for_runs_then_shutdown(skip_input=True)
print(json.dumps({"done": True}), flush=True)
"""

HTML = '<p>${text}</p><input name="answer"><button type="submit">Submit</button>'


def proc_status_mb(pid: int, field: str) -> float:
    """A memory figure of /proc/<pid>/status (VmHWM: peak RSS, VmRSS: now) in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def worker_names(prefix: str, units: int, workers: int, mode: str) -> list[str]:
    """The names the load generator's workers will have (`run_simulated_workers`): one
    per slot in keep-alive mode, one per unit (and the slot's last, told "no more work")
    in browser mode."""
    if mode != "browser":
        return [f"{prefix}-{i}" for i in range(workers)]
    per_slot = units // workers + 2
    return [f"{prefix}-{i}-{n}" for i in range(workers) for n in range(per_slot)]


def store_workers(db_url: str, names: list[str]) -> None:
    """Put these workers in the database before the run, as if from an earlier task."""
    from mephisto.db import MephistoDB, batch

    db = MephistoDB(db_url)
    try:
        batch.find_or_new_workers(db, names, "mock")
    finally:
        db.shutdown()


def run_one(
    units: int, workers: int, db_url: str | None, tmp: Path, mode: str = "keep-alive",
    routers: int = 0, operator_from: Path | None = None, returning: bool = False,
) -> dict[str, Any]:
    from contextlib import ExitStack

    from mephisto.testing.router import RouterProcess
    from mephisto.testing.tcp_proxy import TcpProxy
    from mephisto.testing.worker import run_simulated_workers_sync

    html_dir = tmp / "task"  # alone in its folder: a static task serves its folder
    html_dir.mkdir(exist_ok=True)
    html = html_dir / "task.html"
    html.write_text(HTML)
    # a new database file per run: a repeated run would otherwise find its workers
    # stored by the one before (returning workers take another path)
    db_file = tmp / f"bench-{units}-{workers}-{mode}-{routers}-{time.time_ns()}.db"
    url_db = db_url or f"sqlite:///{db_file}"
    env = {**os.environ, "MEPHISTO_HOME": str(tmp / "home")}
    # workers new to the database (as on a fresh SQLite file, also on a PostgreSQL
    # database that earlier runs filled), or stored before the run with --returning
    prefix = f"bench-{time.time_ns()}"
    if returning:
        store_workers(url_db, worker_names(prefix, units, workers, mode))
    if operator_from is not None:  # its `mephisto` package first on the operator's path
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(operator_from), os.environ.get("PYTHONPATH")) if p)
    with ExitStack() as stack:
        architect: dict[str, Any] = {}
        started_routers: list[RouterProcess] = []
        if routers:
            from mephisto.router.auth import new_secret

            secret = new_secret()  # one token for all the routers
            for i in range(routers):
                router = RouterProcess(tmp / f"router-{i}", secret).start()
                stack.callback(router.kill)
                started_routers.append(router)
            public = started_routers[0].url
            if routers > 1:
                proxy = stack.enter_context(TcpProxy(
                    [("127.0.0.1", r.port) for r in started_routers]))
                public = proxy.url
            architect = {"_architect_type": "remote", "router_url": public,
                         "operator_urls": ",".join(r.url for r in started_routers)}
            env["MEPHISTO_ROUTER_TOKEN"] = started_routers[0].token()
        started = time.time()
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, url_db, str(html), str(units), str(started),
             json.dumps(architect)],
            stdout=subprocess.PIPE, text=True, env=env,
            # `python -c` looks in its working directory first
            cwd=operator_from,
        )
        assert child.stdout is not None
        ready = json.loads(child.stdout.readline())
        operator_cpu = cpu_seconds(child.pid)
        router_pids = [r.proc.pid for r in started_routers if r.proc is not None]
        router_cpu = sum(cpu_seconds(pid) for pid in router_pids)
        own_cpu = time.process_time()
        t = time.perf_counter()
        stats = run_simulated_workers_sync(ready["url"], workers,
                                           browser_like=mode == "browser",
                                           worker_prefix=prefix)
        wall = time.perf_counter() - t
        own_cpu = time.process_time() - own_cpu
        operator_cpu = cpu_seconds(child.pid) - operator_cpu
        router_cpu = sum(cpu_seconds(pid) for pid in router_pids) - router_cpu
        rss = proc_status_mb(child.pid, "VmHWM")
        child.stdout.readline()  # {"done": true}
        child.wait(120)

    from mephisto.db import MephistoDB
    from mephisto.tools.data_browser import DataBrowser

    db = MephistoDB(url_db)
    t = time.perf_counter()
    results = DataBrowser(db).load_results(task_run_id=ready["run_id"])
    load_seconds = time.perf_counter() - t
    db.shutdown()

    row: dict[str, Any] = {
        "mode": mode + (f" via {routers} router{'s' if routers > 1 else ''}" if routers else "")
        + (" returning" if returning else "")
        + (f" [{operator_from.name}]" if operator_from is not None else ""),
        "returning_workers": returning,
        "operator_from": str(operator_from) if operator_from is not None else None,
        "routers": routers,
        "units": units,
        "workers": workers,
        "database": "postgresql" if db_url else "sqlite",
        "launch_seconds": round(ready["launch_seconds"], 3),
        "wall_seconds": round(wall, 3),
        "units_completed": stats.units_completed,
        "results_loaded": len(results),
        "units_per_second": round(stats.units_completed / wall, 1) if wall else 0,
        "failed_requests": len(stats.errors),
        "peak_rss_mb": round(rss, 1),
        # share of one core each side used while the workers ran
        "operator_cpu_share": round(operator_cpu / wall, 2) if wall else None,
        "load_generator_cpu_share": round(own_cpu / wall, 2) if wall else None,
        # the operator process's CPU time (user + system) per completed unit
        "operator_cpu_ms_per_unit": (round(operator_cpu * 1000 / stats.units_completed, 2)
                                     if stats.units_completed else None),
        # the routers' CPU time (all of them together) per completed unit
        "router_cpu_ms_per_unit": (round(router_cpu * 1000 / stats.units_completed, 2)
                                   if routers and stats.units_completed else None),
        "load_results_seconds": round(load_seconds, 3),
        "latency_ms": {},
        "errors": sorted({e.split(": ", 1)[-1][:200] for e in stats.errors})[:5],
    }
    series = {**{k: v for k, v in stats.latencies.items()}, "unit": stats.unit_latencies}
    for name, values in series.items():
        row["latency_ms"][name] = {
            "p50": round(percentile(values, 50) * 1000, 2),
            "p95": round(percentile(values, 95) * 1000, 2),
            "p99": round(percentile(values, 99) * 1000, 2),
            "mean": round(statistics.fmean(values) * 1000, 2) if values else None,
        }
    return row


def print_row(row: dict[str, Any]) -> None:
    print(
        f"\n[{row.get('mode', 'keep-alive')}] M={row['units']:,} N={row['workers']} "
        f"({row['database']}): "
        f"launch {row['launch_seconds']:.2f} s, wall {row['wall_seconds']:.2f} s, "
        f"{row['units_per_second']:,.0f} units/s, {row['units_completed']:,} completed, "
        f"{row['failed_requests']} failed requests, operator peak RSS {row['peak_rss_mb']:.0f} MB, "
        f"load results {row['load_results_seconds']:.2f} s"
    )
    print(
        f"  CPU while running (cores): operator {row['operator_cpu_share']}, "
        f"load generator {row['load_generator_cpu_share']}; operator CPU per unit "
        f"{row.get('operator_cpu_ms_per_unit')} ms"
        + (f", routers' CPU per unit {row['router_cpu_ms_per_unit']} ms"
           if row.get("router_cpu_ms_per_unit") is not None else "")
    )
    for error in row["errors"]:
        print(f"  error: {error}")
    width = max(16, *(len(name) + 2 for name in row["latency_ms"]))
    print(f"  {'latency (ms)':<{width}}{'p50':>9}{'p95':>9}{'p99':>9}")
    for name, lat in row["latency_ms"].items():
        print(f"  {name:<{width}}{lat['p50']:>9.2f}{lat['p95']:>9.2f}{lat['p99']:>9.2f}")


def summary_table(rows: list[dict[str, Any]]) -> str:
    """One line per run: mode, size, throughput, operator CPU per unit, unit latency."""
    width = max([23] + [len(row.get("mode", "")) + 2 for row in rows])
    header = (f"{'mode':<{width}}{'M':>8}{'N':>5}{'units/s':>9}{'op CPU ms/unit':>16}"
              f"{'unit p50 ms':>13}{'unit p99 ms':>13}{'failed':>8}")
    lines = [header]
    for row in rows:
        unit = row["latency_ms"].get("unit", {})
        cpu = row.get("operator_cpu_ms_per_unit")
        lines.append(
            f"{row.get('mode', 'keep-alive'):<{width}}{row['units']:>8,}{row['workers']:>5}"
            f"{row['units_per_second']:>9,.0f}{'-' if cpu is None else f'{cpu:.2f}':>16}"
            f"{unit.get('p50', float('nan')):>13.2f}{unit.get('p99', float('nan')):>13.2f}"
            f"{row['failed_requests']:>8}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=50)
    parser.add_argument("--matrix", action="store_true", help="run the standard matrix")
    parser.add_argument("--postgres", metavar="URL", help="use this PostgreSQL database")
    parser.add_argument("--browser", action="store_true",
                        help="browser-like workers (same as --mode browser)")
    parser.add_argument("--mode", choices=("keep-alive", "browser", "both"),
                        help="worker mode (default keep-alive; `both`: each run in each mode)")
    parser.add_argument("--routers", type=int, default=0,
                        help="serve through this many `mephisto router` processes (2+: "
                             "behind a round-robin TCP proxy)")
    parser.add_argument("--operator-from", metavar="DIR", type=Path,
                        help="run the operator from this other checkout (A/B comparisons)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each case this many times (alternating with "
                             "--operator-from's checkout)")
    parser.add_argument("--returning", action="store_true",
                        help="the workers are in the database before the run (as after "
                             "an earlier task), not new to it")
    parser.add_argument("--out", default="benchmarks/results/bench_load.json")
    args = parser.parse_args()
    other = args.operator_from
    if other is not None:
        other = other.resolve()
        if not (other / "mephisto" / "__init__.py").is_file():
            parser.error(f"--operator-from {other}: no mephisto package there "
                         "(give the root of a checkout)")
    if other is not None and args.postgres:
        parser.error("--operator-from runs on SQLite only: both versions would share the "
                     "PostgreSQL database, whose schema only the newer one may know")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    sides: list[Path | None] = [None] if other is None else [None, other]
    mode = args.mode or ("browser" if args.browser else "keep-alive")
    if args.browser and mode != "browser":
        parser.error("--browser and --mode keep-alive/both disagree")
    modes = ("keep-alive", "browser") if mode == "both" else (mode,)

    combos = (
        [(m, n) for m in (100, 2_000, 100_000) for n in (10, 50, 500)]
        if args.matrix
        else [(args.units, args.workers)]
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for units, workers in combos:
            for run_mode in modes:
                for _ in range(args.repeat):
                    for side in sides:
                        row = run_one(units, workers, args.postgres, Path(tmp), run_mode,
                                      args.routers, side, args.returning)
                        print_row(row)
                        rows.append(row)
    print("\n" + summary_table(rows))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    print(f"\nresults written to {out}")


if __name__ == "__main__":
    main()
