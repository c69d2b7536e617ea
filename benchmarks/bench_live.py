"""Live benchmark: remote-procedure round trips (page -> runner -> page) per second and
their latency, at 10, 100 and 1,000 concurrent live agents.

The operator (local architect, mock provider, `remote_procedure` blueprint with one
trivial function, SQLite) runs in a child process, as in bench_load.py; this process is
the load generator. Every simulated worker requests an agent (so the run starts its
`run_unit` thread), connects its websocket and makes one warm-up call; once all are
connected they start together and each makes K calls back to back (send
`mephisto_bound_live_update {request_id, target, args}`, wait for the
`client_bound_live_update` that `handles` it), then submits. A round trip is timed
from just before the send to the arrival of its answer; the wall time is that of the
calls phase (all agents connected, first call sent -> last answer). Both processes
share this machine's cores.

    python benchmarks/bench_live.py                          # agents = 10, 100, 1000
    python benchmarks/bench_live.py --agents 100 --calls 50  # one level, K calls each
    python benchmarks/bench_live.py --think-ms 100           # each agent pauses between calls

Back to back (the default) measures the ceiling: with N agents always waiting for an
answer, latency is about N / throughput (Little's law). `--think-ms T` makes each agent
wait T ms after each answer (after a random start within T), so the server sees about
N / T calls per second and the latency is that of a call, not of a queue.

Prints a table and writes every result to a JSON file (--out).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# this folder: the load benchmark's helpers
from bench_load import cpu_seconds, percentile, proc_status_mb

_CHILD = """
import json, sys, time
from mephisto.abstractions.blueprints.remote_procedure import SharedRemoteProcedureTaskState
from mephisto.db import MephistoDB
from mephisto.operations.operator import Operator
from mephisto.testing.fixtures import static_run_config

db_url, bundle, units = sys.argv[1], sys.argv[2], int(sys.argv[3])
operator = Operator(MephistoDB(db_url))
config = static_run_config(bundle, blueprint_type="remote_procedure",
                           task_name=f"bench-live-{time.time()}", no_submission_patience=600)
state = SharedRemoteProcedureTaskState(
    static_task_data=[{"n": i} for i in range(units)],
    function_registry={"echo": lambda request_id, args, agent: args})
run_id = operator.launch_task_run(config, state)
print(json.dumps({"url": operator.get_running_task_runs()[run_id].url}), flush=True)
operator.wait_for_runs_then_shutdown(skip_input=True)
print(json.dumps({"done": True}), flush=True)
"""

BUNDLE = "document.getElementById('app').textContent = 'bench';\n"


def _proc_threads(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return -1


async def drive(url: str, agents: int, calls: int, operator_pid: int,
                think: float = 0.0) -> dict[str, Any]:
    """The load: `agents` workers, `calls` timed calls each. Returns latencies (s),
    the calls phase's wall time and the errors."""
    import aiohttp

    from mephisto.testing.http_client import HTTPClient
    from mephisto.testing.worker import SimulatedWorker

    latencies: list[float] = []
    errors: list[str] = []
    connected = 0
    all_connected = asyncio.Event()
    finished: list[float] = []
    phase: dict[str, float] = {}

    async def call(worker: SimulatedWorker, n: int) -> float:
        request_id = f"{worker.worker_id}:{n}"
        since = len(worker.received)
        started = time.perf_counter()
        await worker.send_live_update({"request_id": request_id, "target": "echo",
                                       "args": json.dumps({"n": n})})
        packet = await worker.wait_for_packet(
            "client_bound_live_update", since=since, timeout=60,
            predicate=lambda p: p["data"].get("handles") == request_id)
        took = time.perf_counter() - started
        if "response" not in packet["data"]:
            raise RuntimeError(f"error answer: {packet['data']}")
        return took

    async def work(index: int, session: aiohttp.ClientSession, http: HTTPClient) -> None:
        nonlocal connected
        worker = SimulatedWorker(url, f"live-{index}", session=session, http=http)
        try:
            await worker.request_agent()
            if worker.agent_id is None:
                raise RuntimeError(f"no agent: {worker.failure_reason}")
            await worker.connect()
            await call(worker, -1)  # warm-up, not counted
            connected += 1
            if connected == agents:
                phase["start"] = time.perf_counter()
                all_connected.set()
            await all_connected.wait()
            mine = []
            if think:
                await asyncio.sleep(random.random() * think)
            for n in range(calls):
                mine.append(await call(worker, n))
                if think:
                    await asyncio.sleep(think)
            finished.append(time.perf_counter())
            latencies.extend(mine)
            await worker.submit({"done": True})
        except Exception as exc:  # noqa: BLE001 - counted and shown; the others go on
            errors.append(f"{worker.worker_id}: {exc!r}")
            if not all_connected.is_set():
                connected += 1
                if connected == agents:
                    phase["start"] = time.perf_counter()
                    all_connected.set()
        finally:
            await worker.close()

    http = HTTPClient(url)
    connector = aiohttp.TCPConnector(limit=0)
    cpu: dict[str, float] = {}

    async def watch() -> None:  # operator's CPU and RSS over the calls phase
        await all_connected.wait()
        cpu["operator_start"] = cpu_seconds(operator_pid)
        cpu["own_start"] = time.process_time()
        cpu["rss_mb"] = proc_status_mb(operator_pid, "VmRSS")
        cpu["threads"] = _proc_threads(operator_pid)

    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            watcher = asyncio.get_running_loop().create_task(watch())
            await asyncio.gather(*(work(i, session, http) for i in range(agents)))
            await watcher
    finally:
        await http.close()
    end = max(finished) if finished else time.perf_counter()
    return {"latencies": latencies, "errors": errors,
            "wall": end - phase.get("start", end),
            "operator_cpu": cpu_seconds(operator_pid) - cpu.get("operator_start", 0.0),
            "own_cpu": time.process_time() - cpu.get("own_start", 0.0),
            "rss_mb": cpu.get("rss_mb", float("nan")),
            "threads": cpu.get("threads", -1)}


def run_level(agents: int, calls: int, tmp: Path, think_ms: float = 0.0) -> dict[str, Any]:
    bundle = tmp / "bundle.js"
    bundle.write_text(BUNDLE)
    db_url = f"sqlite:///{tmp / f'bench-live-{agents}.db'}"
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, db_url, str(bundle), str(agents)],
        stdout=subprocess.PIPE, text=True,
        env={**os.environ, "MEPHISTO_HOME": str(tmp / "home"),
             "MEPHISTO_DATA_DIR": str(tmp / "data")},
    )
    assert child.stdout is not None
    ready = json.loads(child.stdout.readline())
    try:
        import uvloop

        result = uvloop.run(drive(ready["url"], agents, calls, child.pid, think_ms / 1000))
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        result = asyncio.run(drive(ready["url"], agents, calls, child.pid, think_ms / 1000))
    peak = proc_status_mb(child.pid, "VmHWM")
    child.stdout.readline()  # {"done": true} once every unit was submitted
    child.wait(120)
    lat = result["latencies"]
    wall = result["wall"]
    return {
        "agents": agents,
        "calls_per_agent": calls,
        "think_ms": think_ms,
        "calls": len(lat),
        "wall_seconds": round(wall, 3),
        "calls_per_second": round(len(lat) / wall, 1) if wall else None,
        "p50_ms": round(percentile(lat, 50) * 1000, 2),
        "p90_ms": round(percentile(lat, 90) * 1000, 2),
        "p99_ms": round(percentile(lat, 99) * 1000, 2),
        "max_ms": round(max(lat) * 1000, 2) if lat else None,
        "operator_rss_mb": round(result["rss_mb"], 1),
        "operator_peak_rss_mb": round(peak, 1),
        "operator_threads": result["threads"],
        # share of one core each side used during the calls phase
        "operator_cpu_share": round(result["operator_cpu"] / wall, 2) if wall else None,
        "load_generator_cpu_share": round(result["own_cpu"] / wall, 2) if wall else None,
        "failed_agents": len(result["errors"]),
        "errors": sorted({e.split(": ", 1)[-1][:200] for e in result["errors"]})[:5],
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    head = (f"{'agents':>7}{'calls':>8}{'wall s':>8}{'calls/s':>9}{'p50 ms':>8}{'p90 ms':>8}"
            f"{'p99 ms':>8}{'max ms':>8}{'RSS MB':>8}{'threads':>8}{'op CPU':>7}{'gen CPU':>8}")
    print(head)
    for r in rows:
        print(f"{r['agents']:>7}{r['calls']:>8}{r['wall_seconds']:>8.2f}{r['calls_per_second']:>9.0f}"
              f"{r['p50_ms']:>8.2f}{r['p90_ms']:>8.2f}{r['p99_ms']:>8.2f}{r['max_ms']:>8.1f}"
              f"{r['operator_rss_mb']:>8.0f}{r['operator_threads']:>8}"
              f"{r['operator_cpu_share']:>7.2f}{r['load_generator_cpu_share']:>8.2f}")
        for error in r["errors"]:
            print(f"  {r['failed_agents']} failed agents, e.g. {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, nargs="*", default=[10, 100, 1000])
    parser.add_argument("--calls", type=int, default=None,
                        help="calls per agent (default: max(20, 20000 // agents))")
    parser.add_argument("--think-ms", type=float, default=0.0,
                        help="pause of each agent after each answer (default: none)")
    parser.add_argument("--out", default="benchmarks/results/bench_live.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for agents in args.agents:
            calls = args.calls or max(20, 20000 // agents)
            level_dir = Path(tmp) / str(agents)
            level_dir.mkdir()
            rows.append(run_level(agents, calls, level_dir, args.think_ms))
            print(f"{agents} agents done", file=sys.stderr, flush=True)
    print("back to back" if not args.think_ms else f"{args.think_ms:g} ms between calls")
    print_table(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))
    print(f"\nresults written to {out}")


if __name__ == "__main__":
    main()
